#!/usr/bin/env bash
# The enclave as a service: what the installed nitro-ml-enclave.service runs (deploy/systemd/).
# An enclave is not a process of this instance, so systemd cannot watch it directly: `run`
# starts it and then stays in the foreground as long as it lives, so that systemd's
# Restart=always runs it again when it dies (the enclave cannot restart itself).
#
#   enclave-service.sh run     terminate a leftover enclave with our CID (from a watcher that was
#                              killed), nitro-cli run-enclave (once more after 2 s on E29), then
#                              every WATCH_INTERVAL s check that describe-enclaves lists it and
#                              that its model server answers a ping; exits 1 when the enclave
#                              is gone or its server missed WATCH_FAILURES pings in a row (the
#                              unit's ExecStopPost terminates it then). SIGTERM: terminate, exit 0.
#   enclave-service.sh ready   wait up to PING_TIMEOUT s for the model server (ExecStartPost:
#                              the unit becomes active, and the parent starts, only then)
#   enclave-service.sh stop    terminate our enclave if it runs (ExecStopPost; idempotent)
#
# No debug mode here (DEBUG=1 is for `make run`): a production enclave keeps its PCRs.
# Env (the unit's EnvironmentFile, /etc/nitro-ml/nitro-ml.env): EIF, MODEL_DIR, ENCLAVE_CID,
# ENCLAVE_CPUS, ENCLAVE_MEMORY_MIB, SECURE_ADDR, PING_TIMEOUT, PARENT_BIN (for `parent ping`),
# STATE_DIR (where the enclave id is kept; the unit's RuntimeDirectory), WATCH_INTERVAL (5),
# WATCH_FAILURES (3).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd -P)
. "$here/lib.sh"

eif=${EIF:?EIF}
model_dir=${MODEL_DIR:?MODEL_DIR}
cid=${ENCLAVE_CID:-16}
secure=${SECURE_ADDR:-vsock:$cid:5005}
ping_timeout=${PING_TIMEOUT:-60}
parent_bin=${PARENT_BIN:-$here/parent}
state_dir=${STATE_DIR:?STATE_DIR}
interval=${WATCH_INTERVAL:-5}
max_failures=${WATCH_FAILURES:-3}
id_file=$state_dir/enclave-id

# terminate_ours: the enclave whose id we recorded, else any enclave with our CID (this unit
# owns the CID: one left by a killed watcher would make run-enclave fail).
terminate_ours() {
    local described id=
    described=$("$NITRO_CLI" describe-enclaves) || die "'$NITRO_CLI describe-enclaves' failed"
    if [ -f "$id_file" ] && enclave_ids <<<"$described" | grep -qxF "$(cat "$id_file")"; then
        id=$(cat "$id_file")
    else
        id=$(enclave_id_for_cid "$cid" <<<"$described" | head -n 1)
    fi
    if [ -n "$id" ]; then
        say "terminating enclave $id (CID $cid)"
        "$NITRO_CLI" terminate-enclave --enclave-id "$id" >/dev/null
    fi
    rm -f "$id_file"
}

case ${1:-} in
run)
    [ -f "$eif" ] || die "EIF missing: $eif (reinstall: make install)"
    mkdir -p "$state_dir"
    terminate_ours
    mem=$(enclave_memory_mib "$eif" "$model_dir/model.onnx")
    cpus=$(enclave_cpus)
    args=(run-enclave --eif-path "$eif" --memory "$mem" --cpu-count "$cpus" --enclave-cid "$cid")
    say "$NITRO_CLI ${args[*]}"
    if ! out=$("$NITRO_CLI" "${args[@]}" 2>"$state_dir/run-enclave.err"); then
        cat "$state_dir/run-enclave.err" >&2
        grep -qF '[ E29 ]' "$state_dir/run-enclave.err" || die "nitro-cli run-enclave failed"
        say "run-enclave failed with E29, usually transient right after a stop: once more in 2 s"
        sleep 2
        out=$("$NITRO_CLI" "${args[@]}") || die "nitro-cli run-enclave failed twice"
    fi
    id=$(json_value EnclaveID /dev/stdin <<<"$out")
    [ -n "$id" ] || die "nitro-cli run-enclave printed no EnclaveID: $out"
    echo "$id" >"$id_file"
    say "enclave $id started (CID $cid, $mem MiB, $cpus CPUs)"
    trap 'say "stopping"; terminate_ours; exit 0' TERM INT
    failures=0
    while :; do
        sleep "$interval" &
        wait $! || true
        if ! running_enclave_ids 2>/dev/null | grep -qxF "$id"; then
            say "enclave $id is no longer running"
            rm -f "$id_file"
            exit 1
        fi
        if "$parent_bin" ping "$secure" --timeout 2 >/dev/null 2>&1; then
            failures=0
        else
            failures=$((failures + 1))
            say "the enclave's model server did not answer a ping ($failures of $max_failures)"
            [ "$failures" -lt "$max_failures" ] || exit 1
        fi
    done
    ;;
ready)
    say "waiting up to ${ping_timeout}s for the model server in the enclave ($secure)"
    "$parent_bin" ping "$secure" --timeout "$ping_timeout" ||
        die "the enclave's model server did not answer at $secure within ${ping_timeout}s"
    say "the enclave's model server answers at $secure"
    ;;
stop)
    terminate_ours
    ;;
*)
    die "usage: enclave-service.sh run|ready|stop"
    ;;
esac
