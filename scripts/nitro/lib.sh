# Shared helpers for the Nitro scripts (sourced, not run). Every script is called by
# mk/nitro.mk with its settings in the environment; defaults here match the Makefile's.
#
# Memory sizing, in one place (scripts/nitro/lib.sh: enclave_memory_mib, server_mib), the
# "Memory budget" of docs/DEPLOY.md:
#   nitro-cli refuses to start an enclave with less than 4 x the EIF file size
#   (ENCLAVE_MEMORY_EIF_SIZE_RATIO in its resource manager). Beyond that floor the enclave
#   holds the kernel and its own needs (KERNEL_MIB, 64), the root file system unpacked from
#   the EIF (about the EIF's size), and the model server, whose every input is bounded by
#   the budgets in shared/src/limits.rs:
#     server = 3 x model (the file, tract's optimised plan, its packed weights)
#              + SERVER_BASE_MIB (48: binary, labels, stacks, allocator)
#              + workers x IMAGE_BUDGET_MIB (64, IMAGE_MEMORY_BUDGET: one image per worker)
#              + FRAME_BUDGET_MIB (129, FRAME_MEMORY_BUDGET: 8 frames of 16 MiB + 64 KiB)
#              + SERVER_SLACK_MIB (32: connection threads, allocator slack)
#   with one worker per enclave CPU (ENCLAVE_CPUS). enclave/tests/hostile_frames.rs runs the
#   server under this budget (peak RSS asserted, and inside a memory cgroup capped at it);
#   shared/tests/docs.rs checks the numbers here against limits.rs.
#   memory = round_up(max(ceil(4 x EIF), EIF + 64 + server), 256) MiB.

set -euo pipefail

MIB=$((1024 * 1024))
EIF_SIZE_RATIO=4
MODEL_RUNTIME_FACTOR=3
SERVER_BASE_MIB=48
IMAGE_BUDGET_MIB=64
FRAME_BUDGET_MIB=129
SERVER_SLACK_MIB=32
KERNEL_MIB=64
MEMORY_ALIGN_MIB=256

NITRO_CLI=${NITRO_CLI:-nitro-cli}
SYSTEMCTL=${SYSTEMCTL:-systemctl}
DOCKER=${DOCKER:-docker}
ALLOCATOR_SERVICE=nitro-enclaves-allocator.service

# What the scripts read from the machine. The defaults are the real places; tests/nitro points
# them at files of its own to model another machine (a 4-vCPU instance, no Nitro device, ...).
CPU_SYSFS=${CPU_SYSFS:-/sys/devices/system/cpu}
UNPRIVILEGED_PORT_FILE=${UNPRIVILEGED_PORT_FILE:-/proc/sys/net/ipv4/ip_unprivileged_port_start}
NITRO_DEVICE=${NITRO_DEVICE:-/dev/nitro_enclaves}
IMDS_URL=${IMDS_URL:-http://169.254.169.254}
ALLOCATOR_YAML=${ALLOCATOR_YAML:-/etc/nitro_enclaves/allocator.yaml}
MEMINFO=${MEMINFO:-/proc/meminfo}
# The effective user comes from `id -u` / `id -nG` (never $EUID), so that tests/nitro, which
# runs as root, can act as an ordinary user with a fake `id` first on PATH.

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
    local eif=$1 model=$2 floor need
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
    need=$(($(file_mib "$eif") + KERNEL_MIB + $(server_mib "$model" "${ENCLAVE_CPUS:-2}")))
    [ "$need" -ge "$floor" ] || need=$floor
    round_up "$need" "$MEMORY_ALIGN_MIB"
}

# server_mib MODEL_FILE WORKERS: the model server's memory budget (the formula above).
server_mib() {
    local workers=${2:-2}
    is_uint "$workers" || workers=2
    echo $((MODEL_RUNTIME_FACTOR * $(file_mib "$1") + SERVER_BASE_MIB + workers * IMAGE_BUDGET_MIB \
        + FRAME_BUDGET_MIB + SERVER_SLACK_MIB))
}

