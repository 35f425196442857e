#!/usr/bin/env bash
# Sealed requests end to end through the local stack exactly as `make dev` runs it (scripts/dev.sh:
# the development NSM, the secure and public model servers, the parent), on a free port in a
# temporary RUN_DIR:
#   1. the plaintext route's top-5 for testdata/chelsea.jpg (curl, raw JPEG), the reference;
#   2. the Rust client (sealed-client): attest with a fresh nonce, verify against the development
#      root and the measurements dev-nsm wrote, seal, send, open: the same top-5;
#   3. the Python client (python -m sealed_client, build/client-venv): the same;
#   4. OHTTP code we did not write (tests/interop/ohttp.sh: Cloudflare's aloha, and HPKE by
#      another author in JavaScript): inner 200 and class 282 on both sealed routes;
#   5. the Rust client refuses the same stack without --dev-root, and with another PCR0, and
#      sends nothing (exit 1).
# Ends with "N passed, M failed" and exits non-zero if anything failed.
#
# Environment: BIN (binaries: enclave, parent, dev-nsm, sealed-client; default target/debug, what
# `make test` builds), CLIENT_PY (default build/client-venv/bin/python), MODEL (default
# efficientnet-lite0), INTEROP (default 1; 0 skips step 4).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
BIN=${BIN:-target/debug}
CLIENT_PY=${CLIENT_PY:-build/client-venv/bin/python}
MODEL=${MODEL:-efficientnet-lite0}
INTEROP=${INTEROP:-1}
image=testdata/chelsea.jpg

die() { echo "roundtrip.sh: $*" >&2; exit 1; }
for b in enclave parent dev-nsm sealed-client; do [ -x "$BIN/$b" ] || die "$BIN/$b is missing (cargo build --workspace --bins)"; done
[ -x "$CLIENT_PY" ] || die "$CLIENT_PY is missing (make client-venv)"
[ -f "$image" ] || die "$image is missing (make testdata)"

tmp=$(mktemp -d)
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
url=http://127.0.0.1:$port
dev=
cleanup() {
  if [ -n "$dev" ]; then
    kill -TERM "$dev" 2>/dev/null || true
    wait "$dev" 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT
BIN=$BIN MODEL=$MODEL PORT=$port RUN_DIR=$tmp/run READY_TIMEOUT=120 scripts/dev.sh >"$tmp/dev.log" 2>&1 &
dev=$!
for _ in $(seq 1 1200); do
  curl -fsS -o /dev/null "$url/ready" 2>/dev/null && break
  kill -0 "$dev" 2>/dev/null || { cat "$tmp/dev.log" >&2; die "dev.sh exited before the stack was ready"; }
  sleep 0.1
done
curl -fsS -o /dev/null "$url/ready" || { cat "$tmp/dev.log" >&2; die "not ready"; }

passed=0 failed=0
ok() { echo "ok: $*"; passed=$((passed + 1)); }
bad() { echo "FAILED: $*"; failed=$((failed + 1)); }
# The top-5 of an answer as "id:label" pairs; empty if the JSON is not a success.
top5() { python3 -c 'import json, sys
a = json.load(sys.stdin)
print(" ".join(str(t["class_id"]) + ":" + t["label"] for t in a["predictions"][0]["top_k"]))' 2>/dev/null || true; }

want=$(curl -fsS --data-binary @"$image" -H 'Content-Type: image/jpeg' "$url/predict-secure/" | top5)
case "$want" in
  282:*) ok "plaintext /predict-secure/: $want" ;;
  *) bad "plaintext /predict-secure/ top-5 is '$want', expected tiger cat (282) first" ;;
esac

pins=(--dev-root "$tmp/run/dev-nsm-root.pem" --measurements "$tmp/run/dev-measurements.json")
rc=0
got=$("$BIN/sealed-client" --url "$url" "${pins[@]}" "$image" 2>"$tmp/rust.err" | top5) || rc=$?
if [ "$rc" = 0 ] && [ -n "$want" ] && [ "$got" = "$want" ]; then ok "Rust sealed-client: the same top-5"
else bad "Rust sealed-client (exit $rc): '$got'; $(tail -n 3 "$tmp/rust.err")"; fi

rc=0
got=$("$CLIENT_PY" -m sealed_client --url "$url" "${pins[@]}" "$image" 2>"$tmp/py.err" | top5) || rc=$?
if [ "$rc" = 0 ] && [ -n "$want" ] && [ "$got" = "$want" ]; then ok "Python sealed_client: the same top-5"
else bad "Python sealed_client (exit $rc): '$got'; $(tail -n 3 "$tmp/py.err")"; fi

if [ "$INTEROP" = 1 ]; then
  # The JavaScript leg needs Node 20 or newer (Debian 12's own nodejs is 18): without it, the
  # aloha leg alone, said so.
  legs="aloha js"
  if ! node -e 'process.exit(+process.versions.node.split(".")[0] >= 20 ? 0 : 1)' 2>/dev/null; then
    legs=aloha
    echo "note: no Node >= 20 here: the JavaScript interop leg is skipped, the aloha leg runs"
  fi
  if INTEROP_LEGS=$legs tests/interop/ohttp.sh "$url" "$image" >"$tmp/interop.log" 2>&1; then
    ok "independent OHTTP implementations: $(tail -n 1 "$tmp/interop.log")"
  else
    bad "independent OHTTP implementations: $(grep FAILED "$tmp/interop.log" | head -n 3; tail -n 1 "$tmp/interop.log")"
  fi
fi

rc=0
"$BIN/sealed-client" --url "$url" --measurements "$tmp/run/dev-measurements.json" "$image" >/dev/null 2>"$tmp/nodev.err" || rc=$?
if [ "$rc" = 1 ] && grep -q -- "--dev-root" "$tmp/nodev.err"; then ok "without --dev-root the development document is refused (exit 1)"
else bad "without --dev-root: exit $rc, $(tail -n 2 "$tmp/nodev.err")"; fi
rc=0
"$BIN/sealed-client" --url "$url" --dev-root "$tmp/run/dev-nsm-root.pem" --pcr "0=$(printf '%096d' 1)" "$image" >/dev/null 2>"$tmp/pcr.err" || rc=$?
if [ "$rc" = 1 ] && grep -qi "pcr0" "$tmp/pcr.err"; then ok "another PCR0 is refused (exit 1)"
else bad "another PCR0: exit $rc, $(tail -n 2 "$tmp/pcr.err")"; fi

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
