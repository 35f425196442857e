# Interoperability of sealed requests (docs/SEALED.md) with an OHTTP implementation we did not
# write: tools/interop-ohttp seals and opens with Cloudflare's `aloha` crate (its own RFC 9458
# framing and RFC 9292 codec), not the martinthomson `ohttp` crate that the model server uses.
# The harness is its own Cargo workspace: every crate pinned with its checksum by
# tools/interop-ohttp/Cargo.lock (--locked), built into build/interop-ohttp/.
#
#   make interop-ohttp                     build the harness
#   make test-interop-ohttp-harness        its own tests (a fake gateway; no stack needed)
#   make test-interop-ohttp [URL=...]      tests/interop/ohttp.sh against a running stack
#                                          (`make dev` in another terminal; URL defaults to PORT's)

INTEROP_OHTTP_DIR := build/interop-ohttp
INTEROP_OHTTP_ARGS := --locked --manifest-path tools/interop-ohttp/Cargo.toml --target-dir $(INTEROP_OHTTP_DIR)

.PHONY: interop-ohttp test-interop-ohttp-harness test-interop-ohttp

interop-ohttp: ## Build the OHTTP interop harness (Cloudflare's aloha, pinned) into build/interop-ohttp/
	$(CARGO) build --release $(INTEROP_OHTTP_ARGS)

test-interop-ohttp-harness: ## Run the OHTTP interop harness's own tests (fake gateway, no stack)
	$(CARGO) test $(INTEROP_OHTTP_ARGS)

test-interop-ohttp: interop-ohttp ## Seal a request with aloha against a running stack (URL, default http://127.0.0.1:PORT)
	INTEROP_OHTTP=$(INTEROP_OHTTP_DIR)/release/interop-ohttp tests/interop/ohttp.sh $(or $(URL),http://127.0.0.1:$(PORT))
