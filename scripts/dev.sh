#!/usr/bin/env bash
# The local stack, for development: the secure model server (standing in for
# the enclave, on a Unix socket instead of vsock), the public model server (the
# same binary) and the parent front, all in the foreground until Ctrl-C or
# SIGTERM, which stops all three and leaves no process behind.
#
# `make dev` builds the release binaries and prepares the model, then runs this.
# Environment: MODEL (default efficientnet-lite0), PORT (default 8080),
# RUN_DIR (default .run). Logs: $RUN_DIR/{secure,public,parent}.log; pid files
# $RUN_DIR/{secure,public,parent}.pid.
set -euo pipefail

MODEL=${MODEL:-efficientnet-lite0}
PORT=${PORT:-8080}
RUN_DIR=${RUN_DIR:-.run}
BIN=${BIN:-target/release}
READY_TIMEOUT=${READY_TIMEOUT:-60}   # seconds to wait for /ready

cd "$(dirname "$0")/.."

die() { echo "dev.sh: $*" >&2; exit 1; }

for b in enclave parent; do
  [ -x "$BIN/$b" ] || die "$BIN/$b is missing: run 'make build' first"
done
[ -f "models/$MODEL/model.onnx" ] || die "models/$MODEL is missing: run 'make model MODEL=$MODEL' first"
command -v curl >/dev/null || die "curl is needed to wait for /ready"

mkdir -p "$RUN_DIR"
PIDS=()

stop_all() {
  trap - INT TERM EXIT
  local name pid
  for name in parent public secure; do
    if [ -f "$RUN_DIR/$name.pid" ]; then
      pid=$(cat "$RUN_DIR/$name.pid")
      kill -TERM "$pid" 2>/dev/null || true
    fi
  done
  # Wait for each (bounded): a model server gets its shutdown grace, then KILL.
  for name in parent public secure; do
    [ -f "$RUN_DIR/$name.pid" ] || continue
    pid=$(cat "$RUN_DIR/$name.pid")
    for _ in $(seq 1 120); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    rm -f "$RUN_DIR/$name.pid"
  done
  echo "dev.sh: stopped"
}
trap 'stop_all; exit 130' INT
trap 'stop_all; exit 143' TERM
trap 'stop_all' EXIT

start() { # name, then the command
  local name=$1; shift
  "$@" >"$RUN_DIR/$name.log" 2>&1 &
  echo $! >"$RUN_DIR/$name.pid"
  PIDS+=($!)
}

start secure "$BIN/enclave" --listen "unix:$RUN_DIR/secure.sock" --model "models/$MODEL"
start public "$BIN/enclave" --listen "unix:$RUN_DIR/public.sock" --model "models/$MODEL"
start parent "$BIN/parent" --listen "127.0.0.1:$PORT" \
  --secure "unix:$RUN_DIR/secure.sock" --public "unix:$RUN_DIR/public.sock"

echo "dev.sh: waiting for http://127.0.0.1:$PORT/ready (up to ${READY_TIMEOUT}s)"
ready=0
for _ in $(seq 1 $((READY_TIMEOUT * 10))); do
  for name in secure public parent; do
    kill -0 "$(cat "$RUN_DIR/$name.pid")" 2>/dev/null || {
      echo "dev.sh: the $name process exited; last lines of $RUN_DIR/$name.log:" >&2
      tail -n 20 "$RUN_DIR/$name.log" >&2 || true
      exit 1
    }
  done
  if curl -fsS -o /dev/null "http://127.0.0.1:$PORT/ready" 2>/dev/null; then ready=1; break; fi
  sleep 0.1
done
[ "$ready" = 1 ] || die "not ready after ${READY_TIMEOUT}s; see $RUN_DIR/{secure,public,parent}.log"

cat <<EOF
dev.sh: ready. Model $MODEL; logs in $RUN_DIR/. Try:

  curl -s http://127.0.0.1:$PORT/ready
  curl -s --data-binary @testdata/chelsea.jpg -H 'Content-Type: image/jpeg' http://127.0.0.1:$PORT/predict-secure/
  curl -s --data-binary @testdata/chelsea.jpg -H 'Content-Type: image/jpeg' http://127.0.0.1:$PORT/predict-public/?top_k=3
  printf '{"images": ["%s"]}' "\$(base64 -w0 testdata/chelsea.jpg)" | \\
    curl -s -H 'Content-Type: application/json' --data-binary @- http://127.0.0.1:$PORT/predict-secure/
  curl -s http://127.0.0.1:$PORT/metrics

Ctrl-C stops everything.
EOF

# Stay in the foreground until a process dies or we are told to stop. `wait -n`
# returns when any child exits, and is interrupted by the trapped signals.
set +e
wait -n "${PIDS[@]}"
status=$?
set -e
echo "dev.sh: a process exited (status $status); stopping the rest" >&2
exit 1
