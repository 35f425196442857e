#!/usr/bin/env bash
# `make install` / `make uninstall`: the appliance as systemd services (deploy/systemd/), so that
# it survives crashes and reboots. Installed paths (FHS, PREFIX=/usr/local by default):
#   PREFIX/libexec/nitro-ml/   parent, enclave (the public model server: the binary copied out of
#                              the enclave image by `make eif`), enclave-service.sh,
#                              allocator.sh, lib.sh
#   PREFIX/share/nitro-ml/     enclave.eif, measurements.json (its PCRs), model/
#   PREFIX/share/doc/nitro-ml/ OPERATIONS.md, DEPLOY.md
#   UNITDIR (PREFIX/lib/systemd/system): nitro-ml.target, nitro-ml-{allocator,enclave,public,
#                              parent}.service
#   SYSCONFDIR/nitro-ml/nitro-ml.env (SYSCONFDIR=/etc): the settings; written only when absent
# Runtime: /run/nitro-ml-enclave (the enclave id), /run/nitro-ml-public (the socket); logs in
# the journal (journalctl -u 'nitro-ml-*').
#
#   install.sh install     copy, then (unless DESTDIR or NO_START=1) systemctl daemon-reload,
#                          enable nitro-ml.target and its units, restart nitro-ml.target
#   install.sh uninstall   (unless DESTDIR) disable and stop them, daemon-reload; remove the
#                          files, the settings too
# DESTDIR=DIR installs under DIR (packaging, tests): no root needed, systemctl is not called.
# Env: DESTDIR, PREFIX, SYSCONFDIR, UNITDIR, NO_START, EIF, IMAGE_BIN, MEASUREMENTS, BIN_DIR,
# MODEL_DIR, ENCLAVE_CID, ENCLAVE_CPUS, ENCLAVE_MEMORY_MIB, LISTEN_IP, PORT, PING_TIMEOUT.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd -P)
. "$here/lib.sh"
repo=$(cd "$here/../.." && pwd -P)

destdir=${DESTDIR:-}
prefix=${PREFIX:-/usr/local}
sysconfdir=${SYSCONFDIR:-/etc}
unitdir=${UNITDIR:-$prefix/lib/systemd/system}
libexec=$prefix/libexec/nitro-ml
data=$prefix/share/nitro-ml
doc=$prefix/share/doc/nitro-ml
units=(nitro-ml-allocator.service nitro-ml-enclave.service nitro-ml-public.service nitro-ml-parent.service)
manage=1
[ -z "$destdir" ] && [ "${NO_START:-0}" != 1 ] || manage=

subst() { # subst TEMPLATE: the template with the install's paths and settings
    sed -e "s|@LIBEXECDIR@|$prefix/libexec|g; s|@DATADIR@|$prefix/share|g" \
        -e "s|@DOCDIR@|$doc|g; s|@SYSCONFDIR@|$sysconfdir|g" \
        -e "s|@ENCLAVE_CID@|${ENCLAVE_CID:-16}|g; s|@ENCLAVE_CPUS@|${ENCLAVE_CPUS:-2}|g" \
        -e "s|@ENCLAVE_MEMORY_MIB@|${ENCLAVE_MEMORY_MIB:-}|g; s|@LISTEN_IP@|${LISTEN_IP:-0.0.0.0}|g" \
        -e "s|@PORT@|${PORT:-80}|g; s|@PING_TIMEOUT@|${PING_TIMEOUT:-60}|g" "$1"
}

