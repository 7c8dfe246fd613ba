#!/usr/bin/env python3
"""Keep-alive HTTP/1.1 load on a loopback address that never retries and counts every failure.

Each thread keeps one persistent connection and sends `GET PATH` back to back. It opens a new
connection only after the server answered with `Connection: close` (a clean, announced close).
Anything else counts as a failed request: refused, reset, closed without a response, timeout,
non-200 status. With --ready-file, the file is created once --ready-after requests have
succeeded (so a caller can wait for the load to be flowing). Runs for --duration seconds, then
prints one JSON object:

  {"requests": N, "ok": N, "failed": N, "connections": N,
   "bodies": {"<greeting>": N, ...}, "errors": {"<kind>": N, ...}}

where "bodies" counts 200 responses by body with the `pid=` part cut off.
Standard library only.
"""
import argparse
import http.client
import json
import sys
import threading
import time
from collections import Counter


class Progress:
    """Successful requests across threads; creates the ready file once enough have succeeded."""

    def __init__(self, ready_file, ready_after):
        self.lock = threading.Lock()
        self.ok = 0
        self.ready_file = ready_file
        self.ready_after = ready_after

    def success(self):
        with self.lock:
            self.ok += 1
            if self.ready_file and self.ok == self.ready_after:
                open(self.ready_file, "w").close()


def worker(host, port, path, deadline, progress, out):
    ok = 0
    failed = 0
    connections = 0
    bodies = Counter()
    errors = Counter()
    conn = None
    while time.monotonic() < deadline:
        if conn is None:
            conn = http.client.HTTPConnection(host, port, timeout=10)
            connections += 1
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            body = resp.read().decode("utf-8", "replace").strip()
        except Exception as e:  # noqa: BLE001 - every failure is counted, whatever it is
            failed += 1
            errors[type(e).__name__ + ": " + str(e)[:80]] += 1
            conn.close()
            conn = None
            time.sleep(0.01)  # do not spin if the server is gone
            continue
        if resp.status == 200:
            ok += 1
            progress.success()
            bodies[body.split(" pid=")[0]] += 1
        else:
            failed += 1
            errors["status %d" % resp.status] += 1
        if resp.will_close:
            # The server announced the close: a new connection for the next request.
            conn.close()
            conn = None
    if conn is not None:
        conn.close()
    out.append((ok, failed, connections, bodies, errors))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--path", default="/")
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--ready-file")
    ap.add_argument("--ready-after", type=int, default=100)
    a = ap.parse_args()
    if a.host not in ("127.0.0.1", "::1", "localhost"):
        sys.exit("load.py only talks to loopback addresses")
    if not 0 < a.duration <= 120:
        sys.exit("--duration must be in (0, 120] seconds")

    deadline = time.monotonic() + a.duration
    results = []
    progress = Progress(a.ready_file, max(1, a.ready_after))
    threads = [
        threading.Thread(target=worker, args=(a.host, a.port, a.path, deadline, progress, results))
        for _ in range(a.threads)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    ok = sum(r[0] for r in results)
    failed = sum(r[1] for r in results)
    bodies = Counter()
    errors = Counter()
    for r in results:
        bodies.update(r[3])
        errors.update(r[4])
    print(json.dumps({
        "requests": ok + failed,
        "ok": ok,
        "failed": failed,
        "connections": sum(r[2] for r in results),
        "bodies": dict(bodies),
        "errors": dict(errors),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
