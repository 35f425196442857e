# Production install on a Nitro-enabled instance (docs/OPERATIONS.md): systemd units that start
# the allocator, the enclave, the public model server and the parent front at boot and restart
# them when they die. The work is in scripts/nitro/install.sh.
#
#   sudo make install      copy into PREFIX (/usr/local) and SYSCONFDIR (/etc), enable and
#                          (re)start nitro-ml.target (needs `make eif` first)
#   sudo make uninstall    stop, disable and remove them
#   make dist              the release tarball an instance installs (deploy/aws/nitro-ml.yaml)
#
# Overridable: DESTDIR (install under a directory, no systemctl: packaging and tests), PREFIX,
# SYSCONFDIR, UNITDIR (PREFIX/lib/systemd/system), NO_START=1 (copy and do not touch systemd),
# and mk/nitro.mk's EIF, MODEL, ENCLAVE_CID, ENCLAVE_CPUS, ENCLAVE_MEMORY_MIB, LISTEN_IP; the
# installed front listens on port 80 unless PORT is given (as `make run`).

DESTDIR    ?=
PREFIX     ?= /usr/local
SYSCONFDIR ?= /etc
UNITDIR    ?= $(PREFIX)/lib/systemd/system
NO_START   ?=

INSTALL_ENV = $(NITRO_ENV) DESTDIR='$(DESTDIR)' PREFIX='$(PREFIX)' SYSCONFDIR='$(SYSCONFDIR)' \
  UNITDIR='$(UNITDIR)' NO_START='$(NO_START)'

.PHONY: install uninstall

install: ## Install the systemd units, EIF, binaries and model (root; after make eif); start nitro-ml.target
	$(INSTALL_ENV) scripts/nitro/install.sh install

uninstall: ## Stop, disable and remove what make install installed (root)
	$(INSTALL_ENV) scripts/nitro/install.sh uninstall

DIST ?=

.PHONY: dist

dist: ## Release tarball for instances (git HEAD + EIF, binaries, model): build/nitro-ml-COMMIT.tar.gz
	$(NITRO_ENV) DIST='$(DIST)' scripts/nitro/dist.sh

.PHONY: test-deploy

test-deploy: ## Validate deploy/aws (cfn-lint) and deploy/k8s (kubernetes-validate) offline; pinned venv in build/
	tests/deploy/lint.sh
