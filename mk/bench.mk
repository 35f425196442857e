# Benchmarks (tracker issue 6): the study's measurements on our system, with
# figures. Results go to bench/results/<time>-<profile>/ (git-ignored):
# results.json, CSVs, SVG figures and summary.md. BENCHMARKS.md records a run.
# The suite starts and stops the local stack itself and leaves nothing running.
#
# BENCH_PROFILE  full (default, under 20 min on 2 cores) | quick (under 3 min)
# BENCH_PARTS    comma list: engine,start,channel,memory,local,mixed,net,peer
# BENCH_OUT      results directory; BENCH_ARGS: more `bench suite` flags
# NET_UP, NET_DOWN, NET_DELAY  the internet-like link (25mbit, 500mbit, 20ms)
# RESULTS        for bench-plot: the results directory to redraw

BENCH_PROFILE ?= full
BENCH_BIN     := target/release/bench

export BENCH_PROFILE

.PHONY: bench bench-quick bench-net bench-peer bench-plot bench-build bench-hostile

bench-build:
	$(CARGO) build --release --locked -p enclave -p parent --features parent/bench

bench: bench-build model testdata ## Benchmark suite against the local stack (BENCH_PROFILE=quick: < 3 min)
	bench/run.sh

bench-quick: ## The benchmark suite's quick profile (under 3 minutes)
	@$(MAKE) --no-print-directory bench BENCH_PROFILE=quick

bench-net: bench-build model testdata ## Internet-like load test (netns + veth + tc; root), alone
	BENCH_PARTS=net bench/run.sh

bench-peer: bench-build ## Ours vs the study's stack (FastAPI+PyTorch peer, venv in build/), resnet18-synthetic
	@$(MAKE) --no-print-directory model MODEL=resnet18-synthetic
	BENCH_PARTS=$${BENCH_PARTS:-engine,peer} bench/run.sh

bench-hostile: build model ## Hostile inputs' answers, time and peak memory through a fresh stack each (bench/hostile.py)
	python3 bench/hostile.py --bin target/release --model models/$(MODEL)

bench-plot: ## Redraw figures and summary of RESULTS=bench/results/DIR
	@test -n "$(RESULTS)" || { echo "bench-plot: set RESULTS=bench/results/DIR" >&2; exit 2; }
	$(BENCH_BIN) plot "$(RESULTS)"
