#!/usr/bin/env python3
# A UDP worker in another language, for the `handover run --listen udp://...` tests: Python 3,
# stdlib only. It takes its datagram socket from fd 3 (systemd socket activation, as
# `ListenDatagram=` passes it), answers each datagram with its bytes followed by " pid=<pid>",
# says READY=1 on $NOTIFY_SOCKET, and at SIGTERM stops reading and exits 0: the datagrams not
# read yet stay in the socket, which the supervisor and the new worker share, for the new one.
import os
import select
import signal
import socket
import sys

stopping = False


def log(msg):
    print(f"udp worker pid {os.getpid()}: {msg}", flush=True)


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


def on_term(*_):
    global stopping
    stopping = True


def main():
    assert os.environ.get("LISTEN_PID") == str(os.getpid()), "LISTEN_PID is not my pid"
    assert os.environ.get("LISTEN_FDS") == "1", "expected exactly one socket"
    sock = socket.socket(fileno=3)
    if sock.type != socket.SOCK_DGRAM:
        log(f"fd 3 is not a datagram socket ({sock.type!r})")
        sys.exit(2)
    # The socket's O_NONBLOCK is shared with every process holding it: read only when select
    # says so, and take EAGAIN (another worker was quicker) in stride.
    sock.setblocking(False)
    signal.signal(signal.SIGTERM, on_term)
    notify("READY=1")
    log(f"serving udp {sock.getsockname()}")
    suffix = f" pid={os.getpid()}".encode()
    read = 0
    # The handler only sets the flag; the loop sees it within the select timeout and then
    # reads nothing more. Every datagram read is answered before the next read.
    while not stopping:
        ready, _, _ = select.select([sock], [], [], 0.05)
        if not ready or stopping:
            continue
        try:
            data, peer = sock.recvfrom(65536)
        except (BlockingIOError, InterruptedError):
            continue
        read += 1
        sock.sendto(data + suffix, peer)
    log(f"stopping: read {read} datagrams, reading no more")


if __name__ == "__main__":
    main()
