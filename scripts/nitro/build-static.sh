#!/usr/bin/env bash
# Builds the enclave binary (or another workspace binary, PACKAGE, whose binary has the same
# name: emu-init for the emulation EIF) fully static and reproducibly:
#   build-static.sh SRC_DIR OUT_FILE [PACKAGE]        (PACKAGE defaults to enclave)
#   FEATURES=dev-nsm build-static.sh ...               (cargo features; default none)
# The one definition of the flags: `make static` runs it on the host, Dockerfile.enclave's
# builder stage runs it in the pinned Rust image, `make static-repro` runs it twice.
#  - glibc, statically linked (+crt-static), for x86_64-unknown-linux-gnu; naming --target keeps
#    the flags off build scripts and proc macros, which must stay dynamic;
#  - the source directory and $CARGO_HOME are remapped to /src and /cargo, so panic locations
#    and debug paths do not depend on where the tree or the registry lives;
#  - symbols stripped; --locked; release profile (codegen-units = 1); no incremental state;
#  - its own target directory under SRC_DIR/build/, so the normal target/ is left alone.
# FEATURES (comma-separated cargo features of PACKAGE) is for development images only, such as
# the emulation EIF with the development NSM (`make eif-emulate-dev-nsm`); the enclave image is
# always built without it, and then the command is exactly the one without FEATURES. A feature
# build shares the target directory (only PACKAGE itself is compiled again: its other units have
# other hashes and the dependencies are the same), and the next build without features finds
# its own units fresh and installs the same bytes.
set -euo pipefail

[ $# -eq 2 ] || [ $# -eq 3 ] || { echo "usage: $0 SRC_DIR OUT_FILE [PACKAGE]" >&2; exit 2; }
src=$(cd "$1" && pwd -P)
out=$2
package=${3:-enclave}
target=x86_64-unknown-linux-gnu
cargo_home=$(cd "${CARGO_HOME:-$HOME/.cargo}" && pwd -P)

export CARGO_TARGET_DIR="$src/build/static-target"
export CARGO_INCREMENTAL=0
unset RUSTFLAGS
# One flag per \x1f-separated field, so paths with spaces survive.
sep=$'\x1f'
# getrandom 0.3 (under the sealing keys' HPKE, through rand) finds libc's getrandom() with dlsym,
# which a static glibc binary cannot resolve; it would then fall back to /dev/urandom and fail
# where there is no /dev (static-root-check's empty root). Its linux_getrandom backend calls the
# system call directly, as getrandom 0.2 and our entropy code already do.
flags=(-C target-feature=+crt-static -C strip=symbols --cfg 'getrandom_backend="linux_getrandom"'
    "--remap-path-prefix=$src=/src" "--remap-path-prefix=$cargo_home=/cargo")
CARGO_ENCODED_RUSTFLAGS=$(IFS=$sep; echo "${flags[*]}")
export CARGO_ENCODED_RUSTFLAGS

features=()
if [ -n "${FEATURES:-}" ]; then
    features=(--features "$FEATURES")
fi
(cd "$src" && "${CARGO:-cargo}" build --release --locked --target "$target" -p "$package" ${features[@]+"${features[@]}"})
mkdir -p "$(dirname "$out")"
install -m 0755 "$CARGO_TARGET_DIR/$target/release/$package" "$out"

if readelf -l "$out" 2>/dev/null | grep -q INTERP; then
    echo "$0: error: $out has a program interpreter: it is not statically linked" >&2
    exit 1
fi
echo "static $package${FEATURES:+ (features $FEATURES)} binary: $out ($(stat -c %s "$out") bytes, sha256 $(sha256sum "$out" | cut -d' ' -f1))"
