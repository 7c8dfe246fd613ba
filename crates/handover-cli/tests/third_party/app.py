# The application the gunicorn and uvicorn tests serve: the same answer as a WSGI callable
# (`app:wsgi`, for gunicorn) and as an ASGI one (`app:asgi`, for uvicorn). The test writes a
# copy with VERSION filled in for each generation.
import os

VERSION = "@VERSION@"


def body():
    return f"{VERSION} pid={os.getpid()}\n".encode()


def wsgi(environ, start_response):
    data = body()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(data)))])
    return [data]


async def asgi(scope, receive, send):
    if scope["type"] != "http":
        return
    data = body()
    await send({
        "type": "http.response.start",
        "status": 200,
        "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(data)).encode())],
    })
    await send({"type": "http.response.body", "body": data})
