#!/usr/bin/env bash
# Sets up the peer (bench/peer/server.py, the study's stack reimplemented) in a
# throwaway virtualenv, build/peer-venv, never committed.
#
# PyTorch: the PyPI wheels of torch for Linux x86_64 are CUDA builds that pull
# several GB of nvidia-* wheels; Debian's python3-torch and python3-torchvision
# are CPU-only builds. So torch comes from apt (installed here if missing, as
# root), and the venv sees it through --system-site-packages; FastAPI and
# Uvicorn come from PyPI, pinned in requirements.txt.
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV=${PEER_VENV:-build/peer-venv}
PY=/usr/bin/python3   # Debian's interpreter: the one python3-torch is built for

die() { echo "peer/setup.sh: $*" >&2; exit 1; }

if ! $PY -c 'import torch, torchvision' 2>/dev/null; then
  [ "$(id -u)" = 0 ] || die "PyTorch (Debian's python3-torch, python3-torchvision) is missing and installing it needs root"
  echo "peer/setup.sh: installing Debian's CPU-only PyTorch (python3-torch, python3-torchvision)" >&2
  apt-get update -qq || true
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    python3-torch python3-torchvision python3-venv >/dev/null ||
    die "apt-get install python3-torch python3-torchvision failed"
fi
$PY -c 'import torch, torchvision' || die "import torch fails even after installing it"
if [ ! -x "$VENV/bin/python" ] || [ bench/peer/requirements.txt -nt "$VENV/.stamp" ]; then
  rm -rf "$VENV"
  $PY -m venv --system-site-packages "$VENV" || die "cannot create $VENV (apt-get install python3-venv)"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -r bench/peer/requirements.txt ||
    die "pip install of FastAPI/Uvicorn failed"
  touch "$VENV/.stamp"
fi
"$VENV/bin/python" -c 'import fastapi, uvicorn, torch, torchvision; print("peer/setup.sh: torch", torch.__version__, "torchvision", torchvision.__version__, "fastapi", fastapi.__version__, "uvicorn", uvicorn.__version__)' >&2
