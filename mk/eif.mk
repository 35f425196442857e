# The EIF, built by our own tool (tools/eif) with no Docker; the docker route kept beside it.
#
#   make eif          Nitro blobs (NITRO_BLOBS: bzImage, cmdline, init, nsm.ko) + build/static/enclave
#                     + models/$(MODEL) -> build/enclave.eif, build/measurements.json; cross-checked
#                     with `nitro-cli describe-eif` when nitro-cli is installed (scripts/nitro/eif.sh)
#   make eif-docker   nitro-cli's way: docker build (Dockerfile.enclave) + nitro-cli build-enclave
#   make eif-repro    the EIF built twice from two fresh clones of HEAD with stand-in blobs: same
#                     bytes, same PCRs (scripts/nitro/eif-repro.sh)
#   make eif-tool     the `eif` binary (target/release/eif)
#
# The settings (NITRO_BLOBS, EIF_TOOL, STATIC_BIN, EIF_DEPS, ...) are in mk/nitro.mk.

.PHONY: eif eif-docker eif-repro eif-tool static-if-missing

# The preflight comes first, so that missing blobs or a small disk stop before the build.
eif: ## Build build/enclave.eif with tools/eif (no Docker): Nitro blobs + static binary + model; save and print its PCRs
	$(NITRO_ENV) scripts/nitro/preflight.sh eif
	$(if $(strip $(EIF_DEPS)),$(MAKE) --no-print-directory $(EIF_DEPS))
	$(NITRO_ENV) scripts/nitro/eif.sh

eif-docker: ## Build the EIF nitro-cli's way (docker build + nitro-cli build-enclave); save and print its PCRs
	$(NITRO_ENV) scripts/nitro/preflight.sh eif-docker
	$(if $(strip $(EIF_DOCKER_DEPS)),$(MAKE) --no-print-directory $(EIF_DOCKER_DEPS))
	$(NITRO_ENV) scripts/nitro/eif-docker.sh

eif-repro: ## Build the EIF twice from two clones of HEAD with stand-in blobs; compare bytes and PCRs (needs static)
	$(NITRO_ENV) scripts/nitro/eif-repro.sh

eif-tool: ## Build the EIF tool (tools/eif) into target/release/eif
	$(CARGO) build --release --locked -p eif

# `make eif` builds the static binary only when there is none (`make static` rebuilds it).
static-if-missing:
	@[ -f '$(STATIC_BIN)' ] || $(MAKE) --no-print-directory static
