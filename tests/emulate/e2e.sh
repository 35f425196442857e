#!/usr/bin/env bash
# The enclave image, booted as an enclave: the appliance exactly as `make emulate` runs it
# (scripts/dev.sh with EMULATE=EIF: tools/emulate boots the emulation EIF in QEMU, the parent
# reaches the model server over the guest's vsock through vhost-device-vsock's Unix socket), on a
# free port in a temporary RUN_DIR:
#   1. the guest's heartbeat (0xB7 on vsock port 9000) reached the launcher, and /ready is 200;
#   2. the model server in the guest logged its entropy line and listens on vsock:5005;
#   3. a photo sent to /predict-secure/ is classified in the guest, with the very answer the
#      public model server (the same program on the host) gives;
#   4. GET /attestation is 503 attestation_unavailable: the image has no development NSM and
#      QEMU 7.2 no NSM device, and the parent says so rather than answering from elsewhere;
#   5. the VM killed (SIGKILL to QEMU): the secure route answers 503 within a second, the public
#      route is unaffected;
#   6. the supervisor boots the enclave again and the same parent process serves the secure
#      route again, without a restart;
#   7. SIGTERM to the stack: it stops, and no QEMU, vhost-device-vsock or socket is left;
#   8. PCR2 of the emulation EIF equals the production EIF's (the same application ramdisk);
#   9. the same EIF booted by the launcher alone on a guest CPU without RDRAND/RDSEED: with the
#      virtio-rng device (standing in for the NSM's hardware RNG) the model server logs its
#      entropy line and answers a Ping through the hybrid-vsock transport (parent ping); without
#      it there is no entropy source, and the model server must stop at start (the VM powers
#      off, the launcher exits 4).
# Ends with "N passed, M failed" and exits non-zero if anything failed. Times are printed.
#
# Environment: BIN (parent, enclave, emulate; default target/debug), EIF (default
# build/emulate/enclave.eif, built with MODEL), MODEL (default tiny-test: the model is loaded
# under software emulation, where a real one takes much longer to load), EIF_TOOL (default
# target/release/eif), STATIC_BIN (the binary in the EIF; default build/static/enclave).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
BIN=${BIN:-target/debug}
EIF=${EIF:-build/emulate/enclave.eif}
MODEL=${MODEL:-tiny-test}
EIF_TOOL=${EIF_TOOL:-target/release/eif}
STATIC_BIN=${STATIC_BIN:-build/static/enclave}
image=testdata/chelsea.jpg

die() { echo "e2e.sh: $*" >&2; exit 1; }
for b in enclave parent emulate; do [ -x "$BIN/$b" ] || die "$BIN/$b is missing (cargo build --workspace --bins)"; done
[ -x "$EIF_TOOL" ] || die "$EIF_TOOL is missing (make eif-tool)"
[ -x "$STATIC_BIN" ] || die "$STATIC_BIN is missing (make static)"
[ -f "$EIF" ] || die "$EIF is missing (make eif-emulate MODEL=$MODEL)"
[ -f "$image" ] || die "$image is missing (make testdata)"

