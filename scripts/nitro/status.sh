#!/usr/bin/env bash
# Shows the enclaves (nitro-cli describe-enclaves), the background processes of `make run`,
# and the parent front's /ready. Exits 0 only when /ready answers. Needs no root: it reads
# /proc, which shows root's processes too after `sudo make run` (lib.sh: pid_alive).
# Env: RUN_DIR, PORT.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd -P)
. "$here/lib.sh"

run_dir=${RUN_DIR:?RUN_DIR}
port=${PORT:-80}

echo "== enclaves ($NITRO_CLI describe-enclaves)"
"$NITRO_CLI" describe-enclaves || say "describe-enclaves failed"
echo "== processes ($run_dir)"
for p in parent:"parent front" public:"public model server" console:"enclave console"; do
    file="$run_dir/${p%%:*}.pid"
    if pid_alive "$file"; then
        echo "  ${p#*:}: running (pid $(head -n 1 "$file"))$(restarts=$(cat "$run_dir/${p%%:*}.restarts" \
            2>/dev/null) && [ "${restarts:-0}" != 0 ] && echo ", restarted $restarts times")"
    elif pid_stale "$file"; then
        echo "  ${p#*:}: not running (stale pid file: pid $(head -n 1 "$file") is now another program)"
    else
        echo "  ${p#*:}: not running"
    fi
done
echo "== http://127.0.0.1:$port/ready"
if ! curl -fsS --max-time 5 "http://127.0.0.1:$port/ready"; then
    echo
    die "the parent front does not answer on port $port"
fi
echo
