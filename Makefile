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
include mk/bench.mk
include mk/hardening.mk

.PHONY: help build test dev

help: ## List the targets, one line each
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | sort -u | \
	  awk 'BEGIN{FS=":.*## "}{printf "  %-16s %s\n", $$1, $$2}'

build: ## Build the enclave and parent binaries (release)
	$(CARGO) build --release --locked --bin enclave --bin parent

test: ## Run every test: models, Rust workspace (unit + end-to-end), model checks, Nitro fakes
	$(MAKE) --no-print-directory model MODEL=tiny-test
	$(MAKE) --no-print-directory model MODEL=efficientnet-lite0
	$(MAKE) --no-print-directory testdata
	$(CARGO) build --workspace --locked --bins --features parent/bench,enclave/multithread-mm
	$(CARGO) test --workspace --locked --features parent/bench,enclave/multithread-mm
	$(MAKE) --no-print-directory test-models
	NITRO_E2E_BIN_DIR=target/debug $(MAKE) --no-print-directory test-nitro

dev: build model testdata ## Run the local stack (secure + public model servers, parent) until Ctrl-C
	scripts/dev.sh
