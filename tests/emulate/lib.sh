# Shared by tests/emulate/e2e.sh and tests/emulate/sealed.sh (sourced, not run): the pass/fail
# counters, timing, and an answer reduced to what must not differ between routes and runs.

passed=0 failed=0
ok() { echo "ok: $*"; passed=$((passed + 1)); }
bad() { echo "FAILED: $*"; failed=$((failed + 1)); }
now() { date +%s.%N; }
since() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.2f}')" "$1" "$(now)"; }

# An answer without what differs by route and by run: the backend's name and the stage timings.
answer() { python3 -c 'import json, sys
a = json.load(sys.stdin)
a.pop("backend")
a.pop("timings_ms")
for p in a["predictions"]:
    p.pop("timings_us")
print(json.dumps(a, sort_keys=True))' 2>/dev/null || true; }
