#!/usr/bin/env bash
# Fetches the emulation EIF's kernel from Debian's archive, never installing it:
#   kernel.sh OUT_DIR
# Writes OUT_DIR/vmlinuz (the bzImage as Debian ships it), OUT_DIR/config, OUT_DIR/cmdline,
# OUT_DIR/modules/ (the vsock and virtio modules the emulation init loads, with load.order: one
# file name a line, dependencies first) and OUT_DIR/kernel.txt (package, version, the .deb's
# SHA-256).
#
# Why Debian's cloud kernel: AWS's kernel is only on EC2 (or GitHub, and the project must not
# carry it); Debian's is signed by its archive, and `apt-get download` checks the .deb against
# the SHA-256 in apt's signed index, which we check again and record. The kernel is for
# emulation only: it finds virtio-mmio through ACPI (QEMU's microvm), not through the command
# line as on Nitro, so it would not get vsock on a real enclave.
#
# Version: `linux-image-cloud-amd64` is resolved at run time (Debian drops superseded kernels
# from the archive, so a hard-coded version would stop working). KERNEL_DEB_VERSION pins the
# metapackage's version (e.g. KERNEL_DEB_VERSION=6.1.192-3), if apt still knows it. The emulated
# PCR0/PCR1 change with every kernel update: compute them, never hard-code them.
#
# Downloads are cached under OUT_DIR/cache: a second run with the same resolution copies nothing.
set -euo pipefail

[ $# -eq 1 ] || { echo "usage: $0 OUT_DIR" >&2; exit 2; }
out=$1
meta=linux-image-cloud-amd64
# The AWS x86_64 command line (aws-nitro-enclaves-cli blobs/x86_64/cmdline), kept as it is,
# `nomodules` included (not a kernel parameter: it reaches init, which ignores it), plus where
# the emulation's parent is: vhost-device-vsock's Unix-socket mode only forwards to CID 2.
aws_cmdline="reboot=k panic=30 pci=off nomodules console=ttyS0 i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd random.trust_cpu=on"
emu_cmdline="$aws_cmdline nitro_ml.parent_cid=2"
# What init must have to reach vsock on microvm (virtio-mmio, no PCI); their dependencies are
# added from each module's own `depends=` field. A module built into the kernel is skipped.
# virtio_rng stands in for the NSM's hwrng (nsm.ko on Nitro): it binds only when the launcher
# adds a virtio-rng device (`emulate --rng on`) and is idle otherwise.
roots=(virtio_mmio vmw_vsock_virtio_transport virtio_rng)

die() { echo "$0: error: $*" >&2; exit 1; }
command -v apt-cache >/dev/null || die "apt-cache not found: this script needs a Debian-like host"
command -v dpkg-deb >/dev/null || die "dpkg-deb not found"

# 1. Resolve the image package and its version.
spec=$meta${KERNEL_DEB_VERSION:+=$KERNEL_DEB_VERSION}
pkg=$(apt-cache depends --no-recommends --no-suggests "$spec" 2>/dev/null \
      | sed -nE 's/^ *Depends: (linux-image-[^ ]+)$/\1/p' | head -n 1)
[ -n "$pkg" ] || die "apt cannot resolve $spec (run apt-get update; is KERNEL_DEB_VERSION still in the archive?)"
# The first stanza of `apt-cache show` is the candidate; with a pin, the pinned version.
stanza=$(apt-cache show "$pkg${KERNEL_DEB_VERSION:+=$KERNEL_DEB_VERSION}" | sed '/^$/q')
version=$(sed -nE 's/^Version: //p' <<<"$stanza")
sha256=$(sed -nE 's/^SHA256: //p' <<<"$stanza")
[ -n "$version" ] || die "apt's index has no version of $pkg"
[ -n "$sha256" ] || die "apt's index has no SHA256 for $pkg=$version"
deb_name="${pkg}_${version//:/%3a}_amd64.deb"

# 2. Download (cached) and check the .deb against apt's index.
mkdir -p "$out/cache"
deb="$out/cache/$deb_name"
if ! { [ -f "$deb" ] && echo "$sha256  $deb" | sha256sum --check --status; }; then
    rm -f "$deb"
    # Running as root, apt warns that its _apt user cannot write here; that is expected.
    (cd "$out/cache" && apt-get download "$pkg=$version" 2>&1 >/dev/null | grep -v "unsandboxed as root" >&2 || true)
    [ -f "$deb" ] || die "apt-get download did not write $deb"
fi
echo "$sha256  $deb" | sha256sum --check --status || die "$deb does not match apt's SHA256 $sha256"

# 3. Extract (cached per .deb).
root="$out/cache/root-$pkg-$version"
if [ ! -f "$root/.done" ]; then
    rm -rf "$root"
    mkdir -p "$root"
    dpkg-deb -x "$deb" "$root"
    touch "$root/.done"
fi
release=${pkg#linux-image-}
[ -f "$root/boot/vmlinuz-$release" ] || die "$deb has no boot/vmlinuz-$release"
moddir="$root/lib/modules/$release"
config="$root/boot/config-$release"

# 4. The modules: closure of $roots over `depends=`, dependencies first.
# Module names use `_`; some files use `-` (virtio-rng.ko): the kernel treats both as one.
find_ko() {
    local dashed=${1//_/-}
    find "$moddir/kernel" \( -name "$1.ko" -o -name "$1.ko.xz" -o -name "$1.ko.zst" \
        -o -name "$dashed.ko" -o -name "$dashed.ko.xz" -o -name "$dashed.ko.zst" \) | head -n 1
}
modinfo_depends() {
    local f=$1
    case $f in
        *.xz) xz -dc "$f" ;;
        *.zst) zstd -dcq "$f" ;;
        *) cat "$f" ;;
    esac | tr '\0' '\n' | sed -nE 's/^depends=//p' | head -n 1 | tr ',' ' '
}
builtin() { grep -qE "/(${1}|${1//_/-})\.ko$" "$moddir/modules.builtin" 2>/dev/null; }
order=()
visit() {
    local name=${1//-/_} dep f
    for f in "${order[@]}"; do f=$(basename "${f%%.ko*}"); [ "${f//-/_}" = "$name" ] && return 0; done
    if builtin "$name"; then return 0; fi
    f=$(find_ko "$name")
    [ -n "$f" ] || die "module $name is neither built into $release nor shipped in $deb"
    for dep in $(modinfo_depends "$f"); do visit "$dep"; done
    order+=("$f")
}
for r in "${roots[@]}"; do visit "$r"; done

# 5. Outputs, replaced as a whole.
rm -rf "$out/modules"
mkdir -p "$out/modules"
: >"$out/modules/load.order"
for f in "${order[@]}"; do
    install -m 0644 "$f" "$out/modules/"
    basename "$f" >>"$out/modules/load.order"
done
install -m 0644 "$root/boot/vmlinuz-$release" "$out/vmlinuz"
install -m 0644 "$config" "$out/config"
printf '%s\n' "$emu_cmdline" >"$out/cmdline"
{
    echo "package=$pkg"
    echo "version=$version"
    echo "deb=$deb_name"
    echo "deb_sha256=$sha256"
    echo "vmlinuz_sha256=$(sha256sum "$out/vmlinuz" | cut -d' ' -f1)"
    echo "modules=$(tr '\n' ' ' <"$out/modules/load.order" | sed 's/ $//')"
} >"$out/kernel.txt"
echo "emulation kernel: $pkg $version ($release), modules: $(tr '\n' ' ' <"$out/modules/load.order")-> $out"
