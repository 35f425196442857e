#!/usr/bin/env bash
# Checks what a Nitro host needs before anything starts, one line each: "ok" or what to do.
# Changes nothing (it only reads files and asks nitro-cli, systemctl, docker and df).
#   preflight.sh        everything (`make preflight`)
#   preflight.sh eif    what `make eif` needs: the Nitro blobs (NITRO_BLOBS), Python >= 3.11,
#                       free disk; nitro-cli only if installed (it cross-checks the PCRs)
#   preflight.sh eif-docker  what `make eif-docker` needs: nitro-cli, Docker, Python, free disk
#   preflight.sh run    what `make run` needs: nitro-cli, /dev/nitro_enclaves, root or the `ne`
#                       group, the allocator service, the CPU count rule, memory, the port
# Exits 1 when a check fails. Env: as run.sh and eif.sh, plus BUILD_DISK_MIB (free space the
# build needs beside the sources, 2048) and DOCKER_DISK_MIB (in Docker's data root, 4096).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd -P)
. "$here/lib.sh"

mode=${1:-all}
case $mode in all | eif | eif-docker | run) ;; *) die "usage: $0 [all|eif|eif-docker|run]" ;; esac
want() { [ "$mode" = all ] || [[ " $* " == *" $mode "* ]]; }
blobs=${NITRO_BLOBS:-/usr/share/nitro_enclaves/blobs}

eif=${EIF:-build/enclave.eif}
model_dir=${MODEL_DIR:-models/${MODEL:-efficientnet-lite0}}
port=${PORT:-80}
build_disk_mib=${BUILD_DISK_MIB:-2048}
docker_disk_mib=${DOCKER_DISK_MIB:-4096}

failures=0
ok() { printf '  ok    %-11s %s\n' "$1" "${*:2}"; }
bad() {
    printf '  FAIL  %-11s %s\n' "$1" "${*:2}"
    failures=$((failures + 1))
}

echo "preflight ($([ "$mode" = all ] && echo "make eif and make run" || echo "make $mode")):"

# nitro-cli: everything for make run, build-enclave for make eif-docker; make eif only uses it,
# if installed, to cross-check the PCRs (describe-eif).
if ! command -v "$NITRO_CLI" >/dev/null 2>&1; then
    if [ "$mode" = eif ]; then
        ok nitro-cli "not installed: 'make eif' builds without it (the PCRs are not cross-checked)"
    else
        bad nitro-cli "not found: 'sudo dnf install -y aws-nitro-enclaves-cli aws-nitro-enclaves-cli-devel'" \
            "(Amazon Linux 2023; see docs/DEPLOY.md)"
    fi
elif version=$("$NITRO_CLI" --version 2>&1) && [ -n "$version" ]; then
    ok nitro-cli "$(head -n 1 <<<"$version")"
elif [ "$mode" = eif ]; then
    ok nitro-cli "'$NITRO_CLI --version' failed: 'make eif' builds without it (PCRs not cross-checked; root or the 'ne' group needed)"
else
    # It opens its log (/var/log/nitro_enclaves, group ne) before anything else.
    bad nitro-cli "'$NITRO_CLI --version' failed ($(tail -n 1 <<<"$version")): root or the 'ne' group" \
        "(log in again after usermod) is needed; else reinstall aws-nitro-enclaves-cli"
fi

