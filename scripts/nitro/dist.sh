#!/usr/bin/env bash
# `make dist`: the release tarball that an instance installs with `make install` (the Auto Scaling
# group's user data, deploy/aws/nitro-ml.yaml; docs/OPERATIONS.md). Made on the build instance
# after `make eif`: the committed tree (git archive HEAD: uncommitted changes are not in it) plus
# what the build produced: build/enclave.eif, build/image-enclave, build/measurements.json,
# target/release/parent and models/MODEL, and a file MODEL naming the model. Prints the path and
# the EIF's PCR0. Env: DIST (the output, default build/nitro-ml-COMMIT.tar.gz), EIF, IMAGE_BIN,
# MEASUREMENTS, BIN_DIR, MODEL, MODEL_DIR.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd -P)
. "$here/lib.sh"
repo=$(cd "$here/../.." && pwd -P)

eif=${EIF:-build/enclave.eif}
image_bin=${IMAGE_BIN:-$(dirname "$eif")/image-enclave}
measurements=${MEASUREMENTS:-$(dirname "$eif")/measurements.json}
bin_dir=${BIN_DIR:-target/release}
model=${MODEL:?MODEL}
model_dir=${MODEL_DIR:-models/$model}
commit=$(git -C "$repo" rev-parse --short=12 HEAD)
out=${DIST:-build/nitro-ml-$commit.tar.gz}
name=nitro-ml-$commit

need_release_inputs "$eif" "$image_bin" "$bin_dir" "$model_dir" "$model"
[ -f "$measurements" ] || die "measurements missing: $measurements (run 'make eif' first)"
[ -z "$(git -C "$repo" status --porcelain --untracked-files=no)" ] ||
    say "note: uncommitted changes are not in the release (it is HEAD, $commit)"

stage=$(mktemp -d "${TMPDIR:-/tmp}/nitro-ml-dist.XXXXXX")
trap 'rm -rf "$stage"' EXIT
git -C "$repo" archive --format=tar --prefix="$name/" HEAD | tar -x -C "$stage"
root=$stage/$name
mkdir -p "$root/build" "$root/target/release" "$root/models/$model"
cp "$eif" "$root/build/enclave.eif"
cp "$image_bin" "$root/build/image-enclave"
cp "$measurements" "$root/build/measurements.json"
cp "$bin_dir/parent" "$root/target/release/parent"
cp "$model_dir/model.onnx" "$model_dir/labels.txt" "$model_dir/manifest.txt" "$root/models/$model/"
echo "$model" >"$root/MODEL"
mkdir -p "$(dirname "$out")"
tar -C "$stage" --owner=0 --group=0 --numeric-owner -czf "$out" "$name"
say "release: $out ($(du -h "$out" | cut -f1)); on an instance: tar -xzf, cd $name, sudo make install MODEL=$model"
pcr0=$(json_value PCR0 "$measurements")
say "its enclave's PCR0 (give it to the clients that check attestation): ${pcr0:-see $measurements}"
