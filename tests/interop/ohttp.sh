#!/usr/bin/env bash
# Interoperability of sealed requests with an OHTTP implementation we did not write: Cloudflare's
# `aloha` crate (tools/interop-ohttp, built by `make interop-ohttp`), independent of the `ohttp`
# crate that the model server uses, seals and opens one request against a running stack.
#
#   tests/interop/ohttp.sh [BASE_URL] [IMAGE]     (default http://127.0.0.1:${PORT:-8080}, testdata/chelsea.jpg)
#
# 1. GET BASE_URL/.well-known/ohttp-gateway: 200 application/ohttp-keys.
# 2. The harness seals a known-length BHTTP `POST /predict-secure/?top_k=5` with the image as
#    content, POSTs it to BASE_URL/.well-known/ohttp-gateway (message/ohttp-req), opens the answer
#    and parses its inner BHTTP response (zero padding to a multiple of 4096 bytes checked).
# 3. Checks: inner status 200, top class id 285 (Egyptian cat, for chelsea.jpg), backend "secure".
# Then the same through POST BASE_URL/predict-secure/, the contract's other sealed route.
# Ends with "N passed, M failed"; exits non-zero if anything failed.
#
# Environment: INTEROP_OHTTP (the harness binary; default build/interop-ohttp/release/interop-ohttp,
# built here by `make interop-ohttp` when missing), EXPECT_CLASS (default 285).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
base=${1:-http://127.0.0.1:${PORT:-8080}}
base=${base%/}
image=${2:-$root/testdata/chelsea.jpg}
expect=${EXPECT_CLASS:-285}
bin=${INTEROP_OHTTP:-$root/build/interop-ohttp/release/interop-ohttp}

die() { echo "ohttp.sh: $*" >&2; exit 1; }
command -v curl >/dev/null || die "curl is needed"
command -v python3 >/dev/null || die "python3 is needed (to read the JSON)"
[ -f "$image" ] || die "$image is missing (make testdata)"
if [ ! -x "$bin" ]; then
  [ -z "${INTEROP_OHTTP:-}" ] || die "$bin is missing"
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

# 2. and 3. One sealed request per gateway route.
check() { # name, gateway path
  local name=$1 gateway=$2 rc=0
  "$bin" --keys "$tmp/keys" --image "$image" --url "$base" --gateway "$gateway" --top-k 5 \
    --expect-padding 4096 >"$tmp/$name.out" 2>"$tmp/$name.err" || rc=$?
  sed 's/^/  /' "$tmp/$name.err"
  if [ "$rc" != 0 ]; then
    bad "$name: the harness exited $rc"
    return
  fi
  local status
  status=$(sed -n '1s/^status: //p' "$tmp/$name.out")
  tail -n +2 "$tmp/$name.out" >"$tmp/$name.json"
  echo "  inner status $status: $(head -c 600 "$tmp/$name.json")"
  if [ "$status" != 200 ]; then
    bad "$name: inner status $status, expected 200"
    return
  fi
  local verdict
  verdict=$(python3 - "$tmp/$name.json" "$expect" <<'PY'
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
    ok "$name: sealed by aloha, inner 200, top class $expect, 5 predictions, backend secure"
  else
    bad "$name: $verdict"
  fi
}
check gateway /.well-known/ohttp-gateway
check predict-secure /predict-secure/

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