# The size of the public model server (on the parent instance): the same binary and model, so
# the same budget, with two workers. allocator.sh and preflight.sh check MemTotal against
# enclave + PARENT_RESERVE_MIB + this.
public_server_mib() {
    server_mib "$1" 2
}

# memory_problem MEM MODEL_FILE: empty if MemTotal holds the enclave's MEM MiB plus what the
# instance keeps (PARENT_RESERVE_MIB for the system, docker and the front, and the public
# model server), else why not.
memory_problem() {
    local mem=$1 total_kib total public reserve=${PARENT_RESERVE_MIB:-1024}
    total_kib=$(sed -n 's/^MemTotal:[[:space:]]*\([0-9]*\) kB/\1/p' "$MEMINFO" 2>/dev/null)
    is_uint "${total_kib:-x}" || { echo "cannot read MemTotal from $MEMINFO"; return 0; }
    total=$((total_kib / 1024))
    public=$(public_server_mib "$2")
    if [ "$total" -lt $((mem + reserve + public)) ]; then
        echo "this instance has $total MiB of memory; the enclave needs $mem MiB and the parent keeps" \
            "$((reserve + public)) MiB ($reserve MiB for the system + $public MiB for the public" \
            "model server): use a larger instance type or set ENCLAVE_MEMORY_MIB / PARENT_RESERVE_MIB"
    fi
}

# need_release_inputs EIF IMAGE_BIN BIN_DIR MODEL_DIR MODEL: dies naming the first build output
# that `make dist` and `make install` need and is missing, with the make target that makes it.
need_release_inputs() {
    local eif=$1 image_bin=$2 bin_dir=$3 model_dir=$4 model=$5 f
    [ -f "$eif" ] || die "EIF missing: $eif (run 'make eif' first)"
    [ -x "$image_bin" ] || die "binary missing: $image_bin, the enclave image's server (run 'make eif' first)"
    [ -x "$bin_dir/parent" ] || die "binary missing: $bin_dir/parent (run 'make build' first)"
    for f in model.onnx labels.txt manifest.txt; do
        [ -f "$model_dir/$f" ] || die "model file missing: $model_dir/$f (run 'make model MODEL=$model')"
    done
}

is_root() {
    [ "$(id -u)" = 0 ]
}

# Rewriting allocator.yaml (and restarting its service) needs root and a writable directory
# (the nearest existing one, if /etc/nitro_enclaves is not there yet).
can_change_allocator() {
    local d
    d=$(dirname "$ALLOCATOR_YAML")
    while [ ! -d "$d" ] && [ "$d" != / ]; do d=$(dirname "$d"); done
    is_root && [ -w "$d" ]
}

# Number of CPUs in a kernel CPU list ("0-3,8,10-11" -> 7).
cpu_list_count() {
    local n=0 part parts
    IFS=, read -ra parts <<<"$1"
    for part in "${parts[@]}"; do
        if [[ $part =~ ^([0-9]+)-([0-9]+)$ ]]; then
            n=$((n + BASH_REMATCH[2] - BASH_REMATCH[1] + 1))
        elif [[ $part =~ ^[0-9]+$ ]]; then
            n=$((n + 1))
        fi
    done
    echo "$n"
}

# "PRESENT_CPUS THREADS_PER_CORE" of this machine (CPU 0's siblings give the threads per core;
# present CPUs include those already offlined for enclaves); nothing if sysfs cannot tell.
cpu_topology() {
    local present siblings total tpc
    present=$(cat "$CPU_SYSFS/present" 2>/dev/null) || return 0
    siblings=$(cat "$CPU_SYSFS/cpu0/topology/thread_siblings_list" 2>/dev/null) || return 0
    total=$(cpu_list_count "$present")
    tpc=$(cpu_list_count "$siblings")
    [ "$total" -ge 1 ] && [ "$tpc" -ge 1 ] || return 0
    echo "$total $tpc"
}

