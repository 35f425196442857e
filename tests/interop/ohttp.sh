#!/usr/bin/env bash
# Interoperability of sealed requests with OHTTP code we did not write, against a running stack,
# in two legs that share no code with the `ohttp` crate the model server uses (tools/interop-ohttp,
# built and installed by `make interop-ohttp`; see its README):
#   aloha  Cloudflare's `aloha` crate: its own RFC 9458 framing and RFC 9292 codec.
#   js     dajiaji's HPKE (@hpke/core) and BHTTP decoder (bhttp-js) under our RFC 9458 framing
#          (checked against RFC 9458 Appendix A by `make test-interop-ohttp-harness`).
#
#   tests/interop/ohttp.sh [BASE_URL] [IMAGE]     (default http://127.0.0.1:${PORT:-8080}, testdata/chelsea.jpg)
#
# 1. GET BASE_URL/.well-known/ohttp-gateway: 200 application/ohttp-keys.
# 2. Each leg seals a known-length BHTTP `POST /predict-secure/?top_k=5` with the image as
#    content, POSTs it to BASE_URL/.well-known/ohttp-gateway (message/ohttp-req), opens the answer
#    and parses its inner BHTTP response (zero padding to a multiple of 4096 bytes checked).
# 3. Checks: inner status 200, top class id 282 (tiger cat, for chelsea.jpg), backend "secure".
# Each leg also through POST BASE_URL/predict-secure/, the contract's other sealed route, then two
# errors: an inner one (path /nope/: outer 200, inner 404 not_found, padded like any answer) and an
# outer one (a key id the gateway does not have: 400 application/problem+json, "key identifier
# unknown", RFC 9458 section 5.3).
# Ends with "N passed, M failed"; exits non-zero if anything failed.
#
# Environment: INTEROP_OHTTP (the Rust harness; default build/interop-ohttp/release/interop-ohttp),
# INTEROP_OHTTP_JS (default build/interop-ohttp/js/client.mjs; both made here by `make
# interop-ohttp` when missing), INTEROP_LEGS (default "aloha js"), EXPECT_CLASS (default 282).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
base=${1:-http://127.0.0.1:${PORT:-8080}}
base=${base%/}
image=${2:-$root/testdata/chelsea.jpg}
expect=${EXPECT_CLASS:-282}
bin=${INTEROP_OHTTP:-$root/build/interop-ohttp/release/interop-ohttp}
js=${INTEROP_OHTTP_JS:-$root/build/interop-ohttp/js/client.mjs}
legs=${INTEROP_LEGS:-aloha js}

die() { echo "ohttp.sh: $*" >&2; exit 1; }
command -v curl >/dev/null || die "curl is needed"
command -v python3 >/dev/null || die "python3 is needed (to read the JSON)"
[ -f "$image" ] || die "$image is missing (make testdata)"
case " $legs " in *" js "*) command -v node >/dev/null || die "node (>= 20) is needed for the js leg (or INTEROP_LEGS=aloha)";; esac
if [ ! -x "$bin" ] || [ ! -f "$js" ]; then
  [ -z "${INTEROP_OHTTP:-}${INTEROP_OHTTP_JS:-}" ] || die "$bin or $js is missing"
  make -C "$root" --no-print-directory interop-ohttp >&2
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
passed=0 failed=0
ok() { echo "ok: $*"; passed=$((passed + 1)); }
bad() { echo "FAILED: $*"; failed=$((failed + 1)); }

# 1. The key configurations.
code=$(curl -sS -o "$tmp/keys" -D "$tmp/keys.head" -w '%{http_code}' "$base/.well-known/ohttp-gateway") ||
  die "GET $base/.well-known/ohttp-gateway failed (is the stack running?)"
ctype=$(sed -nE 's/^[Cc]ontent-[Tt]ype:[[:space:]]*([^;[:space:]]+).*/\1/p' "$tmp/keys.head" | tail -n 1)
if [ "$code" = 200 ] && [ "$ctype" = application/ohttp-keys ] && [ -s "$tmp/keys" ]; then
  ok "GET /.well-known/ohttp-gateway: 200 application/ohttp-keys, $(wc -c <"$tmp/keys") bytes"
else
  bad "GET /.well-known/ohttp-gateway: $code $ctype ($(head -c 300 "$tmp/keys" | tr -c '[:print:]' '.'))"
  echo "$passed passed, $failed failed"; exit 1
