# famr: every target creates/uses the virtual environment in $(VENV).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# make reproduce: PROFILE=paper (GPU) or cpu; DATA=CIFAR-10 folder/.tar.gz; IMAGENET=ImageNet root; SEEDS=N;
# METHODS=name,name (a subset of the profile's methods); PRIVACY=1 adds the per-example privacy table (docs/privacy.md).
PROFILE ?= paper
# make test: pytest-xdist workers, a test module each at a time (its module fixtures built once) in the order
# tests/conftest.py sorts them (--no-loadscope-reorder keeps it), one torch
# thread each: two 2-thread jobs on 2 cores slow each other down far more than they gain, and a waiting
# OpenMP thread sleeps instead of spinning on a core the other worker needs (docs/development.md#tests).
# TEST_WORKERS=0 runs the suite in one process at torch's usual threads.
TEST_WORKERS ?= 2
ifeq ($(TEST_WORKERS),0)
PYTEST := $(BIN)/python -m pytest
else
PYTEST := OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder
endif

.PHONY: install demo test test-slurm test-fast lint tune tune-famr clean reproduce fault-drill bench privacy

install: $(STAMP)

# Re-install only when the project's metadata changes.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

# The whole pipeline on embedded data: train (or load) the original model, FAMR, evaluate.
demo: install
	$(BIN)/famr-run experiment=quickstart

test: install
	$(PYTEST) -m "not slurm"

# The SLURM tier (tests/test_slurm.py) against a running cluster: `scripts/slurm_local.sh start` first; skipped
# with one line without one. One pytest process: the tier's SLURM jobs use the cores.
test-slurm: install
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -m slurm -p no:xdist tests/test_slurm.py

# The inner loop: every test that neither trains a model nor starts a famr process.
test-fast: install
	$(PYTEST) -m "not slow" -q

lint: install
	$(BIN)/ruff check src tests scripts
	$(BIN)/ruff format --check src tests scripts

# The tuning protocol (docs/tuning.md): every method, the same Optuna budget, selected on validation.
# EXPERIMENT=, FORGET=, TRIALS= (20), METHODS= (all), DATA= (CIFAR-10 path), TUNE_ARGS= (extra famr-run overrides).
tune: install
	$(BIN)/famr-tune experiment=$(or $(EXPERIMENT),cifar10_cpu) forget=$(or $(FORGET),class) --trials $(or $(TRIALS),20) --methods $(or $(METHODS),all) $(if $(DATA),dataset.root="$(DATA)") $(TUNE_ARGS)

# Re-run the sweep behind the quickstart's FAMR defaults and print its summary table.
tune-famr: install
	BIN=$(BIN) scripts/tune_famr_digits.sh

# The paper's tables (FAMR beside every baseline, mean ± std over seeds) into outputs/tables/.
reproduce: install
	$(BIN)/famr-reproduce --profile $(PROFILE) $(if $(DATA),--data "$(DATA)") $(if $(IMAGENET),--imagenet "$(IMAGENET)") $(if $(SEEDS),--seeds $(SEEDS)) $(if $(METHODS),--methods $(METHODS)) $(if $(PRIVACY),--privacy) $(REPRODUCE_ARGS)

# Per-example privacy over populations of models (docs/privacy.md) into outputs/privacy/<experiment>/<forget>/.
# EXPERIMENT= (quickstart), FORGET= (class), METHODS= (famr), N= (32), PROTOCOLS= (competition,full), DATA=, PRIVACY_ARGS=.
privacy: install
	$(BIN)/famr-privacy experiment=$(or $(EXPERIMENT),quickstart) forget=$(or $(FORGET),class) --methods $(or $(METHODS),famr) --models $(or $(N),32) --protocols $(or $(PROTOCOLS),competition,full) $(if $(DATA),dataset.root="$(DATA)") $(PRIVACY_ARGS)

# Kill, corrupt and overload famr-run on digits; prints faults injected / recovered / results lost / bad inputs rejected.
fault-drill: install
	PYTHON=$(BIN)/python scripts/fault_drill.sh

# Performance ratios (FAMR vs Retrain, scaling, sweep cost, throughput) into outputs/bench.json; DATA=CIFAR-10 path.
bench: install
	$(BIN)/python scripts/bench.py $(if $(DATA),--data "$(DATA)") $(BENCH_ARGS)

clean:
	rm -rf build dist src/*.egg-info .pytest_cache .ruff_cache
