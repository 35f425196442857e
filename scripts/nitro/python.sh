#!/usr/bin/env bash
# Picks the Python for `make model` (mk/models.mk) and `make preflight`.
# tools/models/requirements.txt pins wheels for CPython 3.11 and 3.12 only (installed binary-only
# and hash-checked), so an older Python cannot install them: Amazon Linux 2023's python3 is 3.9,
# AL2's 3.7.
#   python.sh               prints PYTHON3 if set, else the first of PYTHON_CANDIDATES
#                           (python3.12 python3.11 python3) that is >= 3.11; if none is, says
#                           what each one is and what to install, and exits 1
#   python.sh --is-recent PY   exits 0 if PY runs and is >= 3.11 (quietly)
set -euo pipefail

min_major=3 min_minor=11
candidates=${PYTHON_CANDIDATES:-python3.12 python3.11 python3}

version() { # the X.Y of interpreter $1, or nothing
    "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || true
}
is_recent() {
    local v
    v=$(version "$1")
    [[ $v =~ ^([0-9]+)\.([0-9]+)$ ]] || return 1
    [ "${BASH_REMATCH[1]}" -gt "$min_major" ] ||
        { [ "${BASH_REMATCH[1]}" -eq "$min_major" ] && [ "${BASH_REMATCH[2]}" -ge "$min_minor" ]; }
}

if [ "${1:-}" = --is-recent ]; then
    [ -n "${2:-}" ] && is_recent "$2"
    exit
fi

if [ -n "${PYTHON3:-}" ]; then
    list=$PYTHON3
else
    list=$candidates
fi
found=
for py in $list; do
    command -v "$py" >/dev/null 2>&1 || { found+=" $py: not installed;"; continue; }
    if is_recent "$py"; then
        echo "$py"
        exit 0
    fi
    found+=" $py: $(version "$py" | sed 's/^$/does not run/');"
done
{
    echo "python.sh: error: 'make model' needs Python $min_major.$min_minor or newer" \
        "(tools/models/requirements.txt pins numpy and onnx wheels for CPython 3.11/3.12 only)."
    echo "  Found:${found%;}."
    echo "  Install one: 'sudo dnf install -y python3.12' (Amazon Linux 2023)," \
        "'sudo apt-get install -y python3.12-venv' (Debian/Ubuntu), or give PYTHON3=/path/to/python3.11+."
} >&2
exit 1
