#!/usr/bin/env bash
# Makes build/oip-venv (or $OIP_VENV) with tools/oip/requirements.txt: tritonclient[http], every
# package pinned and hash-checked, wheels only. Does nothing when the venv's stamp is newer than
# the requirements. Prints the venv's python on its last line. Used by `make oip-venv`
# (mk/oip.mk) and by parent/tests/oip_tritonclient.rs, so `make test` needs nothing else.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
req=$root/tools/oip/requirements.txt
venv=${OIP_VENV:-$root/build/oip-venv}
stamp=$venv/.oip.stamp
if [ ! -f "$stamp" ] || [ "$req" -nt "$stamp" ]; then
    py=$("$root/scripts/nitro/python.sh")
    echo "oip: $py -m venv $venv ($("$py" --version 2>&1))" >&2
    rm -rf "$venv"
    mkdir -p "$(dirname "$venv")"
    "$py" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        --require-hashes --only-binary=:all: -r "$req" >&2
    touch "$stamp"
fi
echo "$venv/bin/python"