fi

run_leg() { # leg, then the harness's arguments
  local leg=$1; shift
  if [ "$leg" = aloha ]; then "$bin" "$@"; else node "$js" "$@"; fi
}

# 2. and 3. One sealed request per gateway route.
check() { # leg, gateway path
  local leg=$1 gateway=$2 name rc=0
  name="$leg ${gateway}"
  local out=$tmp/$leg-${gateway//\//_}
  run_leg "$leg" --keys "$tmp/keys" --image "$image" --url "$base" --gateway "$gateway" --top-k 5 \
    --expect-padding 4096 >"$out.out" 2>"$out.err" || rc=$?
  sed 's/^/  /' "$out.err"
  if [ "$rc" != 0 ]; then
    bad "$name: the harness exited $rc"
    return
  fi
  local status
  status=$(sed -n '1s/^status: //p' "$out.out")
  tail -n +2 "$out.out" >"$out.json"
  echo "  inner status $status: $(head -c 600 "$out.json")"
  if [ "$status" != 200 ]; then
    bad "$name: inner status $status, expected 200"
    return
  fi
  local verdict
  verdict=$(python3 - "$out.json" "$expect" <<'PY'
import json, sys
body = json.load(open(sys.argv[1]))
want = int(sys.argv[2])
ids = body.get("class_ids")
preds = body.get("predictions")
if not isinstance(ids, list) or len(ids) != 1:
    print(f"class_ids {ids!r}: expected one id (one image)"); sys.exit()
if ids[0] != want:
    print(f"top class id {ids[0]}, expected {want}"); sys.exit()
try:
    top_k = preds[0]["top_k"]
    first = top_k[0]["class_id"]
except (TypeError, KeyError, IndexError):
    print("predictions[0].top_k missing"); sys.exit()
if len(top_k) != 5 or first != want:
    print(f"predictions[0].top_k: {len(top_k)} entries, first {first} (expected 5, {want})"); sys.exit()
if body.get("backend") != "secure":
    print(f"backend {body.get('backend')!r}, expected 'secure'"); sys.exit()
print("ok")
PY
)
  if [ "$verdict" = ok ]; then
    ok "$name: inner 200, top class $expect, 5 predictions, backend secure, padded to 4096"
  else
    bad "$name: $verdict"
  fi
}
inner_error() { # leg: a request that opens, for a path the model server does not have
  local leg=$1 rc=0 out=$tmp/$1-inner-error
  run_leg "$leg" --keys "$tmp/keys" --image "$image" --url "$base" --path /nope/ \
    --expect-padding 4096 >"$out.out" 2>"$out.err" || rc=$?
  if [ "$rc" = 0 ] && [ "$(sed -n 1p "$out.out")" = "status: 404" ] && grep -q '"code":"not_found"' "$out.out"; then
    ok "$leg inner error: path /nope/ answered sealed, inner 404 not_found, padded to 4096"
  else
    bad "$leg inner error: exit $rc, $(head -c 300 "$out.out" "$out.err" | tr '\n' ' ')"
  fi
}

unknown_key() { # leg: the first configuration's key id changed to one the gateway does not have
  local leg=$1 rc=0 out=$tmp/$1-unknown-key
  python3 -c 'import sys; b = bytearray(open(sys.argv[1], "rb").read()); b[2] ^= 0x80; open(sys.argv[2], "wb").write(b)' \
    "$tmp/keys" "$tmp/keys.unknown"
  run_leg "$leg" --keys "$tmp/keys.unknown" --image "$image" --url "$base" >"$out.out" 2>"$out.err" || rc=$?
  if [ "$rc" = 2 ] && grep -q 'HTTP 400 (application/problem+json)' "$out.err" && grep -q 'key identifier unknown' "$out.err" &&
     grep -q 'http-problem-types#ohttp-key' "$out.err"; then
    ok "$leg unknown key id: 400 application/problem+json, ohttp-key problem type"
  else
    bad "$leg unknown key id: exit $rc (expected 2), $(head -c 300 "$out.err" | tr '\n' ' ')"
  fi
}

for leg in $legs; do
  case $leg in aloha | js) ;; *) die "unknown leg $leg (aloha, js)";; esac
  check "$leg" /.well-known/ohttp-gateway
  check "$leg" /predict-secure/
  inner_error "$leg"
  unknown_key "$leg"
done

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
