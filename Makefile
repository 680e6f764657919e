# Two commands on a fresh machine: `make run` serves the demo models, `make test` runs every check.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
RUN_STAMP := $(VENV)/.installed-run
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: run test test-fast lint format bench bench-quick soak clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(RUN_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	touch $@

$(DEV_STAMP): pyproject.toml clients/python/pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[dev]' -e clients/python
	touch $@ $(RUN_STAMP)

run: $(RUN_STAMP)
	$(BIN)/rnnserve serve

lint: $(DEV_STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy

format: $(DEV_STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: lint
	$(BIN)/python -m pytest

# the inner loop: core, operations, codecs and the in-process API, without the slow tests
test-fast: $(DEV_STAMP)
	$(BIN)/python -m pytest -q -m "(unit or api) and not slow"

bench: $(DEV_STAMP)
	$(BIN)/python -m bench

bench-quick: $(DEV_STAMP)
	$(BIN)/python -m bench --quick

# mixed load against one server for SOAK_MINUTES (default 10): RSS, fds, sessions, p99, errors
# over time into bench/RESULTS.md and bench/soak.png; fails on a lost step or growth
SOAK_MINUTES ?= 10
soak: $(DEV_STAMP)
	$(BIN)/python -m bench.soak --minutes $(SOAK_MINUTES)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
