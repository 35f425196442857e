# Open Inference Protocol V2 (issue 13): `make oip-venv` makes build/oip-venv with tritonclient[http]
# (tools/oip/requirements.txt, pinned and hash-checked); `make test-oip` runs the Rust test that
# drives tritonclient against a real parent and model servers (parent/tests/oip_tritonclient.rs,
# which makes the venv itself, so `make test` needs no extra step).

.PHONY: oip-venv test-oip

oip-venv: ## Make build/oip-venv with tritonclient[http] (pinned, hash-checked) for the OIP V2 test
	@tools/oip/venv.sh >/dev/null

test-oip: ## Run the OIP V2 tests (tritonclient and raw HTTP) against a real stack
	$(CARGO) build --workspace --locked --bins --features $(TEST_FEATURES)
	$(CARGO) test --workspace --locked --features $(TEST_FEATURES) --test oip_tritonclient --test oip_v2
