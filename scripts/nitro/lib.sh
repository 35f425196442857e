# Shared helpers for the Nitro scripts (sourced, not run). Every script is called by
# mk/nitro.mk with its settings in the environment; defaults here match the Makefile's.
#
# Memory sizing, in one place (scripts/nitro/lib.sh: enclave_memory_mib):
#   nitro-cli refuses to start an enclave with less than 4 x the EIF file size
#   (ENCLAVE_MEMORY_EIF_SIZE_RATIO in its resource manager): the EIF is copied into enclave
#   memory and its ramdisks are unpacked into the in-memory root file system.
#   On top of that the model server needs, at run time, about MODEL_RUNTIME_FACTOR (3) x the
#   model file: the bytes read from model.onnx, the decoded weights, and tract's optimised
#   (packed) copies; plus RUNTIME_BASE_MIB (256) for the kernel, the server, its worker
#   threads and their activations at batch size 1-8.
#   memory = round_up(ceil(4 x EIF) + 3 x model + 256, 256) MiB.

set -euo pipefail

MIB=$((1024 * 1024))
EIF_SIZE_RATIO=4
MODEL_RUNTIME_FACTOR=${MODEL_RUNTIME_FACTOR:-3}
RUNTIME_BASE_MIB=${RUNTIME_BASE_MIB:-256}
MEMORY_ALIGN_MIB=256

NITRO_CLI=${NITRO_CLI:-nitro-cli}
SYSTEMCTL=${SYSTEMCTL:-systemctl}
DOCKER=${DOCKER:-docker}
ALLOCATOR_SERVICE=nitro-enclaves-allocator.service

die() {
    printf '%s: error: %s\n' "${0##*/}" "$*" >&2
    exit 1
}

say() {
    printf '%s: %s\n' "${0##*/}" "$*"
}

is_uint() {
    [[ $1 =~ ^[0-9]+$ ]]
}

# ceil(bytes / MiB) of a file.
file_mib() {
    local bytes
    bytes=$(stat -c %s "$1")
    echo $(((bytes + MIB - 1) / MIB))
}

round_up() {
    echo $((($1 + $2 - 1) / $2 * $2))
}

# The smallest memory nitro-cli accepts for this EIF, in MiB.
eif_min_mib() {
    local bytes
    bytes=$(stat -c %s "$1")
    echo $(((EIF_SIZE_RATIO * bytes + MIB - 1) / MIB))
}

# enclave_memory_mib EIF MODEL_FILE: ENCLAVE_MEMORY_MIB if set (checked against the 4x floor),
# else the formula above.
enclave_memory_mib() {
    local eif=$1 model=$2 floor
    [ -f "$eif" ] || die "EIF missing: $eif (run 'make eif' first)"
    floor=$(eif_min_mib "$eif")
    if [ -n "${ENCLAVE_MEMORY_MIB:-}" ]; then
        is_uint "$ENCLAVE_MEMORY_MIB" || die "ENCLAVE_MEMORY_MIB must be a number of MiB, got '$ENCLAVE_MEMORY_MIB'"
        [ "$ENCLAVE_MEMORY_MIB" -ge "$floor" ] ||
            die "ENCLAVE_MEMORY_MIB=$ENCLAVE_MEMORY_MIB is below nitro-cli's minimum of 4 x EIF size = $floor MiB"
        echo "$ENCLAVE_MEMORY_MIB"
        return
    fi
    [ -f "$model" ] || die "model missing: $model (run 'make model MODEL=${MODEL:-<name>}' first)"
    round_up $((floor + MODEL_RUNTIME_FACTOR * $(file_mib "$model") + RUNTIME_BASE_MIB)) "$MEMORY_ALIGN_MIB"
}

enclave_cpus() {
    local cpus=${ENCLAVE_CPUS:-2}
    is_uint "$cpus" && [ "$cpus" -ge 1 ] || die "ENCLAVE_CPUS must be a positive number, got '$cpus'"
    echo "$cpus"
}

# Reads a top-level `key: value` from an allocator.yaml (the allocator's own parser is as simple).
yaml_value() {
    [ -f "$1" ] || return 0
    sed -n "s/^$2:[[:space:]]*\"\\{0,1\\}\\([^\"#[:space:]]*\\).*/\\1/p" "$1" | tail -n 1
}

# Reads `"Key": "value"` or `"Key": number` from nitro-cli's pretty-printed JSON (first match).
json_value() {
    sed -n "s/^[[:space:]]*\"$1\":[[:space:]]*\"\\{0,1\\}\\([^\",]*\\)\"\\{0,1\\},\\{0,1\\}[[:space:]]*\$/\\1/p" "$2" | head -n 1
}

# Prints the EnclaveIDs of running enclaves, one a line, from `nitro-cli describe-enclaves`.
running_enclave_ids() {
    "$NITRO_CLI" describe-enclaves | enclave_ids
}

# Filters: the EnclaveIDs in describe-enclaves output on stdin; the one whose CID is $1.
enclave_ids() {
    sed -n 's/^[[:space:]]*"EnclaveID":[[:space:]]*"\([^"]*\)".*/\1/p'
}
enclave_id_for_cid() {
    awk -v cid="$1" '
        /"EnclaveID":/ { id = $0; sub(/.*"EnclaveID":[[:space:]]*"/, "", id); sub(/".*/, "", id) }
        /"EnclaveCID":/ { c = $0; sub(/.*"EnclaveCID":[[:space:]]*/, "", c); sub(/[^0-9].*/, "", c);
                          if (c == cid) print id }'
}

pid_alive() {
    local pid
    [ -f "$1" ] || return 1
    pid=$(cat "$1")
    is_uint "$pid" && kill -0 "$pid" 2>/dev/null
}

# stop_pidfile FILE NAME: SIGTERM, wait up to 10 s, then SIGKILL; removes the file.
stop_pidfile() {
    local file=$1 name=$2 pid i
    if ! pid_alive "$file"; then
        rm -f "$file"
        return 0
    fi
    pid=$(cat "$file")
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        say "$name (pid $pid) ignored SIGTERM for 10 s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    say "stopped $name (pid $pid)"
    rm -f "$file"
}
