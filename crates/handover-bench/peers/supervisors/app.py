# The WSGI application of the supervisor matrix (handover-bench --supervisors), served by
# gunicorn's gthread workers directly and under circus. The bench writes a copy with
# @GREETING@ filled in for each version; workers import it when they start.
import os

GREETING = "@GREETING@"


def wsgi(environ, start_response):
    data = f"{GREETING} pid={os.getpid()}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(data)))])
    return [data]