if want run; then
    if [ -e "$NITRO_DEVICE" ]; then
        ok device "$NITRO_DEVICE present"
    else
        bad device "$NITRO_DEVICE missing: launch the instance with enclaves enabled" \
            "(--enclave-options 'Enabled=true'; it cannot be switched on later) and install aws-nitro-enclaves-cli"
    fi

    user=$(id -un 2>/dev/null || echo "uid $(id -u)")
    if is_root; then
        ok user "root"
    elif [[ " $(id -nG) " == *" ne "* ]]; then
        ok user "$user, in the 'ne' group (enough for nitro-cli; port and allocator below)"
    else
        bad user "$user is neither root nor in the 'ne' group: use 'sudo make run', or" \
            "'sudo usermod -aG ne $user' and log in again"
    fi

    # Would make run have to change the allocator? That needs root, and a free-memory check.
    mem= change=
    cpus=${ENCLAVE_CPUS:-2}
    cpus_ok=
    if ! is_uint "$cpus" || [ "$cpus" -lt 1 ]; then
        bad CPUs "ENCLAVE_CPUS must be a positive number, got '$cpus'"
    elif problem=$(cpu_problem "$cpus") && [ -n "$problem" ]; then
        bad CPUs "$problem"
    else
        cpus_ok=1
        if topo=$(cpu_topology) && [ -n "$topo" ]; then
            read -r total tpc <<<"$topo"
            ok CPUs "ENCLAVE_CPUS=$cpus of $total ($tpc threads per core; CPU 0's core stays with the instance)"
        else
            ok CPUs "ENCLAVE_CPUS=$cpus (CPU topology not readable here: the allocator will check)"
        fi
    fi
    if [ ! -f "$eif" ] || [ ! -f "$model_dir/model.onnx" ]; then
        ok memory "the enclave's share is known once 'make eif' has built $eif (512 MiB for EfficientNet-Lite0)"
    elif ! mem=$(enclave_memory_mib "$eif" "$model_dir/model.onnx" 2>&1); then
        bad memory "${mem#*error: }"
        mem=
    elif problem=$(memory_problem "$mem" "$model_dir/model.onnx") && [ -n "$problem" ]; then
        bad memory "$problem"
    else
        total_kib=$(sed -n 's/^MemTotal:[[:space:]]*\([0-9]*\) kB/\1/p' "$MEMINFO")
        ok memory "$((total_kib / 1024)) MiB: enclave $mem MiB + instance ${PARENT_RESERVE_MIB:-1024} MiB" \
            "+ public model server $(public_server_mib "$model_dir/model.onnx") MiB"
    fi
    if [ -n "$mem" ] && [ -n "$cpus_ok" ] && ! allocator_reserves_enough "$mem" "$cpus"; then
        change=1
    fi

    have_mem=$(yaml_value "$ALLOCATOR_YAML" memory_mib)
    have_cpus=$(yaml_value "$ALLOCATOR_YAML" cpu_count)
    active=$("$SYSTEMCTL" is-active "$ALLOCATOR_SERVICE" 2>/dev/null || true)
    reserves="reserves ${have_mem:-?} MiB, ${have_cpus:-?} CPUs${mem:+ (needs $mem MiB, $cpus CPUs)}"
    if [ -n "$change" ]; then
        if can_change_allocator; then
            ok allocator "$ALLOCATOR_SERVICE ${active:-unknown}; $reserves: 'make run' rewrites $ALLOCATOR_YAML and restarts it"
        else
            bad allocator "$reserves: 'make run' must rewrite $ALLOCATOR_YAML and restart $ALLOCATOR_SERVICE," \
                "which needs root: use 'sudo make run'"
        fi
    elif [ "$active" = active ]; then
        ok allocator "$ALLOCATOR_SERVICE active; $reserves"
    else
        bad allocator "$ALLOCATOR_SERVICE is ${active:-unknown}, so nothing is reserved for enclaves:" \
            "'sudo systemctl enable --now $ALLOCATOR_SERVICE' (or 'sudo make allocator'); 'journalctl -u $ALLOCATOR_SERVICE' says why"
    fi

    start=$(cat "$UNPRIVILEGED_PORT_FILE" 2>/dev/null || echo 1024)
    if ! is_uint "$port"; then
        bad port "PORT must be a number, got '$port'"
    elif [ "$port" -lt "$start" ] && ! is_root; then
        bad port "$port is below $start (net.ipv4.ip_unprivileged_port_start), which needs root:" \
            "use 'sudo make run' or 'make run PORT=8080'"
    elif (exec 2>/dev/null; timeout 2 bash -c ": </dev/tcp/127.0.0.1/$port"); then
        bad port "something already listens on port $port (a 'make dev'? 'make stop'?): stop it or choose another PORT"
    else
        ok port "$port free$(is_root || echo " and allowed without root (from $start up)")"
    fi
