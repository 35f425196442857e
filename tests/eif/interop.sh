#!/usr/bin/env bash
# Our EIF tool (tools/eif) against AWS's own EIF code, which we did not write: the
# `aws-nitro-enclaves-image-format` crate, the reader, hasher and writer under nitro-cli's
# build-enclave and describe-eif, driven by tools/eif-interop (`make test-eif-interop` builds both).
#
#   tests/eif/interop.sh
#
# With STAND-IN inputs (scripts/nitro/stand-in-blobs.sh: fixed fake bytes, not bootable; a boot
# ramdisk and an app ramdisk made by our `eif init-ramdisk` / `eif app-ramdisk` from them, a fake
# enclave binary and a fake model), and with small deterministic blobs in other shapes (one
# ramdisk, three ramdisks):
#   1. `eif build` writes an EIF; their reader's CRC check passes and their PCR0/1/2 equal the
#      ones `eif build` printed and `eif describe` reports.
#   2. their writer builds an EIF from the same inputs; `eif describe` accepts it and reports
#      their PCRs; `eif extract` gives back the kernel, the command line and the ramdisks.
#   3. the two EIFs' headers agree (version, flags, default memory and CPUs, section count).
#   4. one byte flipped in each EIF (kernel, command line, last ramdisk, header, CRC field): both
#      readers refuse it, ours with exit status 1.
#   5. bytes after the last section: ours refuses them (their reader ignores up to 11 such bytes,
#      see the note printed).
# Ends with "N passed, M failed"; exits non-zero if anything failed.
#
# Environment: EIF_TOOL (our tool; default target/release/eif), EIF_INTEROP (theirs; default
# build/eif-interop/release/eif-interop). Both are built here by make when missing.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
ours=${EIF_TOOL:-$root/target/release/eif}
theirs=${EIF_INTEROP:-$root/build/eif-interop/release/eif-interop}

die() { echo "interop.sh: $*" >&2; exit 1; }
command -v python3 >/dev/null || die "python3 is needed (to read the JSON)"
if [ ! -x "$ours" ]; then
  [ -z "${EIF_TOOL:-}" ] || die "$ours is missing"
  make -C "$root" --no-print-directory eif-tool >&2
fi
if [ ! -x "$theirs" ]; then
  [ -z "${EIF_INTEROP:-}" ] || die "$theirs is missing"
  make -C "$root" --no-print-directory eif-interop >&2
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
passed=0 failed=0
ok() { echo "ok: $*"; passed=$((passed + 1)); }
bad() { echo "FAILED: $*"; failed=$((failed + 1)); }
note() { echo "note: $*"; }

