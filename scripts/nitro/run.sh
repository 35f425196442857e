#!/usr/bin/env bash
# Starts the appliance on a Nitro-enabled instance:
#   0. checks what it needs before starting anything (preflight.sh run: nitro-cli, the device,
#      root or the `ne` group, the allocator, CPUs, memory, the port) and that the CID is free;
#   1. reserves memory/CPUs with the allocator if the current reservation is too small;
#   2. nitro-cli run-enclave (the EIF's model server listens on vsock port 5005), once more
#      after 2 s if it fails with E29 (transient right after a stop, aws-nitro-enclaves-cli#433);
#      with DEBUG=1, `run-enclave --debug-mode --attach-console` runs in the background and
#      copies the console from the first moment to RUN_DIR/console.log;
#   3. waits, bounded, until that server answers `parent ping` over vsock;
#   4. starts the public model server (the binary copied out of the enclave image by `make eif`,
#      so both paths run the same bytes; a Unix socket) and the parent front,
#      in the background with pid files and logs in RUN_DIR, each under supervise.sh, which
#      restarts it with backoff if it dies (counted in RUN_DIR/NAME.restarts; the pid files are
#      the supervisors'); checks /ready; prints the URLs
#      (private address, and the public one when the instance metadata service gives one).
# Any failure stops what this run started and says why.
# Env: EIF, MODEL, MODEL_DIR, ENCLAVE_CID, SECURE_ADDR, PING_TIMEOUT, READY_TIMEOUT, RUN_DIR,
#      PORT, LISTEN_IP, BIN_DIR, DEBUG, ENCLAVE_CPUS, ENCLAVE_MEMORY_MIB (+ allocator.sh's),
#      SEALED_ONLY=1 (the parent refuses plaintext /predict-secure/: --sealed-only).
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
sealed_only=()
[ -z "${SEALED_ONLY:-}" ] || sealed_only=(--sealed-only)
[ "$debug" = 0 ] && debug=
e29_wait=2

[ -f "$eif" ] || die "EIF missing: $eif (run 'make eif' first)"
image_bin=${IMAGE_BIN:-$(dirname "$eif")/image-enclave}
[ -x "$image_bin" ] || die "binary missing: $image_bin, the enclave image's server (run 'make eif' first)"
[ -x "$bin_dir/parent" ] || die "binary missing: $bin_dir/parent (run 'make build' first)"
for f in model.onnx labels.txt manifest.txt; do
    [ -f "$model_dir/$f" ] || die "model file missing: $model_dir/$f (run 'make model MODEL=${MODEL:-<name>}')"
done
# nitro-cli takes 4 to 2^32 - 2 (0 would pick any free CID, which the front could not know).
[[ $cid =~ ^[0-9]{1,10}$ ]] && [ "$cid" -ge 4 ] && [ "$cid" -le 4294967294 ] ||
    die "ENCLAVE_CID must be a number from 4 to 4294967294 (1-3 are reserved, 3 is this instance;" \
        "0, 'any free CID', cannot be used since the front must know it), got '$cid'"
is_uint "$port" || die "PORT must be a number, got '$port'"
mkdir -p "${RUN_DIR:?RUN_DIR}"
run_dir=$(cd "$RUN_DIR" && pwd -P)
parent_bin=$(cd "$bin_dir" && pwd -P)/parent
enclave_bin=$(cd "$(dirname "$image_bin")" && pwd -P)/$(basename "$image_bin")

for p in parent public console; do
    ! pid_alive "$run_dir/$p.pid" || die "already running ($p, pid $(head -n 1 "$run_dir/$p.pid")): 'make stop' first"
done

"$here/preflight.sh" run || die "not started: fix what preflight found (FAIL above); nothing was changed"

described=$("$NITRO_CLI" describe-enclaves) ||
    die "'$NITRO_CLI describe-enclaves' failed: if an enclave process hangs, 'sudo $NITRO_CLI terminate-enclave --all'"