# Short paths: a Unix socket path has at most 107 bytes, and the launcher's are under RUN_DIR.
tmp=$(mktemp -d /tmp/emu-e2e.XXXXXX)
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
url=http://127.0.0.1:$port
run=$tmp/run
dev=
solo=
cleanup() {
  for pid in $dev $solo; do
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  # Whatever a failed step left (the launcher's children name our temporary folder).
  pkill -KILL -f "$tmp" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

. tests/emulate/lib.sh
status_of() { curl -s -o "$tmp/body" -w '%{http_code}' "$@" || true; }

t0=$(now)
BIN=$BIN MODEL=$MODEL PORT=$port RUN_DIR=$run EMULATE=$EIF READY_TIMEOUT=300 \
  scripts/dev.sh >"$tmp/dev.log" 2>&1 &
dev=$!
ready=0
for _ in $(seq 1 3000); do
  if curl -fsS -o /dev/null "$url/ready" 2>/dev/null; then ready=1; break; fi
  kill -0 "$dev" 2>/dev/null || break
  sleep 0.1
done
if [ "$ready" = 1 ]; then
  ok "/ready 200 after $(since "$t0") s (boot under emulation, model load included)"
else
  cat "$tmp/dev.log" >&2
  tail -n 30 "$run/emulate/console.log" 2>/dev/null >&2 || true
  die "the emulated stack was not ready"
fi

if grep -q "heartbeat" "$run/secure.log"; then ok "heartbeat: $(grep -m1 heartbeat "$run/secure.log")"
else bad "no heartbeat line in $run/secure.log"; fi

console=$run/emulate/console.log
if grep -q "^entropy: " "$console" && grep -q "listening on vsock:5005" "$console"; then
  ok "in the guest: $(grep -m1 '^entropy: ' "$console" | cut -c1-100); listening on vsock:5005"
else
  bad "the guest's console lacks the entropy or listening line"; tail -n 20 "$console" || true
fi

secure=$(curl -fsS --data-binary @"$image" -H 'Content-Type: image/jpeg' "$url/predict-secure/" | answer)
public=$(curl -fsS --data-binary @"$image" -H 'Content-Type: image/jpeg' "$url/predict-public/" | answer)
if [ -n "$secure" ] && [ "$secure" = "$public" ] && [[ "$secure" == *class_id* ]]; then
  ok "a photo classified over the guest's vsock, the same classes and scores as the public server's: ${secure:0:100}"
else
  bad "secure answer '${secure:0:300}' differs from public '${public:0:300}'"
fi

code=$(status_of "$url/attestation?nonce=$(python3 -c 'print("ab" * 32)')")
if [ "$code" = 503 ] && grep -q attestation_unavailable "$tmp/body"; then ok "GET /attestation: 503 attestation_unavailable (no NSM in emulation)"
else bad "GET /attestation: $code $(head -c 200 "$tmp/body")"; fi

parent_pid=$(cat "$run/parent.pid")
qemu_pid=$(cat "$run/emulate/qemu.pid")
kill -KILL "$qemu_pid"
t_kill=$(now)
code=000
for _ in $(seq 1 50); do
  code=$(status_of --data-binary @"$image" -H 'Content-Type: image/jpeg' "$url/predict-secure/")
  [ "$code" = 200 ] || break
  sleep 0.02
done
failed_after=$(since "$t_kill")
if [ "$code" = 503 ] && python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) < 1.0 else 1)" "$failed_after"; then
  ok "VM killed: /predict-secure/ 503 after $failed_after s ($(head -c 120 "$tmp/body"))"
else
  bad "VM killed: /predict-secure/ answered $code after $failed_after s"
fi
code=$(status_of --data-binary @"$image" -H 'Content-Type: image/jpeg' "$url/predict-public/")
if [ "$code" = 200 ]; then ok "VM killed: /predict-public/ still 200"; else bad "VM killed: /predict-public/ $code"; fi

back=0
for _ in $(seq 1 3000); do
  code=$(status_of --data-binary @"$image" -H 'Content-Type: image/jpeg' "$url/predict-secure/")
  if [ "$code" = 200 ]; then back=1; break; fi
  sleep 0.1
done
if [ "$back" = 1 ] && [ "$(cat "$run/parent.pid")" = "$parent_pid" ] && kill -0 "$parent_pid" 2>/dev/null; then
  ok "enclave booted again: /predict-secure/ 200 after $(since "$t_kill") s, the same parent (pid $parent_pid)"
else
  bad "the secure route did not come back (last $code) or the parent changed"
fi

kill -TERM "$dev"
t_stop=$(now)
wait "$dev" 2>/dev/null || true
dev=
left=$(pgrep -f "$run" || true)
socks=$(find "$run/emulate" -type s 2>/dev/null || true)
if [ -z "$left" ] && [ -z "$socks" ]; then ok "SIGTERM: stopped in $(since "$t_stop") s, no process or socket left"
else bad "left behind: processes '$left', sockets '$socks'"; fi

