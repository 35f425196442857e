# Hardening (tracker issue 7): the full-scale load run and the supply-chain
# checks. The CI-scale versions of the load run, the hostile-input suites and
# the fault tests are part of `cargo test` (make test); see THREAT_MODEL.md.
#
# SOAK_CLIENTS  concurrent clients, half per route (default 300, the study's heaviest case)
# SOAK_MODEL    model the two model servers serve (default efficientnet-lite0)

SOAK_CLIENTS ?= 300
SOAK_MODEL   ?= efficientnet-lite0

.PHONY: soak deny

soak: ## Study's heaviest load (300 clients x 2 x batch of 2, both routes): counts and RSS
	$(MAKE) --no-print-directory model MODEL=$(SOAK_MODEL)
	$(MAKE) --no-print-directory testdata
	$(CARGO) build --workspace --locked --bins
	HARDENING_LOAD_CLIENTS=$(SOAK_CLIENTS) HARDENING_LOAD_MODEL=$(SOAK_MODEL) HARDENING_LOAD_TIMEOUT_S=600 \
	  $(CARGO) test --locked -p parent --test load_study -- --nocapture

deny: ## cargo deny: licenses, bans, sources (offline) and advisories if a local database exists
	scripts/deny.sh
