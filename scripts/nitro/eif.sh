#!/usr/bin/env bash
# `make eif`: builds build/enclave.eif without Docker or nitro-cli, with our own EIF tool
# (tools/eif, EIF_TOOL):
#   eif init-ramdisk   AWS's init and nsm.ko from NITRO_BLOBS -> the boot ramdisk (PCR1)
#   eif app-ramdisk    the static enclave binary (STATIC_BIN) and the model -> rootfs, cmd, env (PCR2)
#   eif build          kernel (bzImage) + cmdline from NITRO_BLOBS + both ramdisks -> EIF, PCRs
# then saves the measurements next to the EIF and prints its size and PCRs. If nitro-cli is
# installed, `nitro-cli describe-eif` must find the same PCR0/1/2, else it stops with an error.
# The static binary is also copied to IMAGE_BIN: the public model server runs the very bytes
# the enclave runs. The EIF's metadata (not measured) says BuildTime = SOURCE_DATE_EPOCH, by
# default the time of HEAD's commit, so that the same commit gives the same bytes.
# Env: MODEL, MODEL_DIR, EIF, MEASUREMENTS, IMAGE_BIN, STATIC_BIN, EIF_TOOL, NITRO_BLOBS.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd -P)
. "$here/lib.sh"

model=${MODEL:?MODEL}
model_dir=${MODEL_DIR:-models/$model}
eif=${EIF:-build/enclave.eif}
measurements=${MEASUREMENTS:-$(dirname "$eif")/measurements.json}
image_bin=${IMAGE_BIN:-$(dirname "$eif")/image-enclave}
static_bin=${STATIC_BIN:-build/static/enclave}
eif_tool=${EIF_TOOL:-target/release/eif}
blobs=${NITRO_BLOBS:-/usr/share/nitro_enclaves/blobs}

for f in model.onnx labels.txt manifest.txt; do
    [ -f "$model_dir/$f" ] || die "model file missing: $model_dir/$f (run 'make model MODEL=$model')"
done
if problem=$(missing_blobs "$blobs"); then die "$problem"; fi
[ -x "$eif_tool" ] || die "EIF tool missing: $eif_tool (run 'make eif-tool')"
[ -f "$static_bin" ] || die "static enclave binary missing: $static_bin (run 'make static')"
mkdir -p "$(dirname "$eif")" "$(dirname "$measurements")" "$(dirname "$image_bin")"

if [ -z "${SOURCE_DATE_EPOCH:-}" ] && SOURCE_DATE_EPOCH=$(git log -1 --format=%ct 2>/dev/null); then
    export SOURCE_DATE_EPOCH
else
    export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-0}
fi

work=$(mktemp -d "$(dirname "$eif")/.eif-build.XXXXXX")
trap 'rm -rf "$work"' EXIT
say "eif init-ramdisk (init, nsm.ko from $blobs)"
"$eif_tool" init-ramdisk --init "$blobs/init" --file "nsm.ko=$blobs/nsm.ko" --output "$work/boot.cpio" ||
    die "eif init-ramdisk failed"
say "eif app-ramdisk (enclave $static_bin, model $model_dir)"
"$eif_tool" app-ramdisk --enclave "$static_bin" --model-dir "$model_dir" --output "$work/app.cpio" ||
    die "eif app-ramdisk failed"
rm -f "$measurements"
say "eif build --kernel $blobs/bzImage --cmdline $blobs/cmdline --output $eif"
"$eif_tool" build --kernel "$blobs/bzImage" --cmdline "$blobs/cmdline" \
    --ramdisk "$work/boot.cpio" --ramdisk "$work/app.cpio" \
    --name nitro-ml-enclave --version "$model" --output "$eif" --measurements "$measurements" >/dev/null ||
    die "eif build failed"
pcr0=$(json_value PCR0 "$measurements")
[ -n "$pcr0" ] || die "eif build wrote no PCR0 to $measurements"

# The public model server runs the very binary that is in the EIF.
install -m 0755 "$static_bin" "$image_bin"

# Cross-check with AWS's own reader when it is here (it needs root or the 'ne' group).
if command -v "$NITRO_CLI" >/dev/null 2>&1; then
    if described=$("$NITRO_CLI" describe-eif --eif-path "$eif" 2>"$work/describe.err"); then
        printf '%s\n' "$described" >"$work/describe.json"
        for p in PCR0 PCR1 PCR2; do
            ours=$(json_value "$p" "$measurements")
            theirs=$(json_value "$p" "$work/describe.json")
            [ "$ours" = "$theirs" ] ||
                die "nitro-cli describe-eif disagrees on $p: ours $ours, nitro-cli's ${theirs:-(none)}; do not deploy $eif"
        done
        say "nitro-cli describe-eif agrees on PCR0, PCR1 and PCR2"
    else
        say "warning: '$NITRO_CLI describe-eif' failed ($(tail -n 1 "$work/describe.err")): PCRs not cross-checked"
    fi
else
    say "note: nitro-cli not installed: PCRs not cross-checked with nitro-cli describe-eif"
fi

print_eif_summary "$eif" "$model_dir" "$measurements" "$image_bin" "Blobs:        $blobs (kernel, cmdline, init, nsm.ko)"
