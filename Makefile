# bucketvision — the commands a user and CI run. Everything installs into .venv here.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
EXTRAS ?= worker,heif,local,dev
STAMP := $(VENV)/.installed

.PHONY: install demo test test-chaos lint format bench bench-before bench-quality bench-real bench-footprint bench-loop bench-watch clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $(STAMP)

demo: install
	$(BIN)/bucketvision demo

test: install
	$(BIN)/python -m pytest tests

# Faults on purpose: workers killed, Redis restarted, S3 cut for 30 s (~7 min on 2 cores).
test-chaos: install
	$(BIN)/python -m pytest tests/chaos -m chaos -s

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/bandit -q -r producer worker models infra -s B404

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Ceilings, pipeline and peers for two models (~20 min; ARGS=--quick for a few minutes).
# The `bench` extra (Ray Data) is installed when it can be; without it that peer is skipped.
BENCH_STAMP := $(VENV)/.bench-installed
ARGS ?=

$(BENCH_STAMP): pyproject.toml $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS),bench]" || \
		echo "warning: the bench extra (ray[data]) did not install; the Ray Data peer is skipped"
	touch $(BENCH_STAMP)

bench: install $(BENCH_STAMP)
	@$(BIN)/python -m tests.perf.bench $(ARGS)

# The feed (CPU per image outside the model) of main before issue 17 and of this checkout,
# alternating on this host, each run against a fresh S3 server (~12 min; ARGS='--only mobilenet --rounds 2').
bench-before: install
	$(BIN)/python -m tests.perf.bench_before $(ARGS)

# Each model family trained with default settings and judged on held-out data (~30 min).
# Both bench-quality and bench-real start their own Redis and S3; prints a table.
bench-quality: install
	$(BIN)/python -m tests.perf.quality

# Default training on data the project did not generate: scikit-learn's scanned digits,
# detect and segment on scenes of another style (~30 min on 2 cores); prints a table.
bench-real: install
	$(BIN)/python -m tests.perf.bench_real

# Redis bytes per item (submit; finished job) and the finaliser's peak RSS vs targets (~9 min; ARGS=--quick ~1).
bench-footprint: install
	$(BIN)/python -m tests.perf.bench_footprint $(ARGS)

# Review pays? Uncertainty vs random selection of labels on scikit-learn's digits, 5 rounds x 3 seeds (~35 min on 2 cores).
bench-loop: install
	$(BIN)/python -m tests.perf.bench_loop $(ARGS)

# Drop-folder latency: bucket events (SQS), repeated and lost events, polling a small prefix and
# one of 10,000 objects; each prints drop-to-result p50/p95 (~5 min).
bench-watch: install
	$(BIN)/python -m pytest -s -m 'slow or e2e' tests/e2e/test_drop_events.py \
		tests/e2e/test_watch.py -k 'events or exactly_once or 10000'

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
