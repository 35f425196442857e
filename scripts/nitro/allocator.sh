#!/usr/bin/env bash
# Reserves the enclave's memory and CPUs: writes allocator.yaml (keeping a timestamped backup)
# and restarts nitro-enclaves-allocator.service.
#   allocator.sh          always write and restart
#   allocator.sh --if-needed   only when the current file reserves too little (used by run.sh)
# Env: EIF, MODEL_DIR, ENCLAVE_CPUS, ENCLAVE_MEMORY_MIB, ALLOCATOR_YAML, MEMINFO,
#      PARENT_RESERVE_MIB (memory the parent keeps besides the public model server).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd -P)
. "$here/lib.sh"

eif=${EIF:-build/enclave.eif}
model_dir=${MODEL_DIR:?MODEL_DIR}
yaml=${ALLOCATOR_YAML:-/etc/nitro_enclaves/allocator.yaml}
meminfo=${MEMINFO:-/proc/meminfo}
parent_reserve=${PARENT_RESERVE_MIB:-1024}

mem=$(enclave_memory_mib "$eif" "$model_dir/model.onnx")
cpus=$(enclave_cpus)

if [ "${1:-}" = --if-needed ]; then
    have_mem=$(yaml_value "$yaml" memory_mib)
    have_cpus=$(yaml_value "$yaml" cpu_count)
    if is_uint "${have_mem:-x}" && is_uint "${have_cpus:-x}" &&
        [ "$have_mem" -ge "$mem" ] && [ "$have_cpus" -ge "$cpus" ]; then
        say "allocator already reserves $have_mem MiB and $have_cpus CPUs (need $mem MiB, $cpus CPUs): unchanged"
        exit 0
    fi
fi

# The allocator cannot give CPUs back while an enclave holds them.
running=$(running_enclave_ids) || die "'$NITRO_CLI describe-enclaves' failed: is aws-nitro-enclaves-cli installed?"
if [ -n "$running" ]; then
    die "an enclave is running ($(echo "$running" | tr '\n' ' ')): nitro-enclaves-allocator.service" \
        "cannot be restarted while enclaves run. Stop it first ('make stop')."
fi

# The instance must keep enough for itself: OS, docker, the parent front and the public model
# server, which loads the same model (runtime share of the formula in lib.sh).
total_kib=$(sed -n 's/^MemTotal:[[:space:]]*\([0-9]*\) kB/\1/p' "$meminfo")
is_uint "${total_kib:-x}" || die "cannot read MemTotal from $meminfo"
total=$((total_kib / 1024))
public=$((MODEL_RUNTIME_FACTOR * $(file_mib "$model_dir/model.onnx") + RUNTIME_BASE_MIB))
need=$((mem + parent_reserve + public))
if [ "$total" -lt "$need" ]; then
    die "this instance has $total MiB of memory; the enclave needs $mem MiB and the parent keeps" \
        "$((parent_reserve + public)) MiB ($parent_reserve MiB for the system + $public MiB for the public" \
        "model server): use a larger instance type or set ENCLAVE_MEMORY_MIB / PARENT_RESERVE_MIB"
fi

mkdir -p "$(dirname "$yaml")"
backup=
if [ -f "$yaml" ]; then
    backup="$yaml.bak.$(date +%Y%m%d-%H%M%S)"
    cp -p "$yaml" "$backup"
fi
cat >"$yaml.tmp" <<YAML
---
# Written by 'make allocator' ($(date -u +%Y-%m-%dT%H:%M:%SZ)) for model $(basename "$model_dir").
# memory_mib = round_up(4 x EIF + 3 x model + 256, 256); see scripts/nitro/lib.sh.
memory_mib: $mem
cpu_count: $cpus
YAML
mv "$yaml.tmp" "$yaml"
say "wrote $yaml: memory_mib: $mem, cpu_count: $cpus${backup:+ (previous file saved as $backup)}"

if ! "$SYSTEMCTL" restart "$ALLOCATOR_SERVICE"; then
    if [ -n "$backup" ]; then cp -p "$backup" "$yaml"; else rm -f "$yaml"; fi
    die "'systemctl restart $ALLOCATOR_SERVICE' failed, so $yaml was put back as it was." \
        "See 'journalctl -u $ALLOCATOR_SERVICE': usually too little free memory for huge pages" \
        "(reboot, or lower ENCLAVE_MEMORY_MIB) or an enclave still running."
fi
say "restarted $ALLOCATOR_SERVICE: $mem MiB and $cpus CPUs reserved for enclaves"
