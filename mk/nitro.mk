# Nitro Enclaves packaging and deployment (docs/DEPLOY.md). The recipes are thin: the work is
# in scripts/nitro/*.sh, which take these settings from the environment.
#
#   make static             static, stripped, reproducible enclave binary -> build/static/enclave
#   make eif                EIF + PCRs with our own tool, no Docker (mk/eif.mk; eif-docker: nitro-cli's way)
#   make preflight          check what a Nitro host needs (changes nothing); first step of eif/run
#   make allocator          reserve enclave memory/CPUs (allocator.yaml + service restart)
#   make run / stop / status   the whole appliance on a Nitro-enabled instance
#
# Overridable: ENCLAVE_CID (16), ENCLAVE_CPUS (2), ENCLAVE_MEMORY_MIB (computed, see
# scripts/nitro/lib.sh), ALLOCATOR_YAML, SECURE_ADDR (vsock:CID:5005), PING_TIMEOUT (s),
# DEBUG=1 (debug mode + console from boot), SEALED_ONLY=1 (the front refuses plaintext secure
# requests), RUST_IMAGE (builder image, pin by digest), EIF_IMAGE,
# and for the preflight BUILD_DISK_MIB / DOCKER_DISK_MIB (free space the build needs: 2048 / 4096)
# and PYTHON3 (else the first Python >= 3.11 of PYTHON_CANDIDATES).
# `make run` listens on port 80 unless PORT is given on the command line or in the environment.

NITRO_BUILD        ?= build
STATIC_BIN         ?= $(NITRO_BUILD)/static/enclave
EIF                ?= $(NITRO_BUILD)/enclave.eif
IMAGE_BIN          ?= $(NITRO_BUILD)/image-enclave
MEASUREMENTS       ?= $(NITRO_BUILD)/measurements.json
EIF_IMAGE          ?= nitro-ml-enclave:$(MODEL)
RUST_IMAGE         ?= rust:1.95.0-bookworm
MODEL_DIR          ?= models/$(MODEL)
BIN_DIR            ?= target/release
ENCLAVE_CID        ?= 16
ENCLAVE_CPUS       ?= 2
ENCLAVE_MEMORY_MIB ?=
ALLOCATOR_YAML     ?= /etc/nitro_enclaves/allocator.yaml
MEMINFO            ?= /proc/meminfo
SECURE_ADDR        ?= vsock:$(ENCLAVE_CID):5005
PING_TIMEOUT       ?= 60
LISTEN_IP          ?= 0.0.0.0
DEBUG              ?=
SEALED_ONLY        ?=
# What `make eif` prepares first: the host binaries (front), the model, the EIF tool and the
# static enclave binary if missing, so that `make eif && make run` is the whole deployment
# (mk/eif.mk). Tests set it empty.
EIF_DEPS           ?= build model eif-tool static-if-missing
EIF_DOCKER_DEPS    ?= build model
# The Nitro blobs `make eif` builds from (aws-nitro-enclaves-cli-devel installs them here) and
# our EIF tool (tools/eif).
NITRO_BLOBS        ?= /usr/share/nitro_enclaves/blobs
EIF_TOOL           ?= target/release/eif
# Port 80 for `make run` unless PORT came from the command line or the environment.
RUN_PORT           := $(if $(filter file,$(origin PORT)),80,$(PORT))

NITRO_ENV = MODEL='$(MODEL)' MODEL_DIR='$(MODEL_DIR)' EIF='$(EIF)' MEASUREMENTS='$(MEASUREMENTS)' \
  EIF_IMAGE='$(EIF_IMAGE)' RUST_IMAGE='$(RUST_IMAGE)' BIN_DIR='$(BIN_DIR)' RUN_DIR='$(RUN_DIR)' \
  ENCLAVE_CID='$(ENCLAVE_CID)' ENCLAVE_CPUS='$(ENCLAVE_CPUS)' ENCLAVE_MEMORY_MIB='$(ENCLAVE_MEMORY_MIB)' \
  ALLOCATOR_YAML='$(ALLOCATOR_YAML)' MEMINFO='$(MEMINFO)' SECURE_ADDR='$(SECURE_ADDR)' \
  PING_TIMEOUT='$(PING_TIMEOUT)' LISTEN_IP='$(LISTEN_IP)' PORT='$(RUN_PORT)' DEBUG='$(DEBUG)' SEALED_ONLY='$(SEALED_ONLY)' \
  STATIC_BIN='$(STATIC_BIN)' IMAGE_BIN='$(IMAGE_BIN)' PARENT_BIN='$(BIN_DIR)/parent' CARGO='$(CARGO)' \
  PYTHON3='$(PYTHON3)' PYTHON_CANDIDATES='$(PYTHON_CANDIDATES)' NITRO_BLOBS='$(NITRO_BLOBS)' EIF_TOOL='$(EIF_TOOL)'

.PHONY: static static-repro static-root-check preflight allocator run stop status test-nitro

preflight: ## Check what a Nitro host needs (nitro-cli, allocator, ne group, Nitro blobs, Python, disk, memory, port, CPUs)
	$(NITRO_ENV) scripts/nitro/preflight.sh

static: ## Build the enclave binary static, stripped and reproducible into build/static/enclave
	$(NITRO_ENV) scripts/nitro/build-static.sh . $(STATIC_BIN)

static-repro: ## Build HEAD twice in two temp dirs and check the static binaries' SHA-256 match (~15 min; REPRO_AGAINST=FILE: once, against FILE)
	$(NITRO_ENV) scripts/nitro/static-repro.sh

static-root-check: ## Serve MODEL with the static binary chrooted in an empty root (needs static, build)
	$(NITRO_ENV) scripts/nitro/static-root-check.sh

allocator: ## Reserve enclave memory (from EIF and model size) and CPUs; restart the allocator
	$(NITRO_ENV) scripts/nitro/allocator.sh

run: ## Check (preflight), then start the enclave, the public model server and the front (port 80); DEBUG=1 for the console
	$(NITRO_ENV) scripts/nitro/run.sh

stop: ## Stop the parent front, the public model server and the enclave
	$(NITRO_ENV) scripts/nitro/stop.sh

status: ## Show running enclaves, background processes and the parent's /ready
	$(NITRO_ENV) scripts/nitro/status.sh

test-nitro: ## Test the Nitro targets against fake docker/nitro-cli/systemctl (ends "N passed, M failed")
	tests/nitro/run.sh
