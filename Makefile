# Quick start: `make demo` registers the bundled sample pair with the bundled model;
# `make test` runs the lint, the test suite and the check of the installed package (a wheel in
# a fresh venv, used from another folder); `make model` reproduces the shipped model
# (training/reproduce.py; MODEL_ARGS="--device cuda" for a GPU). All set up a virtual
# environment (.venv) first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test install-check model lint bench clean
MODEL_ARGS ?=

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	mkdir -p out
	$(BIN)/sarreg register data/demo/reference.tif data/demo/moving.tif \
		-o out/demo_aligned.tif --plot out/demo_matches.png --overwrite --no-progress
	$(BIN)/python scripts/check_demo.py out/demo_aligned.json data/demo/truth.json

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -n 2 --cov=sarreg --cov-report=term:skip-covered
	$(MAKE) install-check

install-check: $(STAMP)
	PYTHON=$(PYTHON) BUILD_PYTHON=$(BIN)/python .ci/check_install.sh

model: $(STAMP)
	$(BIN)/python training/reproduce.py $(MODEL_ARGS)

bench: $(STAMP)
	$(BIN)/python scripts/bench_register.py

clean:
	rm -rf $(VENV) out .pytest_cache .ruff_cache
