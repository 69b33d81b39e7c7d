# The README's two commands: `make demo` and `make test`. Both create and reuse .venv.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup demo test lint bench clean

setup: $(STAMP)

# Reinstall only when the package metadata changes.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev,viz]"
	touch $(STAMP)

demo: setup
	$(BIN)/nas-warmstart demo

lint: setup
	$(BIN)/ruff check nas_warmstart search_spaces tests benchmarks examples
	$(BIN)/mypy

test: setup lint
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python benchmarks/bench_dpiat.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
