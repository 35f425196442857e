# Emulation: the enclave image booted in QEMU on any Linux machine (no Nitro, no KVM needed).
# The building blocks; `make emulate` runs the stack on top of them.
#
#   make emulate-deps     QEMU 7.2 (apt, --no-install-recommends) and vhost-device-vsock 0.3.0
#                         (cargo install --locked), each only if missing
#   make emulate-kernel   Debian's cloud kernel, downloaded and checked, never installed
#                         (scripts/emulate/kernel.sh -> build/emulate/kernel; KERNEL_DEB_VERSION pins)
#   make emu-init         the emulation EIF's /init, static (tools/emu-init -> build/emulate/init)
#   make eif-emulate      build/emulate/enclave.eif: that kernel + init ramdisk (init, modules) + the
#                         production EIF's app ramdisk for MODEL (same bytes, same PCR2)
#   make emulate-tool     the launcher (tools/emulate -> target/release/emulate)
#
#   make emulate          the appliance like `make dev`, with the enclave booted in QEMU
#                         (scripts/dev.sh EMULATE=build/emulate/enclave.eif); Ctrl-C stops all
#   make test-emulate     boots the tiny-test emulation EIF and tests the appliance through it
#                         (tests/emulate/e2e.sh); ends "N passed, M failed"
#
# The development variant, with attestation (never for production: its PCR2 is not `make eif`'s):
#   make eif-emulate-dev-nsm  build/emulate/enclave-dev-nsm.eif: the same kernel and init, an app
#                         ramdisk with the enclave binary built static WITH the dev-nsm feature
#                         (build/emulate/enclave-dev-nsm-bin) and `--nsm vsock:2:9100` appended
#                         to its command: it attests through tools/dev-nsm over the guest's vsock
#   make test-emulate-sealed  boots it with the development NSM (dev.sh EMULATE_NSM=dev) and checks
#                         a sealed request end to end (tests/emulate/sealed.sh)
#
# The launcher alone: target/release/emulate --eif build/emulate/enclave.eif --run-dir .run/emulate
# (tools/emulate/src/main.rs says what it does and how the host reaches port 5005).

EMU_BUILD        ?= build/emulate
EMU_KERNEL_DIR   ?= $(EMU_BUILD)/kernel
EMU_INIT         ?= $(EMU_BUILD)/init
EMU_EIF          ?= $(EMU_BUILD)/enclave.eif
EMU_MEASUREMENTS ?= $(EMU_BUILD)/measurements.json
VHOST_VSOCK_VERSION ?= 0.3.0
# apt-get needs root; sudo when we are not.
EMU_SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

EMU_DEV_NSM_BIN  ?= $(EMU_BUILD)/enclave-dev-nsm-bin
EMU_DEV_NSM_EIF  ?= $(EMU_BUILD)/enclave-dev-nsm.eif
EMU_DEV_NSM_MEASUREMENTS ?= $(EMU_BUILD)/measurements-dev-nsm.json

EMU_ENV = MODEL='$(MODEL)' MODEL_DIR='$(MODEL_DIR)' STATIC_BIN='$(STATIC_BIN)' EIF_TOOL='$(EIF_TOOL)' \
  EMU_KERNEL_DIR='$(EMU_KERNEL_DIR)' EMU_INIT='$(EMU_INIT)' EMU_EIF='$(EMU_EIF)' EMU_MEASUREMENTS='$(EMU_MEASUREMENTS)'

.PHONY: emulate-deps emulate-kernel emu-init eif-emulate emulate-tool emulate test-emulate
.PHONY: static-dev-nsm eif-emulate-dev-nsm test-emulate-sealed

# A fresh machine may have no apt lists at all: then neither QEMU nor the kernel package
# (scripts/emulate/kernel.sh asks apt for it) can be found until they are fetched.
emulate-deps: ## Install what emulation needs if missing: qemu-system-x86 (apt), vhost-device-vsock 0.3.0 (cargo)
	@if ! apt-cache show linux-image-cloud-amd64 >/dev/null 2>&1; then $(EMU_SUDO) apt-get update -qq; fi
	@if command -v qemu-system-x86_64 >/dev/null; then echo "qemu-system-x86_64: $$(command -v qemu-system-x86_64)"; \
	else $(EMU_SUDO) apt-get install -y -qq --no-install-recommends qemu-system-x86; fi
	@if command -v vhost-device-vsock >/dev/null || [ -x "$$HOME/.cargo/bin/vhost-device-vsock" ]; then \
	  echo "vhost-device-vsock: $$(command -v vhost-device-vsock || echo "$$HOME/.cargo/bin/vhost-device-vsock")"; \
	else $(CARGO) install vhost-device-vsock --version $(VHOST_VSOCK_VERSION) --locked; fi

