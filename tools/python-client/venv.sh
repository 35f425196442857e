#!/usr/bin/env bash
# Makes build/client-venv (or $CLIENT_VENV) with tools/python-client/requirements.txt (cbor2,
# cryptography, pyhpke), every package pinned and hash-checked, wheels only, and puts
# tools/python-client on its sys.path (a .pth file), so `build/client-venv/bin/python -m
# sealed_client` works from anywhere. Does nothing when the venv's stamp is newer than the
# requirements. Prints the venv's python on its last line. Used by `make client-venv` and
# `make test-clients` (mk/clients.mk).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
req=$here/requirements.txt
venv=${CLIENT_VENV:-$root/build/client-venv}
stamp=$venv/.client.stamp
if [ ! -f "$stamp" ] || [ "$req" -nt "$stamp" ]; then
    py=$("$root/scripts/nitro/python.sh")
    echo "client: $py -m venv $venv ($("$py" --version 2>&1))" >&2
    rm -rf "$venv"
    mkdir -p "$(dirname "$venv")"
    "$py" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        --require-hashes --only-binary=:all: -r "$req" >&2
    touch "$stamp"
fi
# Written on every run, so a venv copied or a checkout moved still imports this tree's package.
site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$here" > "$site/sealed_client.pth"
echo "$venv/bin/python"