case ${1:-} in
install)
    eif=${EIF:-build/enclave.eif}
    image_bin=${IMAGE_BIN:-$(dirname "$eif")/image-enclave}
    measurements=${MEASUREMENTS:-$(dirname "$eif")/measurements.json}
    bin_dir=${BIN_DIR:-target/release}
    model_dir=${MODEL_DIR:?MODEL_DIR}
    [ -n "$destdir" ] || is_root || die "make install writes $prefix, $sysconfdir and systemd units: run it as root (sudo make install)"
    need_release_inputs "$eif" "$image_bin" "$bin_dir" "$model_dir" "${MODEL:-<name>}"
    install -d -m 0755 "$destdir$libexec" "$destdir$data/model" "$destdir$doc" "$destdir$unitdir" \
        "$destdir$sysconfdir/nitro-ml"
    install -m 0755 "$bin_dir/parent" "$destdir$libexec/parent"
    install -m 0755 "$image_bin" "$destdir$libexec/enclave"
    install -m 0755 "$here/enclave-service.sh" "$here/allocator.sh" "$destdir$libexec/"
    install -m 0644 "$here/lib.sh" "$destdir$libexec/lib.sh"
    install -m 0644 "$eif" "$destdir$data/enclave.eif"
    if [ -f "$measurements" ]; then
        install -m 0644 "$measurements" "$destdir$data/measurements.json"
    else
        say "note: $measurements not found; the installed EIF's PCRs: nitro-cli describe-eif --eif-path $data/enclave.eif"
    fi
    install -m 0644 "$model_dir/model.onnx" "$model_dir/labels.txt" "$model_dir/manifest.txt" "$destdir$data/model/"
    install -m 0644 "$repo/docs/OPERATIONS.md" "$repo/docs/DEPLOY.md" "$destdir$doc/"
    for u in nitro-ml.target "${units[@]}"; do
        subst "$repo/deploy/systemd/$u" >"$destdir$unitdir/$u"
        chmod 0644 "$destdir$unitdir/$u"
    done
    env_file=$destdir$sysconfdir/nitro-ml/nitro-ml.env
    if [ -f "$env_file" ]; then
        say "kept $sysconfdir/nitro-ml/nitro-ml.env (settings); compare with deploy/systemd/nitro-ml.env.in"
    else
        subst "$repo/deploy/systemd/nitro-ml.env.in" >"$env_file"
        chmod 0644 "$env_file"
    fi
    say "installed into ${destdir:-/}: $libexec, $data, $unitdir, $sysconfdir/nitro-ml"
    if [ -n "$manage" ]; then
        "$SYSTEMCTL" daemon-reload
        "$SYSTEMCTL" enable nitro-ml.target "${units[@]}"
        say "starting nitro-ml.target (enclave boot and model load: up to a few minutes)"
        "$SYSTEMCTL" restart nitro-ml.target
        say "started: systemctl status 'nitro-ml-*'; journalctl -u 'nitro-ml-*' -f"
    fi
    ;;
uninstall)
    [ -n "$destdir" ] || is_root || die "make uninstall changes $prefix, $sysconfdir and systemd units: run it as root"
    if [ -n "$manage" ]; then
        "$SYSTEMCTL" disable --now nitro-ml.target "${units[@]}" || true
    fi
    rm -f "$destdir$libexec"/{parent,enclave,enclave-service.sh,allocator.sh,lib.sh}
    rm -f "$destdir$data"/{enclave.eif,measurements.json} "$destdir$data"/model/{model.onnx,labels.txt,manifest.txt}
    rm -f "$destdir$doc"/{OPERATIONS.md,DEPLOY.md}
    for u in nitro-ml.target "${units[@]}"; do rm -f "$destdir$unitdir/$u"; done
    rm -f "$destdir$sysconfdir/nitro-ml/nitro-ml.env"
    rmdir "$destdir$data/model" "$destdir$data" "$destdir$libexec" "$destdir$doc" \
        "$destdir$sysconfdir/nitro-ml" 2>/dev/null || true
    [ -z "$manage" ] || "$SYSTEMCTL" daemon-reload
    say "uninstalled from ${destdir:-/} (allocator.yaml left as it is)"
    ;;
*)
    die "usage: install.sh install|uninstall"
    ;;
esac