emulate-kernel: ## Fetch Debian's cloud kernel for emulation into build/emulate/kernel (checked, cached, not installed)
	KERNEL_DEB_VERSION='$(KERNEL_DEB_VERSION)' scripts/emulate/kernel.sh $(EMU_KERNEL_DIR)

emu-init: ## Build the emulation EIF's /init static into build/emulate/init
	CARGO='$(CARGO)' scripts/nitro/build-static.sh . $(EMU_INIT) emu-init

# `static`, not `static-if-missing`: the emulated enclave runs the sources as they are now (cargo
# rebuilds only what changed; nothing at all takes seconds).
eif-emulate: emulate-kernel emu-init eif-tool static model ## Build build/emulate/enclave.eif (Debian kernel, our init, the production app ramdisk)
	$(EMU_ENV) scripts/emulate/eif.sh

emulate-tool: ## Build the emulation launcher into target/release/emulate
	$(CARGO) build --release --locked -p emulate

emulate: emulate-deps build model testdata eif-emulate ## Run the appliance with the enclave image booted in QEMU (real vsock), like make dev, until Ctrl-C
	EMULATE=$(EMU_EIF) scripts/dev.sh

emulate-sealed: emulate-deps build model testdata eif-emulate-dev-nsm ## make emulate with the development image: attestation and sealed requests over the guest's vsock (other PCR2)
	EMULATE=$(EMU_DEV_NSM_EIF) EMULATE_NSM=dev scripts/dev.sh

# The debug binaries `make test` builds run on the host (parent, public model server, launcher);
# the enclave is the static release binary inside the EIF.
test-emulate: emulate-deps testdata ## Boot the emulation EIF (tiny-test model) and test the appliance through it (ends "N passed, M failed")
	$(MAKE) --no-print-directory eif-emulate MODEL=tiny-test
	$(CARGO) build --workspace --locked --bins --features $(TEST_FEATURES)
	BIN=target/debug EIF=$(EMU_EIF) MODEL=tiny-test tests/emulate/e2e.sh

static-dev-nsm: ## Build the enclave binary static WITH the dev-nsm feature (development images only) into build/emulate/enclave-dev-nsm-bin
	FEATURES=dev-nsm CARGO='$(CARGO)' scripts/nitro/build-static.sh . $(EMU_DEV_NSM_BIN)

# The same scripts/emulate/eif.sh with another binary, two more command arguments and other names.
eif-emulate-dev-nsm: emulate-kernel emu-init eif-tool static-dev-nsm model ## Build build/emulate/enclave-dev-nsm.eif: the emulation EIF with the development NSM over vsock (PCR2 differs from production's)
	$(EMU_ENV) STATIC_BIN='$(EMU_DEV_NSM_BIN)' EMU_EIF='$(EMU_DEV_NSM_EIF)' EMU_MEASUREMENTS='$(EMU_DEV_NSM_MEASUREMENTS)' \
	  EMU_APP_ARGS='--nsm vsock:2:9100' EMU_EIF_NAME=nitro-ml-enclave-emulation-dev-nsm scripts/emulate/eif.sh

# The production emulation EIF too: its measurements (the other PCR2) must be refused.
test-emulate-sealed: emulate-deps testdata ## Boot the dev-nsm emulation EIF (tiny-test) and check a sealed request end to end (ends "N passed, M failed")
	$(MAKE) --no-print-directory eif-emulate MODEL=tiny-test
	$(MAKE) --no-print-directory eif-emulate-dev-nsm MODEL=tiny-test
	$(CARGO) build --workspace --locked --bins --features $(TEST_FEATURES)
	BIN=target/debug EIF=$(EMU_DEV_NSM_EIF) PROD_MEASUREMENTS=$(EMU_MEASUREMENTS) MODEL=tiny-test tests/emulate/sealed.sh
