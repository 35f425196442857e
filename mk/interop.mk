# Interoperability of sealed requests (docs/SEALED.md) with OHTTP code we did not write, in two
# legs, neither sharing code with the martinthomson `ohttp` crate that the model server uses:
#   aloha  tools/interop-ohttp (Rust): Cloudflare's `aloha` crate does the RFC 9458 framing, the
#          HPKE calls and the RFC 9292 codec. Its own Cargo workspace, every crate pinned with its
#          checksum by tools/interop-ohttp/Cargo.lock (--locked).
#   js     tools/interop-ohttp/js (Node >= 20): dajiaji's HPKE (@hpke/core, @hpke/dhkem-x25519)
#          and BHTTP decoder (bhttp-js) under our own RFC 9458 framing, which its test checks
#          against RFC 9458 Appendix A. Pinned by package-lock.json (integrity hashes), `npm ci`.
# Both are built or installed into build/interop-ohttp/.
#
#   make interop-ohttp                     build the Rust harness, install the JavaScript one
#   make test-interop-ohttp-harness        their own tests (fake gateway, RFC vectors; no stack)
#   make test-interop-ohttp [URL=...]      tests/interop/ohttp.sh against a running stack
#                                          (`make dev` in another terminal; URL defaults to PORT's)

INTEROP_OHTTP_DIR := build/interop-ohttp
INTEROP_OHTTP_ARGS := --locked --manifest-path tools/interop-ohttp/Cargo.toml --target-dir $(INTEROP_OHTTP_DIR)
INTEROP_OHTTP_JS := $(INTEROP_OHTTP_DIR)/js
INTEROP_OHTTP_JS_SRC := $(wildcard tools/interop-ohttp/js/*.mjs) tools/interop-ohttp/js/package.json \
                        tools/interop-ohttp/js/package-lock.json

.PHONY: interop-ohttp test-interop-ohttp-harness test-interop-ohttp

interop-ohttp: $(INTEROP_OHTTP_JS)/.installed ## Build/install the OHTTP interop harness (aloha, and JS on @hpke) into build/interop-ohttp/
	$(CARGO) build --release $(INTEROP_OHTTP_ARGS)

# The scripts are copied beside their node_modules (ESM resolves packages from the importing file).
$(INTEROP_OHTTP_JS)/.installed: $(INTEROP_OHTTP_JS_SRC)
	rm -rf $(INTEROP_OHTTP_JS)
	mkdir -p $(INTEROP_OHTTP_JS)
	cp $(INTEROP_OHTTP_JS_SRC) $(INTEROP_OHTTP_JS)/
	cd $(INTEROP_OHTTP_JS) && npm ci --ignore-scripts --no-audit --no-fund
	touch $@

test-interop-ohttp-harness: $(INTEROP_OHTTP_JS)/.installed ## Run the OHTTP interop harness's own tests (fake gateway, RFC 9458 vectors; no stack)
	$(CARGO) test $(INTEROP_OHTTP_ARGS)
	cd $(INTEROP_OHTTP_JS) && node --test ohttp.test.mjs

test-interop-ohttp: interop-ohttp ## Seal requests with aloha and JS/@hpke against a running stack (URL, default http://127.0.0.1:PORT)
	INTEROP_OHTTP=$(INTEROP_OHTTP_DIR)/release/interop-ohttp INTEROP_OHTTP_JS=$(INTEROP_OHTTP_JS)/client.mjs \
	  tests/interop/ohttp.sh $(or $(URL),http://127.0.0.1:$(PORT))

# Interoperability of our EIF tool (tools/eif) with AWS's own EIF code, which we did not write:
# tools/eif-interop drives the `aws-nitro-enclaves-image-format` crate (=0.3.0, the reader, PCR
# hasher and writer under nitro-cli's build-enclave and describe-eif). Its own Cargo workspace,
# every crate pinned with its checksum by tools/eif-interop/Cargo.lock (--locked); it links the
# system OpenSSL (openssl-sys: Debian's libssl-dev and pkg-config, which .ci/run must install).
#
#   make eif-interop          build it into build/eif-interop/
#   make test-eif-interop     tests/eif/interop.sh: PCRs, CRC and refusals, ours against theirs

EIF_INTEROP_DIR := build/eif-interop

.PHONY: eif-interop test-eif-interop

eif-interop: ## Build the EIF interop harness (AWS's aws-nitro-enclaves-image-format) into build/eif-interop/
	@pkg-config --exists openssl 2>/dev/null || { echo "eif-interop needs OpenSSL's headers and pkg-config: apt-get install libssl-dev pkg-config" >&2; exit 1; }
	CARGO_TARGET_DIR=$(EIF_INTEROP_DIR) $(CARGO) build --release --locked --manifest-path tools/eif-interop/Cargo.toml

test-eif-interop: eif-tool eif-interop ## Check our EIF tool against AWS's EIF library: same PCRs both ways, both refuse damaged EIFs
	EIF_TOOL=$${CARGO_TARGET_DIR:-target}/release/eif EIF_INTEROP=$(EIF_INTEROP_DIR)/release/eif-interop tests/eif/interop.sh