if [ -f "$run_dir/enclave-id" ] && enclave_ids <<<"$described" | grep -qxF "$(cat "$run_dir/enclave-id")"; then
    die "enclave $(cat "$run_dir/enclave-id") from an earlier 'make run' is still running: 'make stop' first"
fi
other=$(enclave_id_for_cid "$cid" <<<"$described" | head -n 1)
[ -z "$other" ] || die "CID $cid is already used by enclave $other, which this 'make run' did not start:" \
    "stop it ('sudo $NITRO_CLI terminate-enclave --enclave-id $other') or choose another CID (ENCLAVE_CID=17)"

"$here/allocator.sh" --if-needed
mem=$(enclave_memory_mib "$eif" "$model_dir/model.onnx")
cpus=$(enclave_cpus)

# Starts "$@" in its own session with stdin closed; the process writes its own pid before exec,
# and its arguments go to NAME.cmdline so that pid_alive can tell it from a later process with
# the same pid. Returns once it runs "$@" (or has already exited).
start_bg() {
    local name=$1
    shift
    rm -f "$run_dir/$name.pid"
    printf '%s\n' "$@" >"$run_dir/$name.cmdline"
    setsid bash -c 'echo $$ >"$0"; exec "$@"' "$run_dir/$name.pid" "$@" \
        </dev/null >"$run_dir/$name.log" 2>&1 &
    for _ in $(seq 1 50); do
        if [ -s "$run_dir/$name.pid" ]; then
            pid_alive "$run_dir/$name.pid" && return 0
            [ -d "/proc/$(head -n 1 "$run_dir/$name.pid")" ] || return 0
        fi
        sleep 0.1
    done
    die "could not start $name"
}

# Stops what this run started, then reports the error (last, where it is seen).
fail() {
    "$here/stop.sh" >&2 || true
    die "$@"
}

args=(run-enclave --eif-path "$eif" --memory "$mem" --cpu-count "$cpus" --enclave-cid "$cid")
[ -z "$debug" ] || args+=(--debug-mode --attach-console)

# One run-enclave; its JSON goes to RUN_DIR/enclave.json, its messages to stderr and to
# RUN_DIR/enclave.err. With DEBUG=1 it stays in the background: it prints the JSON, then the
# console until the enclave ends, all into RUN_DIR/console.log.
launch() {
    rm -f "$run_dir/enclave.json" "$run_dir/enclave.err"
    say "$NITRO_CLI ${args[*]}"
    if [ -z "$debug" ]; then
        if "$NITRO_CLI" "${args[@]}" >"$run_dir/enclave.json" 2>"$run_dir/enclave.err"; then
            cat "$run_dir/enclave.err" >&2
            return 0
        fi
        cat "$run_dir/enclave.err" >&2
        return 1
    fi
    start_bg console "$NITRO_CLI" "${args[@]}"
    # run-enclave prints the JSON once the enclave has booted (up to 180 s for a large EIF).
    for _ in $(seq 1 1500); do
        [ -z "$(json_value EnclaveID "$run_dir/console.log")" ] || break
        pid_alive "$run_dir/console.pid" || break
        sleep 0.2
    done
    sed -n '/^{/,/^}/p' "$run_dir/console.log" | sed '/^}/q' >"$run_dir/enclave.json"
    if [ -z "$(json_value EnclaveID "$run_dir/enclave.json")" ]; then
        grep -v '^{' "$run_dir/console.log" | tee "$run_dir/enclave.err" >&2 || true
        stop_pidfile "$run_dir/console.pid" "enclave console" >/dev/null
        return 1
    fi
}

if ! launch; then
    grep -qF '[ E29 ]' "$run_dir/enclave.err" 2>/dev/null ||
        die "nitro-cli run-enclave failed (its error code above; 'nitro-cli explain --error-code EXX' explains it)"
    say "run-enclave failed with E29 (an ioctl failure), which right after an enclave stopped is usually" \
        "transient (aws-nitro-enclaves-cli#433): trying once more in $e29_wait s"
    sleep "$e29_wait"
    launch || die "nitro-cli run-enclave failed twice (its error code above; 'nitro-cli explain --error-code EXX'" \
        "explains it; 'journalctl -u $ALLOCATOR_SERVICE' and 'dmesg' may say more)"
