#!/usr/bin/env python3
# A worker for proxy mode (`handover run --proxy ...`): Python 3, stdlib only. It cannot take an
# inherited socket; it binds the port it is given (`--port N` or $PORT) on 127.0.0.1.
# The tests write a copy with VERSION and MODE filled in.
#
# MODE http: HTTP/1.1 keep-alive. GET / answers "VERSION pid=PID xff=... proto=... host=...";
#   POST echoes its body; GET /slow?ms=N answers after N ms; GET /unlisten closes the listening
#   socket and every open connection (the process stays: nothing can reach it any more); GET /drop closes its connection
#   after answering without saying so; GET /drop-next: the next request on this connection is
#   dropped unanswered; GET /drop-next-any: the next request the process reads, on whichever
#   connection, is dropped unanswered; `Upgrade: echo` answers 101, a banner line, then echoes
#   bytes.
# MODE tcpecho: sends a banner line, echoes bytes, and after the client's EOF sends "EOF <n>".
# MODE exit3: exits with status 3 at once.
import http.server
import os
import signal
import socket
import socketserver
import sys
import threading
import time

VERSION = "@VERSION@"
MODE = "@MODE@"


# Open HTTP connections, so that /unlisten can close them all.
OPEN = set()
OPEN_LOCK = threading.Lock()

# Armed by GET /drop-next-any: the next request on any connection is dropped.
DROP_ANY = False
DROP_ANY_LOCK = threading.Lock()


def log(msg):
    print(f"port-worker {VERSION} pid {os.getpid()}: {msg}", flush=True)


def port():
    args = sys.argv[1:]
    if "--port" in args:
        return int(args[args.index("--port") + 1])
    return int(os.environ["PORT"])


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self):
        super().setup()
        with OPEN_LOCK:
            OPEN.add(self.connection)

    def finish(self):
        with OPEN_LOCK:
            OPEN.discard(self.connection)
        super().finish()

    def log_message(self, *args):
        pass

    def reply(self, code, body):
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def dropped(self):
        # After GET /drop-next, the next request on the connection is read and the connection
        # closed without an answer (a keep-alive timeout racing a new request).
        global DROP_ANY
        if getattr(self, "drop_next", False):
            self.close_connection = True
            return True
        with DROP_ANY_LOCK:
            if DROP_ANY:
                DROP_ANY = False
                self.close_connection = True
                return True
        return False

    def do_GET(self):
        if self.dropped():
            return
        if self.path == "/drop-next":
            self.drop_next = True
            self.reply(200, b"armed\n")
            return
        if self.path == "/drop-next-any":
            global DROP_ANY
            # Armed before answering, so the client's next request cannot get there first.
            with DROP_ANY_LOCK:
                DROP_ANY = True
            self.reply(200, b"armed\n")
            return
        if self.headers.get("Upgrade", "").lower() == "echo":
            return self.echo()
        if self.path == "/unlisten":
            self.close_connection = True
            self.send_response(200)
            self.send_header("Connection", "close")
            self.send_header("Content-Length", "3")
            self.end_headers()
            self.wfile.write(b"ok\n")
            threading.Thread(target=unlisten).start()
            return
        if self.path == "/drop":
            # Answers as if the connection stayed open, then closes it: a stale pooled
            # connection for the proxy.
            self.close_connection = True
            self.reply(200, b"dropped\n")
            return
        if self.path.startswith("/slow"):
            ms = int(self.path.split("ms=")[1])
            log(f"slow request started ({ms} ms)")
            time.sleep(ms / 1000)
            log(f"slow request done after {ms} ms")
        h = self.headers
        body = (
            f"{VERSION} pid={os.getpid()} xff={h.get('X-Forwarded-For')} "
            f"proto={h.get('X-Forwarded-Proto')} host={h.get('Host')}\n"
        )
        self.reply(200, body.encode())

    def do_POST(self):
        if self.dropped():
            return
        n = int(self.headers.get("Content-Length", "0"))
        self.reply(200, self.rfile.read(n))

    def echo(self):
        self.send_response(101)
        self.send_header("Upgrade", "echo")
        self.send_header("Connection", "Upgrade")
        self.end_headers()
        self.wfile.write(f"{VERSION} pid={os.getpid()}\n".encode())
        while True:
            data = self.rfile.read1(65536)
            if not data:
                break
            self.wfile.write(data)
        self.close_connection = True


class EchoHandler(socketserver.BaseRequestHandler):
    def handle(self):
        self.request.sendall(f"{VERSION} pid={os.getpid()}\n".encode())
        n = 0
        while True:
            data = self.request.recv(65536)
            if not data:
                break
            n += len(data)
            self.request.sendall(data)
        self.request.sendall(f"EOF {n}\n".encode())


class HttpServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class EchoServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def unlisten():
    server.shutdown()
    server.socket.close()
    # Idle keep-alive connections (a proxy's pool) would still reach this process.
    with OPEN_LOCK:
        for conn in list(OPEN):
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
    log("closed the listening socket")


if MODE == "exit3":
    log("exiting with status 3")
    sys.exit(3)

stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
cls, handler = (EchoServer, EchoHandler) if MODE == "tcpecho" else (HttpServer, Handler)
server = cls(("127.0.0.1", port()), handler)
threading.Thread(target=server.serve_forever, daemon=True).start()
log(f"listening on 127.0.0.1:{server.server_address[1]}")
while not stop.wait(0.2):
    pass
log("got SIGTERM; exiting")
sys.exit(0)
