#!/usr/bin/env bash
# Proves the EIF build is reproducible (`make eif-repro`): clones HEAD twice into two temporary
# directories whose paths differ in name and length, builds the `eif` tool in each clone from
# its own sources (a debug build, its own target directory), and runs each clone's
# scripts/nitro/eif.sh with the same inputs: STAND-IN Nitro blobs (scripts/nitro/stand-in-blobs.sh:
# fixed fake bytes, not bootable), one static enclave binary (STATIC_BIN, built once by
# `make static`; `make static-repro` proves that binary reproducible) and MODEL_DIR. Then it
# compares the two EIFs byte for byte and their PCRs, and prints them. A few minutes at most
# (two debug builds of a small crate).
# Env: STATIC_BIN, MODEL, MODEL_DIR, CARGO.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd -P)
. "$here/lib.sh"

repo=$(git rev-parse --show-toplevel)
commit=$(git -C "$repo" rev-parse HEAD)
model=${MODEL:?MODEL}
model_dir=$(cd "${MODEL_DIR:-models/$model}" 2>/dev/null && pwd -P) ||
    die "model directory missing: ${MODEL_DIR:-models/$model} (run 'make model MODEL=$model')"
static_bin=${STATIC_BIN:-build/static/enclave}
[ -f "$static_bin" ] || die "static enclave binary missing: $static_bin (run 'make static')"
static_bin=$(cd "$(dirname "$static_bin")" && pwd -P)/$(basename "$static_bin")
git -C "$repo" diff --quiet HEAD -- || say "note: uncommitted changes are not part of this check (it builds HEAD $commit)"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/eif-repro.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
"$here/stand-in-blobs.sh" "$tmp/blobs"
dirs=("$tmp/a" "$tmp/a-much-longer-directory-name/src")
for d in "${dirs[@]}"; do
    mkdir -p "$(dirname "$d")"
    git clone -q --no-hardlinks "$repo" "$d"
    git -C "$d" checkout -q "$commit"
    say "building the eif tool of $commit in $d"
    (cd "$d" && CARGO_TARGET_DIR="$d/target" "${CARGO:-cargo}" build -q --locked -p eif)
    (cd "$d" && NITRO_CLI=/nonexistent/nitro-cli MODEL="$model" MODEL_DIR="$model_dir" EIF="$d/build/enclave.eif" \
        MEASUREMENTS="$d/build/measurements.json" IMAGE_BIN="$d/build/image-enclave" STATIC_BIN="$static_bin" \
        EIF_TOOL="$d/target/debug/eif" NITRO_BLOBS="$tmp/blobs" scripts/nitro/eif.sh) >"$d.log" 2>&1 ||
        { cat "$d.log" >&2; die "the EIF build in $d failed"; }
done

a=${dirs[0]}/build/enclave.eif
b=${dirs[1]}/build/enclave.eif
for d in "${dirs[@]}"; do
    say "build in $d: sha256 $(sha256sum "$d/build/enclave.eif" | cut -d' ' -f1), $(stat -c %s "$d/build/enclave.eif") bytes"
done
for p in PCR0 PCR1 PCR2; do
    pa=$(json_value "$p" "${dirs[0]}/build/measurements.json")
    pb=$(json_value "$p" "${dirs[1]}/build/measurements.json")
    [ "$pa" = "$pb" ] || die "$p differs: $pa vs $pb"
    say "$p $pa (both)"
done
cmp -s "$a" "$b" || die "the two EIFs differ (cmp: $(cmp "$a" "$b" 2>&1 | head -n 1)): the EIF build is not reproducible"
say "reproducible: both EIFs of $commit are the same $(stat -c %s "$a") bytes, with the same PCRs" \
    "(stand-in blobs: PCR1 and PCR0 are not those of a real EIF; PCR2 is: it measures only the app ramdisk, i.e. the binary, the model, cmd and env)"
