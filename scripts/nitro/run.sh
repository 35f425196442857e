#!/usr/bin/env bash
# Starts the appliance on a Nitro-enabled instance:
#   1. reserves memory/CPUs with the allocator if the current reservation is too small;
#   2. nitro-cli run-enclave (the EIF's model server listens on vsock port 5005);
#   3. waits, bounded, until that server answers `parent ping` over vsock;
#   4. starts the public model server (the binary copied out of the enclave image by `make eif`,
#      so both paths run the same bytes; a Unix socket) and the parent front,
#      in the background with pid files and logs in RUN_DIR; checks /ready; prints the URLs.
# Any failure stops what this run started and says why.
# Env: EIF, MODEL, MODEL_DIR, ENCLAVE_CID, SECURE_ADDR, PING_TIMEOUT, READY_TIMEOUT, RUN_DIR,
#      PORT, LISTEN_IP, BIN_DIR, DEBUG, ENCLAVE_CPUS, ENCLAVE_MEMORY_MIB (+ allocator.sh's).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd -P)
. "$here/lib.sh"

eif=${EIF:-build/enclave.eif}
model_dir=${MODEL_DIR:?MODEL_DIR}
cid=${ENCLAVE_CID:-16}
secure=${SECURE_ADDR:-vsock:$cid:5005}
ping_timeout=${PING_TIMEOUT:-60}
ready_timeout=${READY_TIMEOUT:-15}
port=${PORT:-80}
listen_ip=${LISTEN_IP:-0.0.0.0}
bin_dir=${BIN_DIR:-target/release}
debug=${DEBUG:-}
[ "$debug" = 0 ] && debug=

[ -f "$eif" ] || die "EIF missing: $eif (run 'make eif' first)"
image_bin=${IMAGE_BIN:-$(dirname "$eif")/image-enclave}
[ -x "$image_bin" ] || die "binary missing: $image_bin, the enclave image's server (run 'make eif' first)"
[ -x "$bin_dir/parent" ] || die "binary missing: $bin_dir/parent (run 'make build' first)"
for f in model.onnx labels.txt manifest.txt; do
    [ -f "$model_dir/$f" ] || die "model file missing: $model_dir/$f (run 'make model MODEL=${MODEL:-<name>}')"
done
is_uint "$cid" && [ "$cid" -ge 4 ] || die "ENCLAVE_CID must be a number >= 4 (0-3 are reserved), got '$cid'"
is_uint "$port" || die "PORT must be a number, got '$port'"
mkdir -p "${RUN_DIR:?RUN_DIR}"
run_dir=$(cd "$RUN_DIR" && pwd -P)
parent_bin=$(cd "$bin_dir" && pwd -P)/parent
enclave_bin=$(cd "$(dirname "$image_bin")" && pwd -P)/$(basename "$image_bin")

for p in parent public console; do
    ! pid_alive "$run_dir/$p.pid" || die "already running ($p, pid $(cat "$run_dir/$p.pid")): 'make stop' first"
done
if [ -f "$run_dir/enclave-id" ] && running_enclave_ids | grep -qxF "$(cat "$run_dir/enclave-id")"; then
    die "enclave $(cat "$run_dir/enclave-id") from an earlier 'make run' is still running: 'make stop' first"
fi

"$here/allocator.sh" --if-needed
mem=$(enclave_memory_mib "$eif" "$model_dir/model.onnx")
cpus=$(enclave_cpus)

args=(run-enclave --eif-path "$eif" --memory "$mem" --cpu-count "$cpus" --enclave-cid "$cid")
[ -z "$debug" ] || args+=(--debug-mode)
say "$NITRO_CLI ${args[*]}"
"$NITRO_CLI" "${args[@]}" >"$run_dir/enclave.json" ||
    die "nitro-cli run-enclave failed (its error code above; 'nitro-cli explain --error-code EXX' explains it)"
id=$(json_value EnclaveID "$run_dir/enclave.json")
[ -n "$id" ] || die "nitro-cli run-enclave printed no EnclaveID (output in $run_dir/enclave.json)"
echo "$id" >"$run_dir/enclave-id"
say "enclave $id started (CID $cid, $mem MiB, $cpus CPUs${debug:+, debug mode: PCRs are zero})"

# Starts "$@" in its own session with stdin closed; the process writes its own pid before exec.
start_bg() {
    local name=$1
    shift
    setsid bash -c 'echo $$ >"$0"; exec "$@"' "$run_dir/$name.pid" "$@" \
        </dev/null >"$run_dir/$name.log" 2>&1 &
    for _ in $(seq 1 50); do [ -s "$run_dir/$name.pid" ] && return 0; sleep 0.1; done
    die "could not start $name"
}

# Stops what this run started, then reports the error (last, where it is seen).
fail() {
    "$here/stop.sh" >&2 || true
    die "$@"
}

if [ -n "$debug" ]; then
    start_bg console "$NITRO_CLI" console --enclave-id "$id"
    say "enclave console is being copied to $run_dir/console.log"
fi

say "waiting up to ${ping_timeout}s for the model server in the enclave ($secure)"
if ! "$parent_bin" ping "$secure" --timeout "$ping_timeout"; then
    if [ -n "$debug" ]; then
        sleep 1
        echo "---- last lines of the enclave console ($run_dir/console.log) ----" >&2
        tail -n 40 "$run_dir/console.log" >&2 || true
        die "the enclave's model server did not answer at $secure within ${ping_timeout}s." \
            "Debug mode: enclave $id is left running; watch it with '$NITRO_CLI console --enclave-id $id'," \
            "then 'make stop'."
    fi
    fail "the enclave's model server did not answer at $secure within ${ping_timeout}s; enclave $id" \
        "terminated. Rerun with 'make run DEBUG=1' (debug mode: PCRs read as zero) to see the enclave" \
        "console ('$NITRO_CLI console --enclave-id ID')."
fi
say "the enclave's model server answers at $secure"

public_sock=$run_dir/public.sock
rm -f "$public_sock"
start_bg public "$enclave_bin" --listen "unix:$public_sock" --model "$model_dir"
if ! "$parent_bin" ping "unix:$public_sock" --timeout "$ping_timeout"; then
    tail -n 20 "$run_dir/public.log" >&2 || true
    fail "the public model server did not answer at unix:$public_sock within ${ping_timeout}s (log: $run_dir/public.log)"
fi
say "the public model server answers at unix:$public_sock"

start_bg parent "$parent_bin" --listen "$listen_ip:$port" --secure "$secure" --public "unix:$public_sock"
ready=
for _ in $(seq 1 $((ready_timeout * 5))); do
    if ready=$(curl -fsS --max-time 2 "http://127.0.0.1:$port/ready" 2>/dev/null); then break; fi
    ready=
    pid_alive "$run_dir/parent.pid" || break
    sleep 0.2
done
if [ -z "$ready" ]; then
    tail -n 20 "$run_dir/parent.log" >&2 || true
    fail "the parent front did not answer http://127.0.0.1:$port/ready within ${ready_timeout}s (log: $run_dir/parent.log)"
fi

host=$(hostname -I 2>/dev/null | awk '{print $1}')
host=${host:-127.0.0.1}
echo
echo "Ready: $ready"
echo "  POST http://$host:$port/predict-secure/   (model server inside the enclave, CID $cid)"
echo "  POST http://$host:$port/predict-public/   (model server on this instance)"
echo "  GET  http://$host:$port/ready   GET http://$host:$port/metrics"
echo "Logs and pid files: $run_dir   Stop with 'make stop'."
