#!/usr/bin/env bash
# `make bench` and friends: runs the benchmark suite (target/release/bench
# suite) with the parts asked for, wrapping it in the network namespace of
# bench/netns.sh when the internet-like part is on, and setting up the peer's
# throwaway virtualenv when the peer part is on. The suite starts and stops
# every process it measures itself; nothing is left running, even on Ctrl-C.
#
# Environment (from the Makefile): MODEL, BENCH_PROFILE (quick|full),
# BENCH_PARTS (comma list, see `bench --help`), BENCH_OUT, BENCH_PORT,
# BENCH_ARGS (more suite flags), NET_UP/NET_DOWN/NET_DELAY (bench/netns.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

MODEL=${MODEL:-efficientnet-lite0}
PROFILE=${BENCH_PROFILE:-full}
PARTS=${BENCH_PARTS:-engine,start,channel,memory,local,mixed,sealed,net}
OUT=${BENCH_OUT:-bench/results/$(date -u +%Y%m%dT%H%M%SZ)-$PROFILE}
BIN=${BIN:-target/release}

has() { [[ ",$PARTS," == *",$1,"* ]]; }
drop() { PARTS=$(echo ",$PARTS," | sed "s/,$1,/,/g; s/^,//; s/,$//"); }

args=(suite --profile "$PROFILE" --model "$MODEL" --parts PARTS_PLACEHOLDER --out "$OUT" --bin "$BIN")
[ -n "${BENCH_PORT:-}" ] && args+=(--port "$BENCH_PORT")

if has peer; then
  bench/peer/setup.sh
  args+=(--peer-cmd "build/peer-venv/bin/python bench/peer/server.py --port {port}" --peer-name "peer (FastAPI+PyTorch)")
fi

wrap=()
if has net; then
  if bench/netns.sh check; then
    wrap=(bench/netns.sh run --)
  else
    echo "run.sh: the internet-like part is skipped (see the message above); the other parts run" >&2
    drop net
  fi
fi

args[6]=$PARTS
# shellcheck disable=SC2086 # BENCH_ARGS is a list of flags on purpose
exec "${wrap[@]}" "$BIN/bench" "${args[@]}" ${BENCH_ARGS:-}
