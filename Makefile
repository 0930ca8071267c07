# Two commands do everything on a fresh clone with only python3 and make:
#   make demo   creates .venv, installs alphaloop[dev], sweeps, evaluates, verifies and runs a short research loop on bundled real data
#   make test   the same install, then the whole test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# numba's compiled kernels are cached on disk here, so a second process does not recompile
export NUMBA_CACHE_DIR ?= $(CURDIR)/.numba_cache

.PHONY: demo world-demo test lint bench install clean

install: $(STAMP)

# re-install whenever pyproject.toml changes
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,postgres,ray]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/alphaloop data list
	$(BIN)/alphaloop backtest examples/sma_cross.yaml --data us_indices
	$(BIN)/alphaloop sweep sma_cross --data us_indices --n 174 --sampler grid --out out/demo_sweep.parquet
	$(BIN)/alphaloop evaluate out/demo_sweep.parquet --policy default --top 3
	$(BIN)/alphaloop verify examples/sma_cross.yaml --data us_indices --costs examples/costs.yaml --fills out/demo_fills.parquet
	$(BIN)/alphaloop run examples/run.yaml

# a WorldService on loopback: a short loop's survivor walks to paper on the replay feed
world-demo: $(STAMP)
	BIN=$(BIN) bash scripts/world_demo.sh

# two workers (pytest-xdist), one test file each at a time: a file's module fixtures (a Ray
# cluster, a PostgreSQL database, a loop run once and read by many tests) stay in one process
test: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider -n 2 --dist loadfile

lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/mypy src

bench: $(STAMP)
	$(BIN)/python -m pip install -q -e '.[dev,bench]'
	$(BIN)/python benchmarks/bench_engine_a.py
	$(BIN)/python benchmarks/bench_engine_b.py

clean:
	rm -rf $(VENV) .numba_cache out .pytest_cache .mypy_cache .ruff_cache
