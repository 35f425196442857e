#!/usr/bin/env bash
# Sets up the peer (bench/peer/server.py) for one engine in a throwaway virtualenv under build/,
# never committed:
#   bench/peer/setup.sh [torch|onnxruntime]     (or PEER_ENGINE=...; default torch)
#   torch        build/peer-venv       the study's stack: FastAPI + PyTorch
#   onnxruntime  build/peer-ort-venv   FastAPI + onnxruntime, on any models/NAME
# PEER_VENV overrides the venv's path. Prints the versions at the end.
#
# torch: the PyPI wheels of torch for Linux x86_64 are CUDA builds that pull several GB of
# nvidia-* wheels; Debian's python3-torch and python3-torchvision are CPU-only builds. So torch
# comes from apt (installed here if missing, as root), and the venv sees it through
# --system-site-packages; FastAPI and Uvicorn come from PyPI, pinned in requirements.txt.
#
# onnxruntime: a separate venv without the system's site-packages (so no Debian torch), made by
# the Python the models' .venv uses (scripts/nitro/python.sh, >= 3.11; PYTHON3 overrides it).
# onnxruntime, numpy and Pillow are pinned and hash-checked as in .venv (requirements-ort.txt,
# binary wheels only), then FastAPI and Uvicorn as for torch (requirements.txt).
set -euo pipefail
cd "$(dirname "$0")/../.."
ENGINE=${1:-${PEER_ENGINE:-torch}}

die() { echo "peer/setup.sh: $*" >&2; exit 1; }
PIP_FLAGS=(--quiet --disable-pip-version-check)

# Remake VENV when it is missing or older than any of the files given.
stale() {
  local venv=$1 f
  shift
  [ -x "$venv/bin/python" ] && [ -e "$venv/.stamp" ] || return 0
  for f in "$@"; do [ "$f" -nt "$venv/.stamp" ] && return 0; done
  return 1
}

case $ENGINE in
torch)
  VENV=${PEER_VENV:-build/peer-venv}
  PY=/usr/bin/python3   # Debian's interpreter: the one python3-torch is built for
  if ! $PY -c 'import torch, torchvision' 2>/dev/null; then
    [ "$(id -u)" = 0 ] || die "PyTorch (Debian's python3-torch, python3-torchvision) is missing and installing it needs root"
    echo "peer/setup.sh: installing Debian's CPU-only PyTorch (python3-torch, python3-torchvision)" >&2
    apt-get update -qq || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      python3-torch python3-torchvision python3-venv >/dev/null ||
      die "apt-get install python3-torch python3-torchvision failed"
  fi
  $PY -c 'import torch, torchvision' || die "import torch fails even after installing it"
  if stale "$VENV" bench/peer/requirements.txt; then
    rm -rf "$VENV"
    $PY -m venv --system-site-packages "$VENV" || die "cannot create $VENV (apt-get install python3-venv)"
    "$VENV/bin/pip" install "${PIP_FLAGS[@]}" -r bench/peer/requirements.txt ||
      die "pip install of FastAPI/Uvicorn failed"
    touch "$VENV/.stamp"
  fi
  "$VENV/bin/python" -c 'import fastapi, uvicorn, torch, torchvision; print("peer/setup.sh: torch", torch.__version__, "torchvision", torchvision.__version__, "fastapi", fastapi.__version__, "uvicorn", uvicorn.__version__)' >&2
  ;;
onnxruntime)
  VENV=${PEER_VENV:-build/peer-ort-venv}
  if stale "$VENV" bench/peer/requirements.txt bench/peer/requirements-ort.txt \
      tools/models/requirements-test.txt; then
    PY=$(PYTHON3=${PYTHON3:-} scripts/nitro/python.sh) || die "no Python >= 3.11 (see above)"
    rm -rf "$VENV"
    "$PY" -m venv "$VENV" || die "cannot create $VENV with $PY (python3-venv?)"
    "$VENV/bin/pip" install "${PIP_FLAGS[@]}" --require-hashes --only-binary=:all: \
      -r bench/peer/requirements-ort.txt ||
      die "pip install of onnxruntime/numpy/Pillow failed (the hashes are for CPython 3.11 x86_64; $PY is $("$PY" --version 2>&1))"
    "$VENV/bin/pip" install "${PIP_FLAGS[@]}" -r bench/peer/requirements.txt ||
      die "pip install of FastAPI/Uvicorn failed"
    "$VENV/bin/pip" check --disable-pip-version-check >/dev/null || die "pip check fails in $VENV"
    touch "$VENV/.stamp"
  fi
  "$VENV/bin/python" -c 'import sys, fastapi, uvicorn, numpy, onnxruntime, PIL; print("peer/setup.sh: python", sys.version.split()[0], "onnxruntime", onnxruntime.__version__, "numpy", numpy.__version__, "pillow", PIL.__version__, "fastapi", fastapi.__version__, "uvicorn", uvicorn.__version__)' >&2
  ;;
*)
  die "unknown engine '$ENGINE' (torch or onnxruntime)"
  ;;
esac
