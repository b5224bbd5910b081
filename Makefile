# Two commands on a fresh machine: `make demo` and `make test`. Each sets itself up first.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
export MUJOCO_GL ?= egl
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export WANDB_MODE := disabled
export TOKENIZERS_PARALLELISM := false
export PYTHONWARNINGS ?= ignore::DeprecationWarning

.PHONY: setup demo test test-fast bench lint clean

setup:
	@bash scripts/setup.sh

demo: setup
	$(VENV)/bin/lstack demo

test: setup
	$(PY) -m pytest -q --timeout=900

test-fast: setup
	$(PY) -m pytest -q -m "not slow" --timeout=300

bench: setup
	$(PY) benchmarks/render_fps.py
	$(PY) benchmarks/kernels.py

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks scripts
	$(VENV)/bin/lint-imports

clean:
	rm -rf $(VENV) .pytest_cache
