#!/usr/bin/env bash
# The sealed path over real vsock: the development emulation image (`make eif-emulate-dev-nsm`:
# the model server built with the dev-nsm feature, told `--nsm vsock:2:9100`) booted by
# scripts/dev.sh with EMULATE_NSM=dev, so that the development NSM (tools/dev-nsm, attesting the
# image's own PCRs) is reached from the guest over vsock, on a free port in a temporary RUN_DIR:
#   1. /ready is 200, the development NSM says it attests the image's measurements, and the
#      model server in the guest did not stop at start (it asks the NSM for PCR0 then);
#   2. GET /attestation is 200 application/cbor: the document came over the guest's vsock;
#   3. target/debug/sealed-client, given the development root and the measurements dev-nsm wrote,
#      verifies the document, seals the photo to the attested key and gets the very classes and
#      scores of the plaintext /predict-secure/ (timings and backend stripped);
#   4. those measurements are the EIF's own, as `eif describe` prints them;
#   5. pinned to the PRODUCTION emulation EIF's measurements (build/emulate/measurements.json,
#      another PCR2: the development image's binary and command differ), the client refuses the
#      document (exit 1) and sends nothing; so does it pinned to that PCR2 alone, and without
#      --dev-root (the AWS Nitro root only);
#   6. SIGTERM to the stack: it stops, and no QEMU or socket is left.
# Ends with "N passed, M failed" and exits non-zero if anything failed. Times are printed.
#
# Environment: BIN (parent, enclave, emulate, dev-nsm, sealed-client; default target/debug),
# EIF (default build/emulate/enclave-dev-nsm.eif, built with MODEL), PROD_MEASUREMENTS (default
# build/emulate/measurements.json: the production emulation EIF's), MODEL (default tiny-test),
# EIF_TOOL (default target/release/eif).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
BIN=${BIN:-target/debug}
EIF=${EIF:-build/emulate/enclave-dev-nsm.eif}
PROD_MEASUREMENTS=${PROD_MEASUREMENTS:-build/emulate/measurements.json}
MODEL=${MODEL:-tiny-test}
EIF_TOOL=${EIF_TOOL:-target/release/eif}
image=testdata/chelsea.jpg

die() { echo "sealed.sh: $*" >&2; exit 1; }
for b in enclave parent emulate dev-nsm sealed-client; do
  [ -x "$BIN/$b" ] || die "$BIN/$b is missing (make test-emulate-sealed builds it)"
done
[ -x "$EIF_TOOL" ] || die "$EIF_TOOL is missing (make eif-tool)"
[ -f "$EIF" ] || die "$EIF is missing (make eif-emulate-dev-nsm MODEL=$MODEL)"
[ -f "$PROD_MEASUREMENTS" ] || die "$PROD_MEASUREMENTS is missing (make eif-emulate MODEL=$MODEL)"
[ -f "$image" ] || die "$image is missing (make testdata)"

