#!/usr/bin/env bash
# The seed's scenario in one command: v1 of `hello` serves on a loopback port under continuous
# keep-alive load; its binary is replaced by v2 and `kill -USR2 <pid>` is sent; the PID changes,
# the same port answers with v2, and not one request fails.
#
#   bash scripts/demo.sh            # picks a free port
#   PORT=18080 bash scripts/demo.sh
#
# Env: PORT, LOAD_SECONDS (default 6), LOAD_THREADS (default 4).
# Exits non-zero if any request failed or the upgrade did not happen.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

LOAD_SECONDS=${LOAD_SECONDS:-6}
LOAD_THREADS=${LOAD_THREADS:-4}
target=${CARGO_TARGET_DIR:-$root/target}/demo

say() { printf '==> %s\n' "$*"; }
die() { printf 'demo: %s\n' "$*" >&2; exit 1; }

command -v python3 >/dev/null || die "python3 is required"
command -v curl >/dev/null || die "curl is required"

# --- build v1 and v2 --------------------------------------------------------------------------
say "building hello v1 and v2 (release)"
env -u HELLO_GREETING CARGO_TARGET_DIR="$target/v1" \
  cargo build --release --quiet --example hello -p handover
HELLO_GREETING="Welcome New Server" CARGO_TARGET_DIR="$target/v2" \
  cargo build --release --quiet --example hello -p handover
v1=$target/v1/release/examples/hello
v2=$target/v2/release/examples/hello
[ -x "$v1" ] && [ -x "$v2" ] || die "build did not produce $v1 and $v2"

# --- run --------------------------------------------------------------------------------------
work=$(mktemp -d "${TMPDIR:-/tmp}/handover-demo.XXXXXX")
load_pid=""
cleanup() {
  local rc=$?
  [ -n "$load_pid" ] && kill "$load_pid" 2>/dev/null || true
  # Every generation of the server runs a binary from $work: kill whatever is left of them.
  local d
  for d in /proc/[0-9]*; do
    case $(readlink "$d/exe" 2>/dev/null) in
      "$work"/*) kill -KILL "${d#/proc/}" 2>/dev/null || true ;;
    esac
  done
  if [ "$rc" -ne 0 ] && [ -f "$work/server.log" ]; then
    echo "---- server log ----" >&2
    cat "$work/server.log" >&2
  fi
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

PORT=${PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
cp "$v1" "$work/hello"

# Alive = exists and is not a zombie.
alive() {
  local st
  st=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  st=${st##*) } # drop "pid (comm) "
  [ "${st%% *}" != Z ]
}
# Polls a command until it succeeds, at most $1 seconds.
wait_until() {
  local secs=$1; shift
  local end=$((SECONDS + secs))
  until "$@"; do
    [ "$SECONDS" -lt "$end" ] || return 1
    sleep 0.05
  done
}
body() { curl -sS --max-time 5 "http://127.0.0.1:$PORT/"; }
pid_of() { sed -n 's/.* pid=\([0-9][0-9]*\).*/\1/p' <<<"$1"; }

say "starting v1 on 127.0.0.1:$PORT"
"$work/hello" --listen "127.0.0.1:$PORT" --pid-file "$work/hello.pid" \
  </dev/null >"$work/server.log" 2>&1 &
first_pid=$!
serving() {
  grep -q "serving tcp://127.0.0.1:$PORT" "$work/server.log" && return 0
  alive "$first_pid" || die "v1 exited before serving on port $PORT"
  return 1
}
wait_until 30 serving || die "v1 did not start serving on port $PORT within 30s"

before=$(body)
before_pid=$(pid_of "$before")
[ "$before_pid" = "$first_pid" ] || die "unexpected answer from v1: $before"

say "load: $LOAD_THREADS keep-alive clients for ${LOAD_SECONDS}s"
python3 "$root/scripts/load.py" --port "$PORT" --threads "$LOAD_THREADS" \
  --duration "$LOAD_SECONDS" --ready-file "$work/load.ready" --ready-after 1000 \
  >"$work/load.json" &
load_pid=$!
wait_until 30 test -e "$work/load.ready" || die "the load never got going"

say "replacing the binary with v2 and sending SIGUSR2 to $before_pid"
cp "$v2" "$work/hello.tmp"
mv "$work/hello.tmp" "$work/hello"
kill -USR2 "$before_pid"

new_answers() { after=$(body) && [ "$(pid_of "$after")" != "$before_pid" ]; }
wait_until 30 new_answers || die "the new generation never answered"
after_pid=$(pid_of "$after")
wait_until 30 eval '! alive "$before_pid"' || die "old pid $before_pid did not exit"

wait "$load_pid" || die "load generator failed"
load_pid=""
read -r requests failed summary < <(python3 - "$work/load.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
print(r["requests"], r["failed"], json.dumps({"bodies": r["bodies"], "errors": r["errors"]}))
EOF
)

echo
echo "before: pid=$before_pid body=$before"
echo "after:  pid=$after_pid body=$after"
echo "old pid $before_pid alive: $(alive "$before_pid" && echo yes || echo no)"
echo "requests sent: $requests"
echo "failed requests: $failed"
echo "detail: $summary"
grep -E "upgrade (started|complete)" "$work/server.log" | sed 's/^/log: /' || true
echo

say "stopping pid $after_pid (SIGTERM)"
kill -TERM "$after_pid"
wait_until 30 eval '! alive "$after_pid"' || die "pid $after_pid did not stop"

status=0
[ "$after_pid" != "$before_pid" ] || { echo "FAIL: pid did not change" >&2; status=1; }
case "$after" in "Welcome New Server pid="*) ;; *) echo "FAIL: after body is not v2" >&2; status=1 ;; esac
[ "$failed" -eq 0 ] || { echo "FAIL: $failed failed requests" >&2; status=1; }
[ "$requests" -gt 0 ] || { echo "FAIL: no requests were sent" >&2; status=1; }
[ "$status" -eq 0 ] && say "OK: upgraded from pid $before_pid to $after_pid with 0 failed requests out of $requests"
exit "$status"
