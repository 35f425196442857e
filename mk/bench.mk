# Benchmarks (tracker issue 6): the study's measurements on our system, with
# figures. Results go to bench/results/<time>-<profile>/ (git-ignored):
# results.json, CSVs, SVG figures and summary.md. BENCHMARKS.md records a run.
# The suite starts and stops the local stack itself and leaves nothing running.
#
# BENCH_PROFILE  full (default, under 20 min on 2 cores) | quick (under 3 min)
# BENCH_PARTS    comma list: engine,start,channel,memory,local,mixed,net,peer,sealed
# BENCH_OUT      results directory; BENCH_ARGS: more `bench suite` flags
# NET_UP, NET_DOWN, NET_DELAY  the internet-like link (25mbit, 500mbit, 20ms)
# PEER_MODELS    for bench-peer: the models compared (resnet18-synthetic efficientnet-lite0)
# RESULTS        for bench-plot: the results directory to redraw
# SEALED_URL     for bench-sealed: a running parent (http://IP:PORT) instead of a stack started
#                here, verified against the AWS Nitro root and $(MEASUREMENTS); BENCH_ARGS
#                then passes more `bench sealed` flags (`--dev-root FILE` for a dev stack)

BENCH_PROFILE ?= full
PEER_MODELS   ?= resnet18-synthetic efficientnet-lite0
BENCH_BIN     := target/release/bench

export BENCH_PROFILE

.PHONY: bench bench-quick bench-net bench-peer bench-plot bench-build bench-hostile bench-sealed

# The model server with the dev-nsm feature (`--nsm unix:PATH`, which the sealed part gives the
# secure one), and the development NSM itself; the enclave image's server is built apart,
# without features (scripts/nitro/build-static.sh).
bench-build:
	$(CARGO) build --release --locked -p enclave -p parent -p dev-nsm -p bench --features enclave/dev-nsm

bench: bench-build model testdata ## Benchmark suite against the local stack (BENCH_PROFILE=quick: < 3 min)
	bench/run.sh

bench-quick: ## The benchmark suite's quick profile (under 3 minutes)
	@$(MAKE) --no-print-directory bench BENCH_PROFILE=quick

bench-net: bench-build model testdata ## Internet-like load test (netns + veth + tc; root), alone
	BENCH_PARTS=net bench/run.sh

# One suite run per model of PEER_MODELS, each with its own results directory: ours, then FastAPI +
# onnxruntime, then (ResNet18 only) FastAPI + PyTorch, each alone on the machine.
bench-peer: bench-build testdata ## Ours vs FastAPI+onnxruntime and FastAPI+PyTorch (venvs in build/), per model of PEER_MODELS
	@set -e; stamp=$$(date -u +%Y%m%dT%H%M%SZ); for m in $(PEER_MODELS); do \
	  $(MAKE) --no-print-directory model MODEL=$$m; \
	  MODEL=$$m BENCH_COMPARE=$$m BENCH_PARTS=$${BENCH_PARTS:-engine,peer} \
	    BENCH_OUT=$${BENCH_OUT:-bench/results/$$stamp-$(BENCH_PROFILE)}-peer-$$m bench/run.sh; \
	done

# Without SEALED_URL: a stack of its own with the development NSM on port 18080. With it (on EC2,
# after `make run`): SEALED_URL=http://127.0.0.1:80, the real NSM, $(MEASUREMENTS) pinned.
bench-sealed: bench-build testdata ## What sealed requests cost: attestation, seal/open per size, sealed vs plaintext (~1.5 min)
	@$(if $(SEALED_URL),,$(MAKE) --no-print-directory model)
	$(BENCH_BIN) sealed --profile $(if $(filter quick,$(BENCH_PROFILE)),quick,full) --model $(MODEL) \
	  $(if $(SEALED_URL),--url $(SEALED_URL) --measurements $(MEASUREMENTS)) $(BENCH_ARGS)

bench-hostile: build model ## Hostile inputs' answers, time and peak memory through a fresh stack each (bench/hostile.py)
	python3 bench/hostile.py --bin target/release --model models/$(MODEL)

bench-plot: ## Redraw figures and summary of RESULTS=bench/results/DIR
	@test -n "$(RESULTS)" || { echo "bench-plot: set RESULTS=bench/results/DIR" >&2; exit 2; }
	$(BENCH_BIN) plot "$(RESULTS)"
