# Two commands on a fresh machine: `make run` and `make test`. Each does its own setup.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
NODE_STAMP := contracts/node_modules/.installed
HOST ?= 127.0.0.1
PORT ?= 8501

.PHONY: run test test-fast setup contracts wallet demo lint typecheck pytest system-deps bench clean

# Bytecode is written: this machine sets PYTHONDONTWRITEBYTECODE, under which every one of the
# suite's hundreds of Python processes compiled every module it imported again (about six of the
# suite's 25 minutes of CPU when the libraries were installed without it)
unexport PYTHONDONTWRITEBYTECODE

# uv installs the same pinned set as pip in well under half the time (46 s against 116 s on a
# fresh clone here, bytecode compiled: parallel downloads and compiles); pip does it if uv cannot
UV_VERSION := 0.13.8
DEPS := -c .ci/constraints.txt -e '.[dev,spark]'
$(STAMP): pyproject.toml .ci/constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	( $(PY) -m pip install --quiet --disable-pip-version-check --no-cache-dir uv==$(UV_VERSION) \
	  && $(VENV)/bin/uv pip install --quiet --python $(PY) --no-cache --compile-bytecode $(DEPS) ) \
	  || $(PY) -m pip install --quiet --disable-pip-version-check --no-cache-dir $(DEPS)
	@touch $(STAMP)

# Solidity compiler, OpenZeppelin and the anvil binary, pinned by contracts/package-lock.json
$(NODE_STAMP): contracts/package.json contracts/package-lock.json
	cd contracts && npm ci --no-audit --no-fund --loglevel=error
	@touch $(NODE_STAMP)

setup: $(STAMP) $(NODE_STAMP)

# Recompile the contracts into contracts/out/ (committed; the tests fail when they are stale)
contracts: $(NODE_STAMP)
	cd contracts && node compile.js

# Rebuild the Buy page's browser wallet (TypeScript) into dashboard/wallet/build/ (committed)
wallet:
	cd dashboard/wallet && npm ci --no-audit --no-fund --loglevel=error && npm run build

demo: setup
	@$(VENV)/bin/bti demo --if-missing

# the dashboard, the worker (claims, expiry, reconciliation) and the local chain node together
run: setup
	@HOST=$(HOST) PORT=$(PORT) bash scripts/run.sh

system-deps:
	@bash .ci/system-deps.sh

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: setup
	$(VENV)/bin/mypy bti_core

# three processes, a module to each at a time (its fixtures stay together): two cores spend
# much of a test waiting on a node, a broker, a browser or a subprocess. The modules go out in
# the order tests/conftest.py gives them, heaviest first (xdist's default sends the modules
# with the most tests first, which left the browser modules, few tests each, to the end)
XDIST := -n 3 --dist loadfile --no-loadscope-reorder
pytest: setup system-deps
	$(VENV)/bin/pytest $(XDIST)

# the type check runs beside the tests (it needs one core for ~25 s; the tests wait on nodes,
# brokers and browsers as much as on cores); either failing fails `make test`
test: setup system-deps lint
	@$(MAKE) --no-print-directory -j2 typecheck pytest

# what a change to the engine needs, in about two minutes: no browser, PostgreSQL, Kafka, Spark
# or slow (kill, soak) tests — `make test` runs them all
test-fast: setup lint typecheck
	$(VENV)/bin/pytest $(XDIST) -m "not (browser or postgres or kafka or spark or slow)"

bench: setup
	$(PY) benchmarks/ingest.py
	$(PY) benchmarks/quote.py
	$(PY) benchmarks/chain.py
	$(PY) benchmarks/claims.py
	$(PY) benchmarks/risk_queries.py
	$(PY) benchmarks/stream.py
	$(PY) benchmarks/crash.py
	$(PY) benchmarks/accounts.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache tests/artifacts
