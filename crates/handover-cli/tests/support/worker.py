#!/usr/bin/env python3
# A worker written in another language, for the `handover run` tests: Python 3, stdlib only.
# It takes its listening socket from fd 3 (the systemd socket-activation protocol), serves
# HTTP/1.0, says READY=1 on $NOTIFY_SOCKET, and on SIGTERM stops accepting, finishes the
# requests in progress and exits 0. The tests write a copy with VERSION and BEHAVIOUR filled in.
import http.server
import os
import signal
import socket
import socketserver
import sys
import threading
import time

VERSION = "@VERSION@"
# serve | exit3 (exits 3 before ready) | hang (never ready)
BEHAVIOUR = "@BEHAVIOUR@"
# The per-worker health endpoint answers 503 this many times before 200.
HEALTH_FAILURES = 2


def log(msg):
    print(f"worker {VERSION} pid {os.getpid()}: {msg}", flush=True)


def notify(msg):
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return
    if path.startswith("@"):
        path = "\0" + path[1:]
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        s.connect(path)
        s.sendall(msg.encode())
    finally:
        s.close()


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path.startswith("/sleep/"):
            time.sleep(int(self.path[len("/sleep/"):]) / 1000)
        if self.path == "/orphan":
            body = f"{orphan()}\n"
        else:
            body = (
                f"{VERSION} pid={os.getpid()}"
                f" health_port={os.environ.get('HANDOVER_HEALTH_PORT', '-')}"
                f" notify={os.environ.get('NOTIFY_SOCKET', '-')}\n"
            )
        data = body.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def orphan():
    """Leaves a grandchild behind: its parent exits at once, it exits 0.2 s later."""
    r, w = os.pipe()
    child = os.fork()
    if child == 0:
        if os.fork() == 0:
            os.write(w, str(os.getpid()).encode())
            time.sleep(0.2)
            os._exit(0)
        os._exit(0)
    os.close(w)
    os.waitpid(child, 0)
    pid = os.read(r, 32).decode()
    os.close(r)
    return pid


class Health(http.server.BaseHTTPRequestHandler):
    probes = 0

    def do_GET(self):
        Health.probes += 1
        ok = Health.probes > HEALTH_FAILURES
        log(f"health probe {Health.probes} on port {self.server.server_address[1]}: {'ok' if ok else 'not yet'}")
        self.send_response(200 if ok else 503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = False
    block_on_close = True


def main():
    assert os.environ.get("LISTEN_PID") == str(os.getpid()), "LISTEN_PID is not my pid"
    assert int(os.environ["LISTEN_FDS"]) >= 1, "no socket passed"
    if BEHAVIOUR == "exit3":
        log("failing on purpose")
        sys.exit(3)
    if BEHAVIOUR == "hang":
        log("never getting ready")
        while True:
            time.sleep(60)

    sock = socket.socket(fileno=3)
    server = Server(sock.getsockname(), Handler, bind_and_activate=False)
    server.socket.close()
    server.socket = sock
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    serving = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    serving.start()

    port = os.environ.get("HANDOVER_HEALTH_PORT")
    if port:
        health = http.server.HTTPServer(("127.0.0.1", int(port)), Health)
        threading.Thread(target=health.serve_forever, daemon=True).start()
    notify("READY=1")
    log(f"serving {sock.getsockname()}")

    while not stop.wait(0.5):
        pass
    log("draining")
    server.shutdown()
    serving.join()
    server.server_close()  # waits for the requests in progress
    log("drained")


if __name__ == "__main__":
    main()