# cpu_problem N: empty if N enclave CPUs suit this machine, else why not. The allocator gives
# enclaves whole cores only (cpu_count must be a multiple of the threads per core) and never
# CPU 0 or its siblings (nitro-enclaves-allocator; the driver checks the same).
cpu_problem() {
    local cpus=$1 topo total tpc max lower
    topo=$(cpu_topology)
    [ -n "$topo" ] || return 0
    read -r total tpc <<<"$topo"
    max=$((total - tpc))
    if [ $((cpus % tpc)) -ne 0 ]; then
        lower=$((cpus / tpc * tpc))
        if [ "$lower" -gt 0 ]; then lower="$lower or $((lower + tpc))"; else lower=$tpc; fi
        echo "ENCLAVE_CPUS=$cpus is not a multiple of $tpc, the threads per core of this instance:" \
            "enclaves get whole cores, so use $lower"
    elif [ "$cpus" -gt "$max" ]; then
        if [ "$max" -lt "$tpc" ]; then
            echo "this instance has $total CPUs and CPU 0's core ($tpc CPUs) stays with the instance:" \
                "none is left for an enclave; use an instance type with at least $((2 * tpc)) vCPUs"
        else
            echo "ENCLAVE_CPUS=$cpus is too many: this instance has $total CPUs and CPU 0's core ($tpc CPUs)" \
                "stays with the instance, so at most $max (or use a larger instance type)"
        fi
    fi
}

enclave_cpus() {
    local cpus=${ENCLAVE_CPUS:-2} problem
    is_uint "$cpus" && [ "$cpus" -ge 1 ] || die "ENCLAVE_CPUS must be a positive number, got '$cpus'"
    problem=$(cpu_problem "$cpus")
    [ -z "$problem" ] || die "$problem"
    echo "$cpus"
}

# Reads a top-level `key: value` from an allocator.yaml (the allocator's own parser is as simple).
yaml_value() {
    [ -f "$1" ] || return 0
    sed -n "s/^$2:[[:space:]]*\"\\{0,1\\}\\([^\"#[:space:]]*\\).*/\\1/p" "$1" | tail -n 1
}

# allocator_reserves_enough MEM CPUS: allocator.yaml already reserves at least MEM MiB and CPUS.
allocator_reserves_enough() {
    local have_mem have_cpus
    have_mem=$(yaml_value "$ALLOCATOR_YAML" memory_mib)
    have_cpus=$(yaml_value "$ALLOCATOR_YAML" cpu_count)
    is_uint "${have_mem:-x}" && is_uint "${have_cpus:-x}" && [ "$have_mem" -ge "$1" ] && [ "$have_cpus" -ge "$2" ]
}

# Reads `"Key": "value"` or `"Key": number` from nitro-cli's pretty-printed JSON (first match).
json_value() {
    sed -n "s/^[[:space:]]*\"$1\":[[:space:]]*\"\\{0,1\\}\\([^\",]*\\)\"\\{0,1\\},\\{0,1\\}[[:space:]]*\$/\\1/p" "$2" | head -n 1
}

