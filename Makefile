# The appliance's entry points. `make help` lists them; each fragment under mk/
# owns one area (models, Nitro packaging, benchmarks) and adds its own targets.
.DEFAULT_GOAL := help
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

MODEL   ?= efficientnet-lite0
PORT    ?= 8080
RUN_DIR ?= .run
CARGO   ?= cargo

export MODEL PORT RUN_DIR

include mk/models.mk
include mk/nitro.mk
include mk/eif.mk
include mk/emulate.mk
include mk/bench.mk
include mk/hardening.mk
include mk/install.mk
include mk/oip.mk
include mk/clients.mk
include mk/interop.mk

.PHONY: help build test dev

help: ## List the targets, one line each
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | sort -u | \
	  awk 'BEGIN{FS=":.*## "}{printf "  %-16s %s\n", $$1, $$2}'

# The model server is built with the dev-nsm feature (`--nsm unix:PATH`, which `make dev` gives
# the secure one); the enclave image's server never is: scripts/nitro/build-static.sh builds it
# apart, without features. dev-nsm (the development NSM) and sealed-client are for `make dev`,
# emulate (the QEMU launcher) for `make emulate`.
build: ## Build the release binaries: model server (dev-nsm feature), parent, dev-nsm, sealed-client, emulate
	$(CARGO) build --release --locked --bin enclave --bin parent --bin dev-nsm --bin sealed-client --bin emulate \
	  --features enclave/dev-nsm

# `make test` runs all four suites even when one fails (cargo with --no-fail-fast: every test
# binary), then prints one summary line per suite and a closing "N passed, M failed" line, and
# fails if anything did. A suite that exits non-zero without reporting a failed test (a test
# binary that crashed or did not build) counts as one failure.
TEST_FEATURES := enclave/multithread-mm,enclave/dev-nsm

test: ## Run every test: models, Rust workspace (unit + end-to-end), model checks, Nitro fakes, Python client; ends "N passed, M failed"
	$(MAKE) --no-print-directory model MODEL=tiny-test
	$(MAKE) --no-print-directory model MODEL=efficientnet-lite0
	$(MAKE) --no-print-directory model MODEL=resnet18-synthetic
	$(MAKE) --no-print-directory testdata
	$(CARGO) build --workspace --locked --bins --features $(TEST_FEATURES)
	@logs=$$(mktemp -d); trap 'rm -rf "$$logs"' EXIT; \
	run() { local name=$$1; shift; echo "+ $$*"; \
	        local rc=0; "$$@" 2>&1 | tee "$$logs/$$name.log" || rc=$$?; echo $$rc > "$$logs/$$name.rc"; }; \
	run rust $(CARGO) test --workspace --locked --no-fail-fast --features $(TEST_FEATURES); \
	run models $(MAKE) --no-print-directory test-models; \
	run nitro env NITRO_E2E_BIN_DIR=target/debug $(MAKE) --no-print-directory test-nitro; \
	run clients $(MAKE) --no-print-directory test-clients; \
	summary=""; total_p=0; total_f=0; \
	for name in rust models nitro clients; do \
	  rc=$$(cat "$$logs/$$name.rc"); \
	  if [ $$name = rust ]; then \
	    counts=$$(sed -nE 's/^test result: [a-zA-Z]+\. ([0-9]+) passed; ([0-9]+) failed.*/\1 \2/p' "$$logs/$$name.log" | \
	              awk '{p += $$1; f += $$2} END {print p + 0, f + 0}'); \
	  else \
	    counts=$$(sed -nE 's/^([0-9]+) passed, ([0-9]+) failed.*/\1 \2/p' "$$logs/$$name.log" | tail -n 1); \
	  fi; \
	  read -r p f <<< "$${counts:-0 0}"; \
	  if [ "$$rc" != 0 ] && [ "$$f" = 0 ]; then f=1; fi; \
	  summary="$$summary$${summary:+; }$$name $$p passed, $$f failed"; \
	  total_p=$$((total_p + p)); total_f=$$((total_f + f)); \
	done; \
	echo; echo "make test: $$summary"; echo "total: $$total_p passed, $$total_f failed"; \
	[ "$$total_f" = 0 ]

dev: build model testdata ## Run the local stack (secure + public model servers, parent) until Ctrl-C
	scripts/dev.sh
