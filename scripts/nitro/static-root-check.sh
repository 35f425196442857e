#!/usr/bin/env bash
# Proves build/static/enclave is self-contained: runs it chrooted in an otherwise empty root
# holding only /enclave and /model/{model.onnx,labels.txt,manifest.txt} (no libc, no /proc,
# no /dev, no /etc), serving on a Unix socket inside that root; pings it from outside with
# `parent ping`; sends SIGTERM and checks it exits 0.
# Env: STATIC_BIN, MODEL_DIR, PARENT_BIN, PING_TIMEOUT.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd -P)
. "$here/lib.sh"

bin=${STATIC_BIN:-build/static/enclave}
model_dir=${MODEL_DIR:?MODEL_DIR}
parent=${PARENT_BIN:-target/release/parent}
timeout=${PING_TIMEOUT:-60}

[ -x "$bin" ] || die "static binary missing: $bin (run 'make static')"
[ -x "$parent" ] || die "parent binary missing: $parent (run 'make build')"
for f in model.onnx labels.txt manifest.txt; do
    [ -f "$model_dir/$f" ] || die "model file missing: $model_dir/$f (run 'make model MODEL=${MODEL:-<name>}')"
done
if readelf -l "$bin" | grep -q INTERP; then
    die "$bin asks for a program interpreter: it is dynamically linked"
fi

root=$(mktemp -d "${TMPDIR:-/tmp}/static-root.XXXXXX")
pid=
cleanup() {
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
    rm -rf "$root" "$root.log"
}
trap cleanup EXIT
mkdir -p "$root/model" "$root/run"
cp "$bin" "$root/enclave"
cp "$model_dir/model.onnx" "$model_dir/labels.txt" "$model_dir/manifest.txt" "$root/model/"
say "root contains: $(cd "$root" && find . -mindepth 1 | sort | tr '\n' ' ')"

# chroot(8) and unshare(1) exec their command, so $! is the server itself.
if [ "$(id -u)" -eq 0 ]; then
    chroot "$root" /enclave --listen unix:/run/enclave.sock --model /model 2>"$root.log" &
else
    unshare --map-root-user chroot "$root" /enclave --listen unix:/run/enclave.sock --model /model 2>"$root.log" &
fi
pid=$!

if ! "$parent" ping "unix:$root/run/enclave.sock" --timeout "$timeout"; then
    sed 's/^/  enclave: /' "$root.log" >&2 || true
    rm -f "$root.log"
    die "the static binary did not answer a ping within ${timeout}s in an empty root"
fi
say "ping answered by the static binary in an empty root"

kill -TERM "$pid"
rc=0
wait "$pid" || rc=$?
pid=
sed 's/^/  enclave: /' "$root.log"
rm -f "$root.log"
[ "$rc" -eq 0 ] || die "after SIGTERM the static binary exited with status $rc, expected 0"
say "ok: self-contained, served in an empty root, exited 0 on SIGTERM"
