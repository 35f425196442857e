#!/usr/bin/env bash
# Supply-chain checks (deny.toml). Licenses, bans and sources need only
# Cargo.lock and the local registry cache: they always run, offline.
# Advisories need the RustSec database, a git repository on GitHub: this
# script uses it when it is already on disk (ADVISORY_DB=/path/to/advisory-db
# or cargo-deny's own cache, ~/.cargo/advisory-dbs/), fetches it when
# DENY_FETCH=1 and GitHub is reachable, and otherwise says plainly that
# advisories were NOT checked. DENY_REQUIRE_ADVISORIES=1 turns that into a failure.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo deny --version >/dev/null 2>&1; then
    echo "deny: cargo-deny is not installed: cargo install cargo-deny --locked" >&2
    exit 2
fi

# cargo-deny reads every package in Cargo.lock, for every platform; a build
# downloads only this platform's, so fetch the rest first (crates.io only).
echo "== cargo fetch (every package in Cargo.lock, for cargo-deny)"
cargo fetch --locked
echo "== cargo deny: licenses, bans, sources (offline)"
cargo deny --offline check licenses bans sources

db_root="${HOME}/.cargo/advisory-dbs"
have_db() { compgen -G "${db_root}/advisory-db-*/.git" >/dev/null; }

if [ -n "${ADVISORY_DB:-}" ]; then
    [ -d "$ADVISORY_DB/.git" ] || { echo "deny: ADVISORY_DB=$ADVISORY_DB is not a git checkout of RustSec/advisory-db" >&2; exit 2; }
    mkdir -p "$db_root"
    # cargo-deny looks for the database under its own cache directory.
    target="${db_root}/advisory-db-3157b0e258782691"
    [ -e "$target" ] || ln -s "$(cd "$ADVISORY_DB" && pwd)" "$target"
fi

if [ "${DENY_FETCH:-0}" = 1 ]; then
    echo "== cargo deny: fetching the advisory database"
    cargo deny fetch db || echo "deny: fetch failed (no route to GitHub?)" >&2
fi

if have_db; then
    age=$(git -C "$(ls -d "${db_root}"/advisory-db-*/ | head -n1)" log -1 --format=%cr 2>/dev/null || echo "unknown age")
    echo "== cargo deny: advisories (local database, last commit $age)"
    cargo deny --offline check advisories
else
    echo "deny: advisories NOT checked: no RustSec database on this machine and GitHub is unreachable" >&2
    echo "deny: (set ADVISORY_DB=/path/to/advisory-db, or DENY_FETCH=1 where GitHub is reachable)" >&2
    if [ "${DENY_REQUIRE_ADVISORIES:-0}" = 1 ]; then
        exit 1
    fi
fi