# 8. PCR2 (the application ramdisk) is the production EIF's: the same `eif app-ramdisk` of the
# same static binary and model, packed as `make eif` packs it (stand-in Nitro blobs here).
blobs=$tmp/blobs
scripts/nitro/stand-in-blobs.sh "$blobs" >/dev/null
"$EIF_TOOL" init-ramdisk --init "$blobs/init" --file "nsm.ko=$blobs/nsm.ko" --output "$tmp/boot.cpio"
"$EIF_TOOL" app-ramdisk --enclave "$STATIC_BIN" --model-dir "models/$MODEL" --output "$tmp/app.cpio"
"$EIF_TOOL" build --kernel "$blobs/bzImage" --cmdline "$blobs/cmdline" --ramdisk "$tmp/boot.cpio" \
  --ramdisk "$tmp/app.cpio" --output "$tmp/prod.eif" >"$tmp/prod.json"
pcr() { sed -n "s/.*\"$1\": \"\([0-9a-f]*\)\".*/\1/p" "$2" | head -n 1; }
"$EIF_TOOL" describe "$EIF" >"$tmp/emu.json"
if [ -n "$(pcr PCR2 "$tmp/prod.json")" ] && [ "$(pcr PCR2 "$tmp/prod.json")" = "$(pcr PCR2 "$tmp/emu.json")" ] &&
  [ "$(pcr PCR0 "$tmp/prod.json")" != "$(pcr PCR0 "$tmp/emu.json")" ]; then
  ok "PCR2 of the emulation EIF = the production EIF's ($(pcr PCR2 "$tmp/emu.json" | cut -c1-16)...); PCR0 differs (other kernel and init)"
else
  bad "PCR2: production $(pcr PCR2 "$tmp/prod.json"), emulation $(pcr PCR2 "$tmp/emu.json")"
fi

# 9. The launcher alone, with a guest CPU without RDRAND/RDSEED: entropy from the virtio-rng
# device (standing in for the NSM's hardware RNG), then from nothing at all.
solo_dir=$tmp/hwrng
"$BIN/emulate" --eif "$EIF" --run-dir "$solo_dir" --cpu-rng off --rng on >"$tmp/hwrng.log" 2>&1 &
solo=$!
t0=$(now)
if "$BIN/parent" ping "hybrid-vsock:$solo_dir/vsock.sock:5005" --timeout 300 >"$tmp/ping.log" 2>&1; then
  ok "no RDRAND, virtio-rng: Ping answered over hybrid vsock after $(since "$t0") s"
else
  bad "no RDRAND, virtio-rng: no Ping answer: $(tail -n 3 "$tmp/ping.log")"
fi
if grep -q heartbeat "$tmp/hwrng.log" && grep -q "hwrng: virtio_rng" "$solo_dir/console.log" &&
  grep -q "^entropy: " "$solo_dir/console.log"; then
  ok "no RDRAND, virtio-rng: in the guest: $(grep -m1 '^entropy: ' "$solo_dir/console.log" | cut -c1-100)"
else
  bad "no RDRAND, virtio-rng: heartbeat, hwrng or entropy line missing"; tail -n 20 "$solo_dir/console.log" 2>/dev/null || true
fi
kill -TERM "$solo"; wait "$solo" 2>/dev/null || true; solo=

# No source at all: the model server must refuse to run (fail closed), and the launcher says so.
solo_dir=$tmp/none
rc=0
timeout 300 "$BIN/emulate" --eif "$EIF" --run-dir "$solo_dir" --cpu-rng off --rng off >"$tmp/none.log" 2>&1 || rc=$?
if [ "$rc" = 4 ] && grep -q "^entropy: random pool not initialised" "$solo_dir/console.log" &&
  grep -q "app exited with status 1" "$solo_dir/console.log"; then
  ok "no RDRAND, no hwrng: the model server stops at start ($(grep -m1 '^entropy: ' "$solo_dir/console.log" | cut -c10-90)...), the VM powers off, the launcher exits 4"
else
  bad "no RDRAND, no hwrng: launcher exit $rc"; tail -n 20 "$solo_dir/console.log" 2>/dev/null || true
fi

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
