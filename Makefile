# The README's two commands: `make demo` and `make test` (the fast tier); `make test-all` is every
# test (the CI runs it through .ci/run). All create and reuse .venv.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup demo test test-all lint bench bench-rank bench-effectiveness bench-search bench-own-model bench-convert bench-convert-distributed bench-ray bench-pipeline bench-untrusted compare-revisions clean

setup: $(STAMP)

# Reinstall only when the package metadata changes.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev,viz,ray,onnx]"
	touch $(STAMP)

demo: setup
	$(BIN)/nas-warmstart demo

# ruff, mypy, and the import contracts of pyproject.toml (which stage may import which).
lint: setup
	$(BIN)/ruff check nas_warmstart search_spaces tests benchmarks examples
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

# The fast tier: every stage touched once (tests marked slow left out; pyproject's addopts).
test: setup lint
	$(BIN)/python -m pytest -q

# Everything: the fast tier, then the slow one (two-node Ray cluster, killed and interrupted
# subprocess runs, whole pipeline runs, long documentation blocks).
test-all: test
	$(BIN)/python -m pytest -q -m "slow and not gpu"

# Quick benchmarks (~3 min): DPIAT core + ranking on 10/100-entry pools.
bench: setup
	$(BIN)/python benchmarks/bench_dpiat.py
	$(BIN)/python benchmarks/bench_rank.py --quick --out benchmarks/.cache/rank_quick

# Full ranking benchmark: builds 10..5,000-entry pools (~13 min, ~18 GB in benchmarks/.cache/).
bench-rank: setup
	$(BIN)/python benchmarks/bench_rank.py

# Warm-start effectiveness on digits: 213 training runs (~25 min on 2 cores).
bench-effectiveness: setup
	$(BIN)/python benchmarks/bench_effectiveness.py

# Warm-started vs cold Optuna studies on digits: 9 studies x 30 trials (~12 min on 2 cores).
bench-search: setup
	$(BIN)/python benchmarks/bench_search.py

# Your own models: storage/loading costs of builder-less entries, and a define_model(trial) MLP
# study warm vs cold (5 seeds x 30 trials; ~1 min on 2 cores).
bench-own-model: setup
	$(BIN)/python benchmarks/bench_own_model.py

# Theseus conversion on digits: 4 schedules x 3 targets vs scratch and KD, 3 seeds (~40 min),
# then ResNet-18 -> MobileNetV2-0.5 with convert's defaults.
bench-convert: setup
	$(BIN)/python benchmarks/bench_convert.py
	$(BIN)/python benchmarks/bench_convert.py --defaults

# The whole job (make demo's pipeline) for seeds 0-2: times per stage, warm vs cold (~6 min on 2 cores).
bench-pipeline: setup
	$(BIN)/python benchmarks/bench_pipeline.py

# Conversion on Ray Train: 1 vs 2 CPU workers per mode, against one process (~10 min on 2 cores).
# On a GPU machine: python benchmarks/bench_convert_distributed.py --gpu --workers 1,2,4
bench-convert-distributed: setup
	$(BIN)/python benchmarks/bench_convert_distributed.py

# Warm-started vs cold Ray Tune searches (bench_search's space and budget, 2 trials at a time,
# 3 seeds) and the per-trial overhead of Ray against plain Optuna (~30 min on 2 cores).
bench-ray: setup
	$(BIN)/python benchmarks/bench_ray.py

# What reading a pool as untrusted input costs: row checks in rank and listing, guarded reads
# of weights files, each against the unchecked way in the same run (~1 min on 2 cores).
bench-untrusted: setup
	$(BIN)/python benchmarks/bench_untrusted.py

# A refactor changes no number: similarity, transfer tensors (and ranking with POOL=DIR) of this
# checkout against another one, compared exactly, e.g. OLD=/tmp/old after
# `git worktree add /tmp/old <rev>` (~8 min on 2 cores).
compare-revisions: setup
	$(BIN)/python benchmarks/compare_revisions.py $(OLD) $(if $(POOL),--pool $(POOL))

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