fi
id=$(json_value EnclaveID "$run_dir/enclave.json")
[ -n "$id" ] || die "nitro-cli run-enclave printed no EnclaveID (output in $run_dir/enclave.json)"
echo "$id" >"$run_dir/enclave-id"
say "enclave $id started (CID $cid, $mem MiB, $cpus CPUs${debug:+, debug mode: PCRs are zero})"
[ -z "$debug" ] || say "enclave console (from boot) is being copied to $run_dir/console.log"

say "waiting up to ${ping_timeout}s for the model server in the enclave ($secure)"
if ! "$parent_bin" ping "$secure" --timeout "$ping_timeout"; then
    if [ -n "$debug" ]; then
        sleep 1
        echo "---- last lines of the enclave console ($run_dir/console.log) ----" >&2
        tail -n 40 "$run_dir/console.log" >&2 || true
        if running_enclave_ids 2>/dev/null | grep -qxF "$id"; then
            die "the enclave's model server did not answer at $secure within ${ping_timeout}s." \
                "Debug mode: enclave $id is left running; its console continues in $run_dir/console.log," \
                "then 'make stop'."
        fi
        fail "the enclave's model server did not answer at $secure within ${ping_timeout}s, and enclave $id" \
            "has exited: its console above (all of it in $run_dir/console.log) shows why."
    fi
    fail "the enclave's model server did not answer at $secure within ${ping_timeout}s; enclave $id" \
        "terminated. Rerun with 'make run DEBUG=1' (debug mode: PCRs read as zero) to see the enclave" \
        "console ('$NITRO_CLI console --enclave-id ID')."
fi
say "the enclave's model server answers at $secure"

public_sock=$run_dir/public.sock
rm -f "$public_sock"
start_bg public "$here/supervise.sh" public --count-file "$run_dir/public.restarts" -- \
    "$enclave_bin" --listen "unix:$public_sock" --model "$model_dir"
if ! "$parent_bin" ping "unix:$public_sock" --timeout "$ping_timeout"; then
    tail -n 20 "$run_dir/public.log" >&2 || true
    fail "the public model server did not answer at unix:$public_sock within ${ping_timeout}s (log: $run_dir/public.log)"
fi
say "the public model server answers at unix:$public_sock"

start_bg parent "$here/supervise.sh" parent --count-file "$run_dir/parent.restarts" -- \
    "$parent_bin" --listen "$listen_ip:$port" --secure "$secure" --public "unix:$public_sock" ${sealed_only[@]+"${sealed_only[@]}"}
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

# The addresses: the private one (inside the VPC) and, if the instance has one, the public one
# from the instance metadata service (IMDSv2; 1 s timeouts, so off EC2 it costs 2 s at most).
host=$(hostname -I 2>/dev/null | awk '{print $1}')
host=${host:-127.0.0.1}
public_ip=
if token=$(curl -fsS --connect-timeout 1 --max-time 1 -X PUT "$IMDS_URL/latest/api/token" \
    -H 'X-aws-ec2-metadata-token-ttl-seconds: 60' 2>/dev/null); then
    public_ip=$(curl -fsS --connect-timeout 1 --max-time 1 -H "X-aws-ec2-metadata-token: $token" \
        "$IMDS_URL/latest/meta-data/public-ipv4" 2>/dev/null || true)
    [[ $public_ip =~ ^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$ ]] || public_ip=
fi
echo
echo "Ready: $ready"
echo "  private address: http://$host:$port/   (this instance's address inside its VPC)"
if [ -n "$public_ip" ]; then
    echo "  public address:  http://$public_ip:$port/   (from outside once the instance's security group" \
        "allows inbound TCP $port from your clients)"
fi
echo "  POST http://$host:$port/predict-secure/   (model server inside the enclave, CID $cid)"
echo "  POST http://$host:$port/predict-public/   (model server on this instance)"
echo "  GET  http://$host:$port/ready   GET http://$host:$port/metrics"
echo "Logs and pid files: $run_dir   Stop with 'make stop'."
