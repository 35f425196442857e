#!/usr/bin/env bash
# Builds the emulation EIF (`make eif-emulate`): what `emulate` boots in QEMU.
#   kernel      Debian's cloud kernel (scripts/emulate/kernel.sh -> $EMU_KERNEL_DIR/vmlinuz)
#   cmdline     AWS's x86_64 text + nitro_ml.parent_cid=2 ($EMU_KERNEL_DIR/cmdline)
#   ramdisk 1   our /init (tools/emu-init, static: $EMU_INIT) + the modules it loads, under
#               modules/ with their load.order
#   ramdisk 2   the production EIF's application ramdisk, made by the same call as
#               scripts/nitro/eif.sh (eif app-ramdisk with $STATIC_BIN and $MODEL_DIR): same
#               bytes, so the same PCR2 as `make eif`; PCR0 and PCR1 differ (other kernel, init)
# Writes $EMU_EIF and $EMU_MEASUREMENTS. Env: MODEL, MODEL_DIR, STATIC_BIN, EIF_TOOL,
# EMU_KERNEL_DIR, EMU_INIT, EMU_EIF, EMU_MEASUREMENTS, SOURCE_DATE_EPOCH (as eif.sh).
#
# Development variant (`make eif-emulate-dev-nsm`): EMU_APP_ARGS, words appended to the image's
# command (eif app-ramdisk --arg each), and EMU_EIF_NAME. With `--nsm vsock:2:9100` and a
# STATIC_BIN built with the dev-nsm feature, the model server attests through the development
# NSM over the guest's vsock. Its application ramdisk is then NOT the production one: PCR2
# differs from `make eif`'s, by design (other binary, other command). Empty (the default), the
# ramdisk is the production one, byte for byte.
set -euo pipefail

say() { echo "eif-emulate: $*"; }
die() { echo "eif-emulate: error: $*" >&2; exit 1; }

model=${MODEL:-efficientnet-lite0}
model_dir=${MODEL_DIR:-models/$model}
static_bin=${STATIC_BIN:-build/static/enclave}
eif_tool=${EIF_TOOL:-target/release/eif}
kernel_dir=${EMU_KERNEL_DIR:-build/emulate/kernel}
init=${EMU_INIT:-build/emulate/init}
eif=${EMU_EIF:-build/emulate/enclave.eif}
eif_name=${EMU_EIF_NAME:-nitro-ml-enclave-emulation}
read -r -a app_args <<<"${EMU_APP_ARGS:-}"
measurements=${EMU_MEASUREMENTS:-$(dirname "$eif")/measurements.json}

for f in model.onnx labels.txt manifest.txt; do
    [ -f "$model_dir/$f" ] || die "model file missing: $model_dir/$f (run 'make model MODEL=$model')"
done
[ -x "$eif_tool" ] || die "EIF tool missing: $eif_tool (run 'make eif-tool')"
[ -f "$static_bin" ] || die "static enclave binary missing: $static_bin (run 'make static')"
[ -f "$init" ] || die "emulation init missing: $init (run 'make emu-init')"
for f in vmlinuz cmdline modules/load.order; do
    [ -f "$kernel_dir/$f" ] || die "$kernel_dir/$f missing (run 'make emulate-kernel')"
done

if [ -z "${SOURCE_DATE_EPOCH:-}" ] && SOURCE_DATE_EPOCH=$(git log -1 --format=%ct 2>/dev/null); then
    export SOURCE_DATE_EPOCH
else
    export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-0}
fi

mkdir -p "$(dirname "$eif")" "$(dirname "$measurements")"
work=$(mktemp -d "$(dirname "$eif")/.eif-build.XXXXXX")
trap 'rm -rf "$work"' EXIT

files=(--file "modules/load.order=$kernel_dir/modules/load.order")
while IFS= read -r m; do
    [ -n "$m" ] || continue
    [ -f "$kernel_dir/modules/$m" ] || die "$kernel_dir/modules/$m is in load.order but missing"
    files+=(--file "modules/$m=$kernel_dir/modules/$m")
done <"$kernel_dir/modules/load.order"
say "eif init-ramdisk (init $init, modules: $(tr '\n' ' ' <"$kernel_dir/modules/load.order"))"
"$eif_tool" init-ramdisk --init "$init" "${files[@]}" --output "$work/boot.cpio" || die "eif init-ramdisk failed"
extra=()
for a in ${app_args[@]+"${app_args[@]}"}; do extra+=(--arg "$a"); done
if [ ${#extra[@]} -eq 0 ]; then
    say "eif app-ramdisk (enclave $static_bin, model $model_dir): the production ramdisk"
else
    say "eif app-ramdisk (enclave $static_bin, model $model_dir, command + ${app_args[*]}): a DEVELOPMENT ramdisk, PCR2 differs from production's by design"
fi
"$eif_tool" app-ramdisk --enclave "$static_bin" --model-dir "$model_dir" --output "$work/app.cpio" \
    ${extra[@]+"${extra[@]}"} || die "eif app-ramdisk failed"
rm -f "$measurements"
"$eif_tool" build --kernel "$kernel_dir/vmlinuz" --cmdline "$kernel_dir/cmdline" \
    --ramdisk "$work/boot.cpio" --ramdisk "$work/app.cpio" \
    --name "$eif_name" --version "$model" --output "$eif" --measurements "$measurements" >/dev/null ||
    die "eif build failed"
say "$eif ($(stat -c %s "$eif") bytes; kernel $(sed -n 's/^package=//p' "$kernel_dir/kernel.txt" 2>/dev/null) $(sed -n 's/^version=//p' "$kernel_dir/kernel.txt" 2>/dev/null)); PCRs in $measurements:"
cat "$measurements"
