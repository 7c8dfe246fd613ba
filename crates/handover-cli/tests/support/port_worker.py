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
#   Routes for the HTTP/1.1 edge-case tests (tests/proxy_http1.rs), none of which changes the
#   ones above: any GET with an `X-Echo-Request` header answers "path=P", "method=M",
#   "version=V" lines then one "Name: value" line per request header as received (and logs
#   "request GET P"); GET|HEAD /fixed: FIXED with Content-Length; GET|HEAD /chunked: CHUNKS
#   sent chunked (a chunk extension, then a trailer); GET /close-delimited: BIG with neither
#   Content-Length nor chunked, ended by closing the connection (`?v=1.0`: with an HTTP/1.0
#   status line); GET /conn-header: `Connection: x-private` with `X-Private` (and
#   `Keep-Alive`, `X-Public`); POST /body...: echoes its body, read by Content-Length or
#   chunked (logs "request POST P"); POST /early-413: answers 413 at once without reading
#   its body, then closes (after draining what arrives for a moment, so that no reset
#   destroys the answer). HEAD elsewhere is still 501. Request header lines may be long
#   (a proxy's header limit is what is tested, not this worker's).
# MODE fail500: as http, but GET / answers 500 "VERSION pid=PID failing" (a broken release for
#   the canary tests, tests/canary.rs).
# MODE tcpecho: sends a banner line, echoes bytes, and after the client's EOF sends "EOF <n>".
# MODE exit3: exits with status 3 at once.
import http.client
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


# Header lines longer than http.client's 64 KiB are accepted: a proxy must refuse them first.
http.client._MAXLINE = 1 << 20

# Bodies of the routes added for tests/proxy_http1.rs (which builds the same bytes).
FIXED = b"0123456789" * 100 + b"\n"
CHUNKS = [b"alpha\n", bytes(range(256)) * 40, b"omega\n"]
BIG = bytes(range(256)) * 800

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
        if MODE == "fail500" and self.path == "/":
            self.reply(500, f"{VERSION} pid={os.getpid()} failing\n".encode())
            return
        if self.edge_get():
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
        if self.path.startswith("/body"):
            log(f"request POST {self.path}")
            self.reply(200, self.read_body())
            return
        if self.path == "/early-413":
            log(f"request POST {self.path}")
            return self.early_413()
        n = int(self.headers.get("Content-Length", "0"))
        self.reply(200, self.rfile.read(n))

    def do_HEAD(self):
        if self.path == "/fixed":
            return self.fixed(head=True)
        if self.path == "/chunked":
            return self.chunked(head=True)
        self.send_error(501, "Unsupported method ('HEAD')")

    def edge_get(self):
        # The GET routes of tests/proxy_http1.rs; False for any other request.
        if "X-Echo-Request" in self.headers:
            log(f"request GET {self.path}")
            lines = [f"path={self.path}", f"method={self.command}"]
            lines.append(f"version={self.request_version}")
            lines += [f"{k}: {v}" for k, v in self.headers.items()]
            self.reply(200, ("\n".join(lines) + "\n").encode("utf-8", "replace"))
        elif self.path == "/fixed":
            self.fixed(head=False)
        elif self.path == "/chunked":
            self.chunked(head=False)
        elif self.path.startswith("/close-delimited"):
            version = "HTTP/1.0" if self.path.endswith("v=1.0") else "HTTP/1.1"
            head = f"{version} 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n"
            self.wfile.write(head.encode())
            for i in range(0, len(BIG), 50000):
                self.wfile.write(BIG[i : i + 50000])
            self.close_connection = True
        elif self.path == "/conn-header":
            self.send_response(200)
            self.send_header("Connection", "x-private")
            self.send_header("X-Private", "secret")
            self.send_header("Keep-Alive", "timeout=7")
            self.send_header("X-Public", "ok")
            self.send_header("Content-Length", "3")
            self.end_headers()
            self.wfile.write(b"ok\n")
        else:
            return False
        return True

    def fixed(self, head):
        self.send_response(200)
        self.send_header("Content-Length", str(len(FIXED)))
        self.end_headers()
        if not head:
            self.wfile.write(FIXED)

    def chunked(self, head):
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Trailer", "X-Checksum")
        self.end_headers()
        if head:
            return
        for i, c in enumerate(CHUNKS):
            ext = b";ext=1" if i == 0 else b""
            self.wfile.write(b"%x%s\r\n%s\r\n" % (len(c), ext, c))
        self.wfile.write(b"0\r\nX-Checksum: 42\r\n\r\n")

    def read_body(self):
        # Content-Length or chunked (extensions and trailers skipped).
        if "chunked" not in self.headers.get("Transfer-Encoding", "").lower():
            return self.rfile.read(int(self.headers.get("Content-Length", "0")))
        body = bytearray()
        while True:
            size = int(self.rfile.readline(65537).split(b";")[0].strip(), 16)
            if size == 0:
                break
            body += self.rfile.read(size)
            self.rfile.readline(65537)
        while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
            pass
        return bytes(body)

    def early_413(self):
        body = b"too large\n"
        self.send_response(413)
        self.send_header("Connection", "close")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True
        # A lingering close: closing with unread data would send a reset, which can destroy
        # the answer before the peer reads it.
        try:
            self.connection.shutdown(socket.SHUT_WR)
            self.connection.settimeout(1)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and self.connection.recv(65536):
                pass
        except OSError:
            pass

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
