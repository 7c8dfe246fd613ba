#!/usr/bin/env python3
"""Where the time of `handover upgrade` goes (issue 16).

Usage: upgrade-split.py DIR proxy|socket N

DIR holds release builds: `handover`, `hello-v1` and `hello-v2` (greetings "v1 Welcome Server"
and "v2 Welcome New Server"). Starts `handover run` (proxy or socket mode) with hello in a
temporary directory, upgrades it N times without load (rename + `handover upgrade`, 0.3 s
apart), and prints the command's time, the time to the first answer from the new version, and
the split from the supervisor's log timestamps: the command until the request arrived, the
fork and exec, the worker's start until it is ready, until the upgrade is complete, and the
answer until the command has exited. Everything on 127.0.0.1."""
import os, re, shutil, socket, subprocess, sys, time, tempfile, statistics, datetime
bindir, mode, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
d = tempfile.mkdtemp(prefix="p2prof-")
shutil.copy(f"{bindir}/hello-v1", f"{d}/hello")
s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
ctl = f"{d}/control.sock"
if mode == "proxy":
    args = ["--proxy", f"http://127.0.0.1:{port}", "--", f"{d}/hello", "--listen", "127.0.0.1:{port}"]
else:
    args = ["--listen", f"127.0.0.1:{port}", "--", f"{d}/hello", "--listen", f"127.0.0.1:{port}"]
log = open(f"{d}/log", "w")
env = dict(os.environ, HANDOVER_LOG=os.environ.get("HANDOVER_LOG", "debug"), NO_COLOR="1")
sup = subprocess.Popen([f"{bindir}/handover", "run", "--control", ctl] + args, stderr=log, stdout=log, env=env)
def get():
    c = socket.create_connection(("127.0.0.1", port), timeout=2)
    c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    data = b""
    while True:
        b = c.recv(4096)
        if not b: break
        data += b
    c.close()
    return data.decode(errors="replace")
for _ in range(200):
    try:
        get(); break
    except OSError:
        time.sleep(0.02)
walls, firsts, wall0, wall1 = [], [], [], []
ver = 1
for i in range(n):
    ver = 3 - ver
    shutil.copy(f"{bindir}/hello-v{ver}", f"{d}/hello.next"); os.rename(f"{d}/hello.next", f"{d}/hello")
    w0 = time.time() * 1e3
    t0 = time.monotonic()
    out = subprocess.run([f"{bindir}/handover", "upgrade", "--control", ctl], capture_output=True, text=True)
    t1 = time.monotonic()
    w1 = time.time() * 1e3
    wall0.append(w0); wall1.append(w1)
    want = "New" if ver == 2 else "v1 Welcome Server"
    while True:
        body = get()
        if want in body: break
    t2 = time.monotonic()
    assert out.returncode == 0, out.stderr
    walls.append((t1 - t0) * 1e3); firsts.append((t2 - t0) * 1e3)
    time.sleep(0.3)  # let the old one drain
sup.terminate(); sup.wait(10)
log.close()
def q(xs): xs = sorted(xs); return f"p50 {statistics.median(xs):.1f} max {xs[-1]:.1f}"
print(f"{mode}: upgrade command {q(walls)} ms; to first new answer {q(firsts)} ms (n={n})")
# the split, from the supervisor's timestamps
ts = lambda line: datetime.datetime.fromisoformat(line.split()[0].replace("Z", "+00:00")).timestamp() * 1e3
marks = {}
for line in open(f"{d}/log"):
    for key, pat in [("req", "upgrade requested by"), ("spawned", "started the new version"),
                     ("ready", " is ready ("), ("done", "upgrade complete")]:
        if pat in line and re.match(r"\d{4}-", line):
            marks.setdefault(key, []).append(ts(line))
# "is ready" is also logged for the first worker: the upgrades' are the rest.
ready = marks["ready"][1:]
for name, a, b in [("request -> spawned", marks["req"], marks["spawned"]),
                   ("spawned -> ready", marks["spawned"], ready),
                   ("ready -> complete", ready, marks["done"])]:
    xs = [y - x for x, y in zip(a, b)]
    print(f"  {name}: {q(xs)} ms")
print(f"  client start -> request received: {q([r - w for w, r in zip(wall0, marks['req'])])} ms")
print(f"  complete -> client returned: {q([w - c for c, w in zip(marks['done'], wall1)])} ms")
print("log:", f"{d}/log")