# What `make eif` and `make eif-docker` print at the end: the EIF, its size, its PCRs, the binary
# the public server shares with it, a line of the route's own (LINE, if not empty) and the
# enclave memory `make run` will reserve.
print_eif_summary() { # EIF MODEL_DIR MEASUREMENTS IMAGE_BIN [LINE]
    local eif=$1 model_dir=$2 measurements=$3 image_bin=$4 line=${5:-}
    echo
    echo "EIF:          $eif"
    echo "EIF size:     $(stat -c %s "$eif") bytes ($(file_mib "$eif") MiB; model.onnx is $(stat -c %s "$model_dir/model.onnx") bytes)"
    echo "PCR0 (image): $(json_value PCR0 "$measurements")"
    echo "PCR1 (kernel):$(printf ' %s' "$(json_value PCR1 "$measurements")")"
    echo "PCR2 (app):   $(json_value PCR2 "$measurements")"
    echo "Measurements: $measurements"
    echo "Binary:       $image_bin ($(stat -c %s "$image_bin") bytes, sha256 $(sha256sum "$image_bin" | cut -d' ' -f1)), also the public server's"
    [ -z "$line" ] || echo "$line"
    echo "Enclave memory 'make run' will use: $(enclave_memory_mib "$eif" "$model_dir/model.onnx") MiB" \
        "(at least $(eif_min_mib "$eif") MiB = 4 x EIF)"
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

# pid_alive FILE: the process whose pid FILE holds is alive and is still the one run.sh started.
# run.sh records its arguments, one a line, in FILE's .cmdline sibling; they must end
# /proc/PID/cmdline (after a reboot the pid may belong to another program, which must not be
# signalled; a script's interpreter may come first). /proc shows other users' processes too, so
# `make status` without sudo sees root's (where kill -0 fails with EPERM). A pid file without
# .cmdline (older runs): alive if kill -0 succeeds or fails with EPERM.
pid_alive() {
    local file=$1 pid want have n err
    [ -f "$file" ] || return 1
    pid=$(head -n 1 "$file")
    is_uint "$pid" || return 1
    want=${file%.pid}.cmdline
    if [ ! -f "$want" ]; then
        err=$(kill -0 "$pid" 2>&1) && return 0
        [[ $err == *"not permitted"* ]]
        return
    fi
    [ -r "/proc/$pid/cmdline" ] || return 1
    have=$(tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
    [ -n "$have" ] || return 1   # a zombie
    n=$(wc -l <"$want")
    [ "$(printf '%s\n' "$have" | tail -n "$n" | sed '1s|.*/||')" = "$(sed '1s|.*/||' "$want")" ]
}

# pid_stale FILE: FILE names a live process that is not ours (a reused pid).
pid_stale() {
    local pid
    [ -f "$1" ] && [ -f "${1%.pid}.cmdline" ] || return 1
    pid=$(head -n 1 "$1")
    is_uint "$pid" && [ -d "/proc/$pid" ] && ! pid_alive "$1"
}

# stop_pidfile FILE NAME: SIGTERM, wait up to 10 s, then SIGKILL; removes the file. A stale pid
# file (its pid now another program's) is removed without signalling anything.
stop_pidfile() {
    local file=$1 name=$2 pid err
    if ! pid_alive "$file"; then
        if pid_stale "$file"; then
            say "$name: pid $(head -n 1 "$file") in $file is now another program (a stale pid file): not signalled"
        fi
        rm -f "$file" "${file%.pid}.cmdline"
        return 0
    fi
    pid=$(head -n 1 "$file")
    if ! err=$(kill -TERM "$pid" 2>&1); then
        if [[ $err == *"not permitted"* ]]; then
            die "cannot stop the $name (pid $pid): it belongs to another user (root after 'sudo make run'): use 'sudo make stop'"
        fi
    fi
    for _ in $(seq 1 100); do   # until it is gone and reaped
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if pid_alive "$file"; then
        say "$name (pid $pid) ignored SIGTERM for 10 s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    say "stopped $name (pid $pid)"
    rm -f "$file" "${file%.pid}.cmdline"
}

# The files `make eif` takes from the Nitro blobs directory (aws-nitro-enclaves-cli's
# /usr/share/nitro_enclaves/blobs): the enclave kernel, its command line, AWS's init and the
# NSM driver. missing_blobs DIR prints what is missing and what to do (nothing if complete).
NITRO_BLOB_FILES="bzImage cmdline init nsm.ko"
missing_blobs() {
    local dir=$1 f missing=
    for f in $NITRO_BLOB_FILES; do
        [ -f "$dir/$f" ] || missing="$missing $f"
    done
    [ -n "$missing" ] || return 1
    echo "Nitro blobs missing in $dir:$missing (install aws-nitro-enclaves-cli-devel, or set NITRO_BLOBS" \
        "to a directory with $(echo "$NITRO_BLOB_FILES" | sed 's/ /, /g'))"
}