# Short paths: a Unix socket path has at most 107 bytes, and the launcher's are under RUN_DIR.
tmp=$(mktemp -d /tmp/emu-sl.XXXXXX)
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
url=http://127.0.0.1:$port
run=$tmp/run
dev=
cleanup() {
  if [ -n "$dev" ]; then
    kill -TERM "$dev" 2>/dev/null || true
    wait "$dev" 2>/dev/null || true
  fi
  # What a failed stop left, by the pids the stack wrote down.
  for f in "$run"/*.pid "$run/emulate/qemu.pid"; do
    [ -f "$f" ] && kill -KILL "$(cat "$f")" 2>/dev/null || true
  done
  rm -rf "$tmp"
}
trap cleanup EXIT

. tests/emulate/lib.sh

t0=$(now)
BIN=$BIN MODEL=$MODEL PORT=$port RUN_DIR=$run EMULATE=$EIF EMULATE_NSM=dev READY_TIMEOUT=300 \
  scripts/dev.sh >"$tmp/dev.log" 2>&1 &
dev=$!
ready=0
for _ in $(seq 1 3000); do
  if curl -fsS -o /dev/null "$url/ready" 2>/dev/null; then ready=1; break; fi
  kill -0 "$dev" 2>/dev/null || break
  sleep 0.1
done
if [ "$ready" = 1 ]; then
  ok "/ready 200 after $(since "$t0") s (development NSM, then the boot under emulation, model load included)"
else
  cat "$tmp/dev.log" >&2
  tail -n 30 "$run/nsm.log" "$run/emulate/console.log" 2>/dev/null >&2 || true
  die "the emulated stack was not ready"
fi

console=$run/emulate/console.log
if grep -q "the measurements of the image $EIF" "$run/nsm.log" && grep -q "listening on vsock:5005" "$console"; then
  ok "dev-nsm attests the image's PCRs; the guest's model server listens on vsock:5005"
else
  bad "nsm.log or the guest's console lacks the expected line"; tail -n 10 "$run/nsm.log" "$console" || true
fi

code=$(curl -s -o "$tmp/doc.cbor" -w '%{http_code} %{content_type}' "$url/attestation?nonce=$(python3 -c 'print("ab" * 32)')" || true)
if [ "$code" = "200 application/cbor" ] && [ -s "$tmp/doc.cbor" ]; then
  ok "GET /attestation: 200 application/cbor, $(stat -c %s "$tmp/doc.cbor") bytes (from dev-nsm over the guest's vsock)"
else
  bad "GET /attestation: $code $(head -c 200 "$tmp/doc.cbor" 2>/dev/null)"
fi

plain=$(curl -fsS --data-binary @"$image" -H 'Content-Type: image/jpeg' "$url/predict-secure/" | answer)
t1=$(now)
set +e
"$BIN/sealed-client" --url "$url" --dev-root "$run/dev-nsm-root.pem" --measurements "$run/dev-measurements.json" \
  "$image" >"$tmp/sealed.json" 2>"$tmp/sealed.err"
status=$?
set -e
sealed=$(answer <"$tmp/sealed.json")
if [ "$status" = 0 ] && [ -n "$sealed" ] && [ "$sealed" = "$plain" ] && [[ "$sealed" == *class_id* ]]; then
  ok "sealed request verified, sealed, answered in $(since "$t1") s: the plaintext route's classes and scores: ${sealed:0:100}"
else
  bad "sealed-client exit $status, answer '${sealed:0:300}' vs plaintext '${plain:0:300}'; stderr: $(tail -n 5 "$tmp/sealed.err")"
fi

pcrs() { python3 -c 'import json, sys
m = json.load(open(sys.argv[1]))["Measurements"]
print(" ".join(m["PCR%d" % i] for i in range(3)))' "$1" 2>/dev/null || true; }
"$EIF_TOOL" describe "$EIF" >"$tmp/describe.json"
attested=$(pcrs "$run/dev-measurements.json")
described=$(pcrs "$tmp/describe.json")
if [ -n "$attested" ] && [ "$attested" = "$described" ]; then
  ok "the attested measurements are the EIF's (eif describe): PCR2 ${attested##* }"
else
  bad "dev-measurements.json '$attested' is not eif describe's '$described'"
fi

prod=$(pcrs "$PROD_MEASUREMENTS")
set +e
"$BIN/sealed-client" --url "$url" --dev-root "$run/dev-nsm-root.pem" --measurements "$PROD_MEASUREMENTS" \
  "$image" >"$tmp/refused.json" 2>"$tmp/refused.err"
status=$?
set -e
if [ -n "$prod" ] && [ "${prod##* }" != "${attested##* }" ] && [ "$status" = 1 ] && [ ! -s "$tmp/refused.json" ]; then
  ok "pinned to the production emulation EIF's PCRs (PCR2 ${prod##* }): refused, exit 1: $(grep -m1 -i pcr "$tmp/refused.err" | cut -c1-120)"
else
  bad "with $PROD_MEASUREMENTS: exit $status (want 1), PCR2 '${prod##* }' vs '${attested##* }'; $(tail -n 3 "$tmp/refused.err")"
fi

set +e
"$BIN/sealed-client" --url "$url" --dev-root "$run/dev-nsm-root.pem" --pcr "2=${prod##* }" \
  "$image" >"$tmp/pcr2.json" 2>"$tmp/pcr2.err"
status=$?
set -e
if [ "$status" = 1 ] && [ ! -s "$tmp/pcr2.json" ] && grep -q "PCR2 mismatch" "$tmp/pcr2.err"; then
  ok "pinned to the production PCR2 alone: refused, exit 1 (PCR2 mismatch)"
else
  bad "with --pcr 2=<production PCR2>: exit $status (want 1); $(tail -n 3 "$tmp/pcr2.err")"
fi

set +e
"$BIN/sealed-client" --url "$url" --measurements "$run/dev-measurements.json" "$image" >"$tmp/noroot.json" 2>"$tmp/noroot.err"
status=$?
set -e
if [ "$status" = 1 ] && [ ! -s "$tmp/noroot.json" ]; then
  ok "without --dev-root (AWS Nitro root only): refused, exit 1"
else
  bad "without --dev-root: exit $status (want 1); $(tail -n 3 "$tmp/noroot.err")"
fi

qemu_pid=$(cat "$run/emulate/qemu.pid" 2>/dev/null || true)
t2=$(now)
kill -TERM "$dev"
wait "$dev" 2>/dev/null || true
dev=
left=
for f in "$run"/*.pid; do [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null && left+=" $f"; done
[ -n "$qemu_pid" ] && kill -0 "$qemu_pid" 2>/dev/null && left+=" qemu($qemu_pid)"
socks=$(find "$run" -type s 2>/dev/null | tr '\n' ' ')
if [ -z "$left" ] && [ -z "$socks" ]; then
  ok "SIGTERM: the stack stopped in $(since "$t2") s; no process or socket left"
else
  bad "after SIGTERM: left running:$left; sockets: $socks"
fi

echo "sealed.sh: $passed passed, $failed failed"
[ "$failed" = 0 ]
