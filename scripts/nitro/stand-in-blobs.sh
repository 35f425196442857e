#!/usr/bin/env bash
# Writes STAND-IN Nitro blobs into DIR, for `make eif-repro` and the tests:
#   stand-in-blobs.sh DIR
# bzImage, cmdline, init and nsm.ko with the names and roles of aws-nitro-enclaves-cli's
# /usr/share/nitro_enclaves/blobs, but fake contents: fixed text repeated, the same bytes on
# every machine. They are NOT a kernel, an init or a driver; an EIF built from them does not
# boot. They exist so that the EIF build can be checked for reproducibility where the real
# blobs are not installed (the real ones are inputs like any other: same blobs, same PCR1).
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: $0 DIR" >&2; exit 2; }
dir=$1
mkdir -p "$dir"
fill() { # fill TEXT BYTES FILE: TEXT repeated, cut at BYTES
    yes "$1" | head -c "$2" >"$3" || true
}
fill "stand-in bzImage: not a kernel (scripts/nitro/stand-in-blobs.sh)" 1048576 "$dir/bzImage"
fill "stand-in init: not AWS's init" 65536 "$dir/init"
fill "stand-in nsm.ko: not the NSM driver" 32768 "$dir/nsm.ko"
# A command line of the shape nitro-cli's blobs carry, with a trailing newline as in the file.
echo "reboot=k panic=30 pci=off nomodules console=ttyS0 i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd random.trust_cpu=on stand-in" >"$dir/cmdline"
echo "stand-in Nitro blobs (not bootable) in $dir: $(cd "$dir" && sha256sum bzImage cmdline init nsm.ko | awk '{printf "%s %.12s  ", $2, $1}')"
