#!/usr/bin/env bash
# Proves the static build is reproducible: exports HEAD (`git archive`, so only committed files)
# into two temporary directories whose paths differ in name and length, builds each from
# scratch with build-static.sh, and compares the SHA-256 of the two binaries.
# Two clean release builds of tract: ~15 minutes on 2 cores.
# REPRO_AGAINST=FILE builds only once and compares with FILE, a binary built from scratch from
# the same commit in another directory (CI: its fresh clone's `make static`), which halves the
# time and checks the same thing: two builds from scratch, in directories with different paths.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd -P)
. "$here/lib.sh"

repo=$(git rev-parse --show-toplevel)
commit=$(git -C "$repo" rev-parse HEAD)
# REPRO_TREE=worktree builds a snapshot of the working tree (tracked and untracked, not ignored
# files) instead of HEAD: the same snapshot goes into both directories.
if [ "${REPRO_TREE:-HEAD}" = worktree ]; then
    snapshot=$(mktemp "${TMPDIR:-/tmp}/static-repro-tree.XXXXXX.tar")
    (cd "$repo" && git ls-files -z -co --exclude-standard | xargs -0 tar -cf "$snapshot" --)
    export_tree() { tar -xf "$snapshot" -C "$1"; }
    commit="the working tree (at $commit)"
else
    snapshot=
    git -C "$repo" diff --quiet HEAD -- || say "note: uncommitted changes are not part of this check (it builds HEAD $commit)"
    export_tree() { git -C "$repo" archive --format=tar "$commit" | tar -x -C "$1"; }
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/static-repro.XXXXXX")
trap 'rm -rf "$tmp" ${snapshot:+"$snapshot"}' EXIT
dirs=("$tmp/a" "$tmp/a-much-longer-directory-name/src")
if [ -n "${REPRO_AGAINST:-}" ]; then
    [ -f "$REPRO_AGAINST" ] || die "REPRO_AGAINST=$REPRO_AGAINST: no such file (run make static first)"
    dirs=("${dirs[1]}")
fi
for d in "${dirs[@]}"; do
    mkdir -p "$d"
    export_tree "$d"
    say "building $commit in $d"
    "$here/build-static.sh" "$d" "$d.bin"
done
if [ -n "${REPRO_AGAINST:-}" ]; then
    first=$(cd "$(dirname "$REPRO_AGAINST")" && pwd -P)/$(basename "$REPRO_AGAINST")
    dirs=("${first%.bin}" "${dirs[0]}")
    cp "$first" "$tmp/first.bin"
    a=$(sha256sum "$tmp/first.bin" | cut -d' ' -f1)
else
    a=$(sha256sum "${dirs[0]}.bin" | cut -d' ' -f1)
fi
b=$(sha256sum "${dirs[1]}.bin" | cut -d' ' -f1)
say "build 1: $a  (${dirs[0]})"
say "build 2: $b  (${dirs[1]})"
if [ "$a" != "$b" ]; then
    die "the two builds differ: the static build is not reproducible"
fi
say "reproducible: both builds of $commit have sha256 $a ($(stat -c %s "${dirs[1]}.bin") bytes)"
