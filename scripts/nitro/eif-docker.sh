#!/usr/bin/env bash
# `make eif-docker`: the EIF built nitro-cli's way, kept beside `make eif` (scripts/nitro/eif.sh,
# no Docker) so that the two can be compared. Builds the enclave image and the EIF:
#   docker pull RUST_IMAGE                  (so that its digest can be recorded)
#   docker build -f Dockerfile.enclave ...  (static binary built in the pinned Rust image + model)
#   nitro-cli build-enclave --docker-uri IMAGE --output-file EIF   (stdout = measurements JSON)
# then saves the measurements next to the EIF and prints its size and PCRs.
# The image's /enclave is also copied out to IMAGE_BIN for the public model server.
# Env: MODEL, MODEL_DIR, EIF, MEASUREMENTS, EIF_IMAGE, RUST_IMAGE, IMAGE_BIN.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd -P)
. "$here/lib.sh"

model=${MODEL:?MODEL}
model_dir=${MODEL_DIR:-models/$model}
eif=${EIF:-build/enclave.eif}
measurements=${MEASUREMENTS:-$(dirname "$eif")/measurements.json}
image=${EIF_IMAGE:-nitro-ml-enclave:$model}
rust_image=${RUST_IMAGE:-rust:1.95.0-bookworm}

for f in model.onnx labels.txt manifest.txt; do
    [ -f "$model_dir/$f" ] || die "model file missing: $model_dir/$f (run 'make model MODEL=$model')"
done
command -v "$DOCKER" >/dev/null || die "'$DOCKER' not found: install docker (see docs/DEPLOY.md)"
command -v "$NITRO_CLI" >/dev/null || die "'$NITRO_CLI' not found: install aws-nitro-enclaves-cli (see docs/DEPLOY.md)"
mkdir -p "$(dirname "$eif")" "$(dirname "$measurements")"

# Pull the builder image first: under BuildKit (docker's default builder) a FROM image is not
# kept as a local image, so without this `docker image inspect` below finds nothing to record.
# Pulled, it is local, and the build uses it.
say "docker pull $rust_image"
"$DOCKER" pull "$rust_image" >/dev/null ||
    say "warning: docker pull $rust_image failed; the build uses a local copy if there is one"

build_args=(--build-arg "RUST_IMAGE=$rust_image" --build-arg "MODEL_DIR=$model_dir")
say "docker build -f Dockerfile.enclave -t $image (model $model_dir)"
"$DOCKER" build -f Dockerfile.enclave "${build_args[@]}" -t "$image" . ||
    die "docker build failed (is the docker daemon running and are you in the 'docker' group?)"

# The public model server runs the very binary that is in the image, so the secure and public
# paths compare one program (docker create does not start anything; scratch images allow it).
image_bin=${IMAGE_BIN:-$(dirname "$eif")/image-enclave}
container=$("$DOCKER" create "$image") || die "docker create $image failed"
if ! "$DOCKER" cp "$container:/enclave" "$image_bin"; then
    "$DOCKER" rm "$container" >/dev/null || true
    die "docker cp $container:/enclave failed"
fi
"$DOCKER" rm "$container" >/dev/null || die "docker rm $container failed"
chmod 0755 "$image_bin"

rm -f "$measurements"
say "nitro-cli build-enclave --docker-uri $image --output-file $eif"
if ! "$NITRO_CLI" build-enclave --docker-uri "$image" --output-file "$eif" >"$measurements.tmp"; then
    rm -f "$measurements.tmp"
    die "nitro-cli build-enclave failed (see its message above; 'nitro-cli explain --error-code EXX' explains a code)"
fi
pcr0=$(json_value PCR0 "$measurements.tmp")
[ -n "$pcr0" ] || { rm -f "$measurements.tmp"; die "nitro-cli build-enclave printed no PCR0"; }
[ -f "$eif" ] || { rm -f "$measurements.tmp"; die "nitro-cli build-enclave did not write $eif"; }
mv "$measurements.tmp" "$measurements"

# Record which builder image the binary came from: pin it with RUST_IMAGE=...@sha256:...
digest=$("$DOCKER" image inspect --format '{{index .RepoDigests 0}}' "$rust_image" 2>/dev/null || true)
if [ -n "$digest" ]; then
    echo "$digest" >"$(dirname "$measurements")/builder-image.txt"
else
    rm -f "$(dirname "$measurements")/builder-image.txt"
    say "warning: no digest for $rust_image (not pulled from a registry?): build/builder-image.txt not written"
fi

print_eif_summary "$eif" "$model_dir" "$measurements" "$image_bin" "${digest:+Builder image: $digest}"