# pcrs JSON -> "PCR0 PCR1 PCR2" (from {"Measurements": {...}}), empty if unreadable.
pcrs() { python3 - "$1" <<'EOF' 2>/dev/null || true
import json, sys
m = json.load(open(sys.argv[1]))["Measurements"]
print(m["PCR0"], m["PCR1"], m["PCR2"])
EOF
}
# header JSON KEY...: their reader's header fields, space-separated.
header() { python3 - "$@" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
h = d["Header"]
print(d["EifVersion"], h["Flags"], h["DefaultMemory"], h["DefaultCpus"], h["NumSections"], h["MagicOk"])
EOF
}
# data_offset JSON INDEX WHERE: file offset of a byte in section INDEX's data (WHERE: first,
# middle, last), from their reader's header table (each offset is the section header's).
data_offset() { python3 - "$@" <<'EOF'
import json, sys
t = json.load(open(sys.argv[1]))["Header"]["SectionTable"][int(sys.argv[2])]
data, size = t["Offset"] + 12, t["Size"]
print({"first": data, "middle": data + size // 2, "last": data + size - 1}[sys.argv[3]])
EOF
}
flip() { # flip IN OFFSET OUT: OUT is IN with the low bit of byte OFFSET inverted
  python3 -c 'import sys
b = bytearray(open(sys.argv[1], "rb").read()); b[int(sys.argv[2])] ^= 1
open(sys.argv[3], "wb").write(b)' "$@"
}
short() { tr '\n' ' ' <"$1" | head -c 200; }

# Inputs. The realistic set: stand-in blobs, our boot and app ramdisks.
"$root/scripts/nitro/stand-in-blobs.sh" "$tmp/blobs" >/dev/null
mkdir -p "$tmp/model" "$tmp/in"
yes "stand-in enclave binary (tests/eif/interop.sh)" | head -c 300000 >"$tmp/enclave" || true
for f in model.onnx labels.txt manifest.txt; do echo "stand-in $f" >"$tmp/model/$f"; done
"$ours" init-ramdisk --init "$tmp/blobs/init" --file "nsm.ko=$tmp/blobs/nsm.ko" --output "$tmp/boot.cpio" >/dev/null ||
  die "eif init-ramdisk failed"
"$ours" app-ramdisk --enclave "$tmp/enclave" --model-dir "$tmp/model" --output "$tmp/app.cpio" >/dev/null ||
  die "eif app-ramdisk failed"
# Small deterministic blobs: SHA-256 in counter mode, so every machine has the same bytes.
gen() { python3 -c 'import hashlib, sys
seed, n = sys.argv[1].encode(), int(sys.argv[2]); out = bytearray(); i = 0
while len(out) < n:
    out += hashlib.sha256(seed + i.to_bytes(8, "big")).digest(); i += 1
sys.stdout.buffer.write(bytes(out[:n]))' "$1" "$2" >"$3"; }
gen kernel 100000 "$tmp/in/kernel"
gen rd1 5000 "$tmp/in/rd1"
gen rd2 7001 "$tmp/in/rd2"
gen rd3 12345 "$tmp/in/rd3"
printf 'console=ttyS0 reboot=k' >"$tmp/in/cmdline"

# name|kernel|cmdline|ramdisks...
cases=(
  "stand-in blobs + our ramdisks|$tmp/blobs/bzImage|$tmp/blobs/cmdline|$tmp/boot.cpio $tmp/app.cpio"
  "one ramdisk|$tmp/in/kernel|$tmp/in/cmdline|$tmp/in/rd1"
  "three ramdisks|$tmp/in/kernel|$tmp/in/cmdline|$tmp/in/rd1 $tmp/in/rd2 $tmp/in/rd3"
)

n=0
for c in "${cases[@]}"; do
  IFS='|' read -r name kernel cmdline rds <<<"$c"
  n=$((n + 1)); d=$tmp/case$n; mkdir -p "$d"
  rd_args=(); for r in $rds; do rd_args+=(--ramdisk "$r"); done

  # 1. Ours written, theirs read.
  if ! "$ours" build --kernel "$kernel" --cmdline "$cmdline" "${rd_args[@]}" --output "$d/ours.eif" \
      >"$d/ours.build" 2>"$d/err"; then
    bad "$name: eif build failed: $(short "$d/err")"; continue
  fi
  p_ours=$(pcrs "$d/ours.build")
  "$ours" describe "$d/ours.eif" >"$d/ours.describe" 2>"$d/err" || true
  p_ours_desc=$(pcrs "$d/ours.describe")
  if "$theirs" pcrs "$d/ours.eif" >"$d/ours.theirs" 2>"$d/err"; then
    p=$(pcrs "$d/ours.theirs")
    if [ -n "$p_ours" ] && [ "$p" = "$p_ours" ] && [ "$p" = "$p_ours_desc" ]; then
      ok "$name: our EIF: their reader's CRC check passes, their PCR0/1/2 = ours (PCR0 ${p:0:16}...)"
    else
      bad "$name: our EIF: PCRs differ: eif build [$p_ours], eif describe [$p_ours_desc], theirs [$p]"
    fi
  else
    bad "$name: our EIF refused by their reader: $(short "$d/err")"
  fi

  # 2. Theirs written, ours read.
  if ! "$theirs" build --kernel "$kernel" --cmdline "$cmdline" "${rd_args[@]}" --output "$d/theirs.eif" \
      >"$d/theirs.build" 2>"$d/err"; then
    bad "$name: their writer failed: $(short "$d/err")"; continue
  fi
  p_theirs=$(pcrs "$d/theirs.build")
  "$theirs" pcrs "$d/theirs.eif" >"$d/theirs.theirs" 2>"$d/err" || bad "$name: their reader refuses their own EIF"
  if "$ours" describe "$d/theirs.eif" >"$d/theirs.describe" 2>"$d/err"; then
    p=$(pcrs "$d/theirs.describe")
    if [ -n "$p_theirs" ] && [ "$p" = "$p_theirs" ] && [ "$p" = "$(pcrs "$d/theirs.theirs")" ]; then
      ok "$name: their EIF: eif describe accepts it, same PCR0/1/2 as theirs"
    else
      bad "$name: their EIF: PCRs differ: their writer [$p_theirs], eif describe [$p]"
    fi
  else
    bad "$name: their EIF refused by eif describe: $(short "$d/err")"
  fi
  [ "$p_ours" = "$p_theirs" ] && ok "$name: both writers give the same PCRs for the same inputs" ||
    bad "$name: same inputs, different PCRs: ours [$p_ours], theirs [$p_theirs]"
  if "$ours" extract "$d/theirs.eif" --kernel "$d/x.kernel" --initrd "$d/x.initrd" --cmdline "$d/x.cmdline" \
      2>"$d/err"; then
    # shellcheck disable=SC2086
    cat $rds >"$d/want.initrd"
    python3 -c 'import sys; sys.stdout.write(open(sys.argv[1]).read().strip())' "$cmdline" >"$d/want.cmdline"
    # eif extract may end the command line with a newline, like the blobs' file.
    python3 -c 'import sys; sys.stdout.write(open(sys.argv[1]).read().rstrip("\n"))' "$d/x.cmdline" >"$d/got.cmdline"
    if cmp -s "$d/x.kernel" "$kernel" && cmp -s "$d/x.initrd" "$d/want.initrd" && cmp -s "$d/got.cmdline" "$d/want.cmdline"; then
      ok "$name: eif extract of their EIF gives the kernel, the command line and the ramdisks"
    else
      bad "$name: eif extract of their EIF: kernel $(cmp -s "$d/x.kernel" "$kernel" && echo same || echo differs), initrd $(cmp -s "$d/x.initrd" "$d/want.initrd" && echo same || echo differs), cmdline [$(cat "$d/x.cmdline")]"
    fi
  else
    bad "$name: eif extract refused their EIF: $(short "$d/err")"
  fi

  # 2b. Their writer given our metadata (read back from our EIF by their reader): the same file,
  # byte for byte (header, section table, section headers, metadata JSON, CRC).
  meta_args=()
  while IFS= read -r -d '' a; do meta_args+=("$a"); done < <(python3 - "$d/ours.theirs" <<'EOF'
import json, sys
m = json.load(open(sys.argv[1]))["Metadata"]
b = m["BuildMetadata"]
args = ["--name", m["ImageName"], "--version", m["ImageVersion"], "--build-time", b["BuildTime"],
        "--build-tool", b["BuildTool"], "--build-tool-version", b["BuildToolVersion"],
        "--img-os", b["OperatingSystem"], "--img-kernel", b["KernelVersion"]]
sys.stdout.write("".join(a + "\0" for a in args))
EOF
  )
  if "$theirs" build --kernel "$kernel" --cmdline "$cmdline" "${rd_args[@]}" "${meta_args[@]}" \
      --output "$d/theirs-same.eif" >/dev/null 2>"$d/err"; then
    if cmp -s "$d/ours.eif" "$d/theirs-same.eif"; then
      ok "$name: given our metadata, their writer writes our EIF byte for byte ($(wc -c <"$d/ours.eif") bytes)"
    else
      bad "$name: given our metadata, their EIF differs from ours: $(cmp "$d/ours.eif" "$d/theirs-same.eif" 2>&1 | head -n 1) (byte 1 is offset 0; sizes $(wc -c <"$d/ours.eif") and $(wc -c <"$d/theirs-same.eif"))"
    fi
  else
    bad "$name: their writer with our metadata failed: $(short "$d/err")"
  fi

  # 3. Headers, as their reader parses them.
  h_ours=$(header "$d/ours.theirs"); h_theirs=$(header "$d/theirs.theirs")
  [ "$h_ours" = "$h_theirs" ] &&
    ok "$name: headers agree (version flags memory cpus sections magic: $h_ours)" ||
    bad "$name: headers differ (version flags memory cpus sections magic): ours [$h_ours], theirs [$h_theirs]"

  # 4. One byte flipped: both refuse. Only in the first case (the others have the same layout).
  if [ "$n" = 1 ]; then
    for who in ours theirs; do
      eif=$d/$who.eif; j=$d/$who.theirs; last=$(( $(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["Header"]["SectionTable"]))' "$j") - 1 ))
      for spot in "kernel:$(data_offset "$j" 0 middle)" "cmdline:$(data_offset "$j" 1 first)" \
          "last ramdisk:$(data_offset "$j" "$last" last)" "header default memory:15" "header CRC field:547"; do
        what=${spot%:*}; off=${spot##*:}
        flip "$eif" "$off" "$d/bad.eif"
        rc_o=0; "$ours" describe "$d/bad.eif" >/dev/null 2>"$d/err.o" || rc_o=$?
        rc_t=0; "$theirs" pcrs "$d/bad.eif" >/dev/null 2>"$d/err.t" || rc_t=$?
        if [ "$rc_o" = 1 ] && [ "$rc_t" != 0 ]; then
          ok "$who EIF, $what byte $off flipped: both refuse (ours: $(short "$d/err.o"))"
        else
          bad "$who EIF, $what byte $off flipped: eif describe exit $rc_o ($(short "$d/err.o")), theirs exit $rc_t ($(short "$d/err.t"))"
        fi
      done
    done

    # 5. Bytes after the last section.
    cp "$d/ours.eif" "$d/bad.eif"; printf 'extra' >>"$d/bad.eif"
    rc_o=0; "$ours" describe "$d/bad.eif" >/dev/null 2>"$d/err.o" || rc_o=$?
    rc_t=0; "$theirs" pcrs "$d/bad.eif" >/dev/null 2>"$d/err.t" || rc_t=$?
    [ "$rc_o" = 1 ] && ok "5 bytes after the last section: eif describe refuses them ($(short "$d/err.o"))" ||
      bad "5 bytes after the last section: eif describe exit $rc_o"
    [ "$rc_t" = 0 ] && note "their reader accepts those 5 bytes (it stops at a section header it cannot read whole, and the CRC does not cover them)"
  fi
done

# The command line's surrounding whitespace: nitro-cli build-enclave trims the blobs' cmdline
# file (str::trim), and so do eif-interop build and eif build: the same PCRs.
printf '  console=ttyS0 reboot=k\n\n' >"$tmp/in/cmdline2"
"$ours" build --kernel "$tmp/in/kernel" --cmdline "$tmp/in/cmdline2" --ramdisk "$tmp/in/rd1" --output "$tmp/o2.eif" >"$tmp/o2.json" 2>/dev/null || true
"$theirs" build --kernel "$tmp/in/kernel" --cmdline "$tmp/in/cmdline2" --ramdisk "$tmp/in/rd1" --output "$tmp/t2.eif" >"$tmp/t2.json" 2>/dev/null || true
if [ -n "$(pcrs "$tmp/o2.json")" ] && [ "$(pcrs "$tmp/o2.json")" = "$(pcrs "$tmp/t2.json")" ]; then
  ok "a cmdline file with spaces before and two newlines after: both trim it, the same PCRs"
else
  bad "a cmdline file with spaces before and two newlines after: PCRs differ"
fi

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
