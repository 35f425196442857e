#!/usr/bin/env bash
# Reserves the enclave's memory and CPUs: writes allocator.yaml (keeping a timestamped backup)
# and restarts nitro-enclaves-allocator.service.
#   allocator.sh          always write and restart
#   allocator.sh --if-needed   only when the current file reserves too little (used by run.sh)
# Needs root when it changes anything (checked first). Env: EIF, MODEL_DIR, ENCLAVE_CPUS,
# ENCLAVE_MEMORY_MIB, ALLOCATOR_YAML, MEMINFO, PARENT_RESERVE_MIB (memory the parent keeps
# besides the public model server).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd -P)
. "$here/lib.sh"

eif=${EIF:-build/enclave.eif}
model_dir=${MODEL_DIR:?MODEL_DIR}
yaml=$ALLOCATOR_YAML

mem=$(enclave_memory_mib "$eif" "$model_dir/model.onnx")
cpus=$(enclave_cpus)
have_mem=$(yaml_value "$yaml" memory_mib)
have_cpus=$(yaml_value "$yaml" cpu_count)

if [ "${1:-}" = --if-needed ] && allocator_reserves_enough "$mem" "$cpus"; then
    say "allocator already reserves $have_mem MiB and $have_cpus CPUs (need $mem MiB, $cpus CPUs): unchanged"
    exit 0
fi

# Rewriting /etc/nitro_enclaves/allocator.yaml and restarting a system service need root: say so
# now rather than fail half-way with 'Permission denied'.
if ! can_change_allocator; then
    die "the allocator must reserve $mem MiB and $cpus CPUs (it reserves ${have_mem:-?} MiB and" \
        "${have_cpus:-?} CPUs): that rewrites $yaml and restarts $ALLOCATOR_SERVICE, which needs root:" \
        "use 'sudo make run' (or 'sudo make allocator')"
fi

# The allocator cannot give CPUs back while an enclave holds them.
running=$(running_enclave_ids) || die "'$NITRO_CLI describe-enclaves' failed: is aws-nitro-enclaves-cli installed?"
if [ -n "$running" ]; then
    die "an enclave is running ($(echo "$running" | tr '\n' ' ')): nitro-enclaves-allocator.service" \
        "cannot be restarted while enclaves run. Stop it first ('make stop')."
fi

# The instance must keep enough for itself: OS, docker, the parent front and the public model
# server, which loads the same model (lib.sh: memory_problem).
problem=$(memory_problem "$mem" "$model_dir/model.onnx")
[ -z "$problem" ] || die "$problem"

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
    # The AWS allocator releases the old reservation (CPUs back online, huge pages freed) before
    # it makes the new one: putting the file back is not enough, it must run again with it.
    if [ -n "$backup" ]; then
        cp -p "$backup" "$yaml"
        say "the restart failed; $yaml is put back ($have_mem MiB, $have_cpus CPUs) and $ALLOCATOR_SERVICE" \
            "restarted with it, since the failed restart released the old reservation"
        if "$SYSTEMCTL" restart "$ALLOCATOR_SERVICE" &&
            [ "$("$SYSTEMCTL" is-active "$ALLOCATOR_SERVICE" 2>/dev/null)" = active ]; then
            state="the old reservation ($have_mem MiB, $have_cpus CPUs) is active again"
        else
            state="restarting with it failed too: NO memory or CPUs are reserved for enclaves now"
        fi
    else
        rm -f "$yaml"
        state="there was no earlier file, so nothing is reserved for enclaves now"
    fi
    die "'systemctl restart $ALLOCATOR_SERVICE' failed for memory_mib: $mem, cpu_count: $cpus;" \
        "$yaml was put back and $state. See 'journalctl -u $ALLOCATOR_SERVICE': usually too little" \
        "free memory for huge pages (reboot, or lower ENCLAVE_MEMORY_MIB) or an enclave still running."
fi
say "restarted $ALLOCATOR_SERVICE: $mem MiB and $cpus CPUs reserved for enclaves"
