#!/usr/bin/env bash
# Stops what `make run` started: the parent front, the public model server, the enclave
# (nitro-cli terminate-enclave --enclave-id, the id from RUN_DIR or the enclave with our CID)
# and the debug console copier. Safe to run when nothing runs. Pid files whose pid now belongs
# to another program (after a reboot) are removed without signalling it (lib.sh: pid_alive).
# Env: RUN_DIR, ENCLAVE_CID.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd -P)
. "$here/lib.sh"

run_dir=${RUN_DIR:?RUN_DIR}
cid=${ENCLAVE_CID:-16}

stop_pidfile "$run_dir/parent.pid" "parent front"
stop_pidfile "$run_dir/public.pid" "public model server"
rm -f "$run_dir/public.sock"

if ! described=$("$NITRO_CLI" describe-enclaves); then
    stop_pidfile "$run_dir/console.pid" "enclave console"
    die "'$NITRO_CLI describe-enclaves' failed (above; 'Failed connections' means an enclave process" \
        "did not answer), so the enclave was not stopped: 'sudo $NITRO_CLI terminate-enclave --all'" \
        "stops every enclave on this instance"
fi
running=$(enclave_ids <<<"$described")
id=
if [ -f "$run_dir/enclave-id" ]; then
    id=$(cat "$run_dir/enclave-id")
    if ! grep -qxF "$id" <<<"$running"; then
        say "enclave $id is no longer running"
        id=
    fi
else
    id=$(enclave_id_for_cid "$cid" <<<"$described" | head -n 1)
fi
if [ -n "$id" ]; then
    say "$NITRO_CLI terminate-enclave --enclave-id $id"
    "$NITRO_CLI" terminate-enclave --enclave-id "$id" >/dev/null ||
        die "nitro-cli terminate-enclave --enclave-id $id failed; try '$NITRO_CLI terminate-enclave --all'"
    say "terminated enclave $id"
elif [ ! -f "$run_dir/enclave-id" ]; then
    say "no enclave with CID $cid is running"
fi
rm -f "$run_dir/enclave-id"
stop_pidfile "$run_dir/console.pid" "enclave console"
