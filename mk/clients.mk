# The Python client for sealed requests (tools/python-client, package sealed_client; the Rust one
# is tools/sealed-client, tested by cargo). `make client-venv` makes build/client-venv with its
# pinned, hash-checked requirements; `make test-clients` runs its unit tests (every attestation
# refusal on documents made in the test, the RFC 9180 / 9458 / 9292 vectors, a fake parent over
# loopback), then the end-to-end round trip below, and ends with "N passed, M failed", the line
# `make test` reads for its clients suite.

CLIENT_DIR := tools/python-client
CLIENT_PY  := build/client-venv/bin/python

.PHONY: client-venv test-clients

client-venv: ## Make build/client-venv (cbor2, cryptography, pyhpke; pinned, hash-checked) for python -m sealed_client
	@$(CLIENT_DIR)/venv.sh >/dev/null

# Then tests/sealed/roundtrip.sh: the stack as `make dev` runs it (scripts/dev.sh with the debug
# binaries `make test` builds), the plaintext top-5 against the Rust and the Python clients' sealed
# answers, OHTTP implementations we did not write (tests/interop/ohttp.sh), and refusals. One
# "N passed, M failed" line sums both.
test-clients: client-venv ## Python client unit tests, then sealed requests end to end through dev.sh (ends "N passed, M failed")
	$(CARGO) build --workspace --locked --bins --features $(TEST_FEATURES)
	@rc=0; out=$$(mktemp -d); trap 'rm -rf "$$out"' EXIT; \
	$(CLIENT_PY) $(CLIENT_DIR)/tests/run.py 2>&1 | tee "$$out/unit" || rc=1; \
	CLIENT_PY=$(CLIENT_PY) tests/sealed/roundtrip.sh 2>&1 | tee "$$out/e2e" || rc=1; \
	p=0; f=0; for part in unit e2e; do \
	  counts=$$(sed -nE 's/^([0-9]+) passed, ([0-9]+) failed.*/\1 \2/p' "$$out/$$part" | tail -n 1); \
	  read -r a b <<< "$${counts:-0 1}"; p=$$((p + a)); f=$$((f + b)); \
	done; \
	echo "$$p passed, $$f failed"; [ "$$rc" = 0 ] && [ "$$f" = 0 ]