fi

if want eif; then
    if problem=$(missing_blobs "$blobs"); then
        bad blobs "$problem"
    else
        ok blobs "$blobs has $(echo "$NITRO_BLOB_FILES" | sed 's/ /, /g')"
    fi
fi

if want eif eif-docker; then
    docker_root=
    if [ "$mode" != eif-docker ]; then
        :
    elif ! command -v "$DOCKER" >/dev/null 2>&1; then
        bad docker "not found: 'sudo dnf install -y docker && sudo systemctl enable --now docker'" \
            "(the EIF is built from a docker image)"
    elif info=$("$DOCKER" info --format '{{.ServerVersion}} {{.DockerRootDir}}' 2>&1); then
        read -r dversion docker_root <<<"$info"
        ok docker "server $dversion, data in $docker_root"
    else
        bad docker "the daemon does not answer ($(echo "$info" | tail -n 1)): 'sudo systemctl enable --now docker'," \
            "and 'sudo usermod -aG docker \$USER' then log in again"
    fi

    if [ -f "$model_dir/model.onnx" ] && [ -f "$model_dir/manifest.txt" ]; then
        ok python "not needed: $model_dir is already prepared"
    elif py=$(PYTHON3=${PYTHON3:-} "$here/python.sh" 2>&1); then
        ok python "$py ($("$py" --version 2>&1)) for 'make model'"
    else
        bad python "'make model' needs Python 3.11 or newer;$(sed -n 's/^ *Found:/ found:/p' <<<"$py")" \
            "'sudo dnf install -y python3.12' (Amazon Linux 2023)"
    fi

    # Free space: the build beside the sources (target/, .venv, models/, build/) and Docker's
    # images and build cache (the Rust builder image alone is about 1.5 GB).
    df_of() { # DIR -> "AVAIL_KIB MOUNTPOINT" of the nearest existing directory
        local d=$1
        while [ ! -d "$d" ] && [ "$d" != / ]; do d=$(dirname "$d"); done
        df -Pk "$d" 2>/dev/null | awk 'NR == 2 { print $4, $6 }'
    }
    read -r src_kib src_mnt <<<"$(df_of "$PWD")" || true
    read -r dk_kib dk_mnt <<<"$(df_of "${docker_root:-/var/lib/docker}")" || true
    gib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1048576 }'; }
    disk_line() { # AVAIL_KIB MOUNT NEED_MIB WHAT
        if [ $(($1 / 1024)) -ge "$3" ]; then
            ok disk "$(gib "$1") GiB free on $2 ($4 needs $(gib $(($3 * 1024))) GiB)"
        else
            bad disk "$(gib "$1") GiB free on $2, $4 needs $(gib $(($3 * 1024))) GiB: grow the volume" \
                "(a root volume of 20 GiB or more, docs/DEPLOY.md) or free space ('docker system prune')"
        fi
    }
    if ! is_uint "${src_kib:-x}"; then
        ok disk "free space not readable with df here: the build needs about $(((build_disk_mib + docker_disk_mib) / 1024)) GiB"
    elif [ "$mode" != eif-docker ]; then
        disk_line "$src_kib" "$src_mnt" "$build_disk_mib" "the build"
    elif [ "$src_mnt" = "${dk_mnt:-$src_mnt}" ]; then
        disk_line "$src_kib" "$src_mnt" $((build_disk_mib + docker_disk_mib)) "the build with its docker images"
    else
        disk_line "$src_kib" "$src_mnt" "$build_disk_mib" "the build"
        if is_uint "${dk_kib:-x}"; then
            disk_line "$dk_kib" "$dk_mnt" "$docker_disk_mib" "Docker's images and build cache"
        fi
    fi
fi

if [ "$failures" -gt 0 ]; then
    echo "preflight: $failures check(s) failed (FAIL above); nothing was changed"
    exit 1
fi
echo "preflight: all checks passed"
