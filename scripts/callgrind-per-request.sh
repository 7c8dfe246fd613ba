#!/usr/bin/env bash
# Instructions per keep-alive request of `hello`, counted by callgrind (repeatable on a busy
# machine, unlike req/s): the server runs under valgrind twice, serving FEW and MANY requests
# on CONNS keep-alive connections, and the difference of the totals divided by the difference
# of the requests is the cost of one request (start-up and shutdown cancel out).
#
#   cargo build --profile profiling -p handover --example hello
#   bash scripts/callgrind-per-request.sh target/profiling/examples/hello handover
#   bash scripts/callgrind-per-request.sh target/profiling/examples/hello axum
#
# Env: CONNS (default 4), FEW (default 250), MANY (default 1250) requests per connection,
# OUT (default a temp dir; the callgrind.out files stay there for callgrind_annotate).
set -euo pipefail

bin=${1:?usage: callgrind-per-request.sh HELLO_BINARY DRAIN}
drain=${2:?usage: callgrind-per-request.sh HELLO_BINARY DRAIN}
CONNS=${CONNS:-4}
FEW=${FEW:-250}
MANY=${MANY:-1250}
OUT=${OUT:-$(mktemp -d)}
command -v valgrind >/dev/null || { echo "valgrind not found (apt-get install valgrind)" >&2; exit 2; }

# One run: start the server under callgrind, wait until it answers, send `per` requests on
# each connection (each must be a 200 with hello's greeting), stop it with SIGTERM (its drain
# ends it normally, so callgrind writes its totals). Prints the total instruction count.
run() {
  local per=$1 out=$2 port vp
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  valgrind --tool=callgrind --callgrind-out-file="$out" "$bin" --listen "127.0.0.1:$port" \
    --drain "$drain" 2>"$out.log" &
  vp=$!
  python3 - "$port" "$CONNS" "$per" <<'PY'
import socket, sys, threading, time
port, conns, per = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
deadline = time.monotonic() + 60
while True:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        break
    except OSError:
        if time.monotonic() > deadline:
            sys.exit("the server under valgrind did not answer within 60 s")
        time.sleep(0.1)
errors = []
def client():
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        f = s.makefile("rb")
        for _ in range(per):
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            status = f.readline()
            length = 0
            while (line := f.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            body = f.read(length)
            if not status.startswith(b"HTTP/1.1 200") or b"Welcome" not in body:
                raise RuntimeError(f"unexpected answer {status!r} {body!r}")
        s.close()
    except Exception as e:
        errors.append(e)
threads = [threading.Thread(target=client) for _ in range(conns)]
for t in threads: t.start()
for t in threads: t.join()
if errors:
    sys.exit(f"{len(errors)} connections failed: {errors[0]}")
PY
  kill -TERM "$vp"
  wait "$vp"
  sed -n 's/^summary: //p' "$out"
}

few=$(run "$FEW" "$OUT/callgrind.$drain.$FEW.out")
many=$(run "$MANY" "$OUT/callgrind.$drain.$MANY.out")
requests=$(( (MANY - FEW) * CONNS ))
echo "$drain: $few instructions for $((FEW * CONNS)) requests, $many for $((MANY * CONNS)):" \
  "$(( (many - few) / requests )) per request (files in $OUT)"
