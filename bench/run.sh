#!/usr/bin/env bash
# `make bench` and friends: runs the benchmark suite (target/release/bench
# suite) with the parts asked for, wrapping it in the network namespace of
# bench/netns.sh when the internet-like part is on, and setting up the peer's
# throwaway virtualenv when the peer part is on. The suite starts and stops
# every process it measures itself; nothing is left running, even on Ctrl-C.
#
# Environment (from the Makefile): MODEL, BENCH_PROFILE (quick|full),
# BENCH_PARTS (comma list, see `bench --help`), BENCH_OUT, BENCH_PORT,
# BENCH_COMPARE (the peer comparison's model), BENCH_ARGS (more suite flags), NET_UP/NET_DOWN/NET_DELAY (bench/netns.sh).
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

# The peers, each measured alone after our stack on the compare model (BENCH_COMPARE, default
# resnet18-synthetic): FastAPI + onnxruntime on any model; FastAPI + PyTorch (the study's stack)
# on ResNet18 only, the one network it builds (torchvision's, as the study did).
if has peer; then
  COMPARE=${BENCH_COMPARE:-resnet18-synthetic}
  args+=(--compare-model "$COMPARE")
  bench/peer/setup.sh onnxruntime
  args+=(--peer "FastAPI+onnxruntime=build/peer-ort-venv/bin/python bench/peer/server.py --engine onnxruntime --model {model} --port {port}")
  if [ "$COMPARE" = resnet18-synthetic ]; then
    bench/peer/setup.sh torch
    args+=(--peer "FastAPI+PyTorch=build/peer-venv/bin/python bench/peer/server.py --engine torch --port {port}")
  fi
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
