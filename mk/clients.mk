# The Python client for sealed requests (tools/python-client, package sealed_client; the Rust one
# is tools/sealed-client, tested by cargo). `make client-venv` makes build/client-venv with its
# pinned, hash-checked requirements; `make test-clients` runs its unit tests (every attestation
# refusal on documents made in the test, the RFC 9180 / 9458 / 9292 vectors, a fake parent over
# loopback) and ends with "N passed, M failed", the line `make test` reads for its clients suite.

CLIENT_DIR := tools/python-client
CLIENT_PY  := build/client-venv/bin/python

.PHONY: client-venv test-clients

client-venv: ## Make build/client-venv (cbor2, cryptography, pyhpke; pinned, hash-checked) for python -m sealed_client
	@$(CLIENT_DIR)/venv.sh >/dev/null

test-clients: client-venv ## Run the Python sealed-request client's unit tests (ends "N passed, M failed")
	$(CLIENT_PY) $(CLIENT_DIR)/tests/run.py
