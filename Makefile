# Quick start: `make demo` registers the bundled sample pair with the bundled model;
# `make test` runs the test suite. Both set up a virtual environment (.venv) first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean

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

bench: $(STAMP)
	$(BIN)/python scripts/bench_register.py

clean:
	rm -rf $(VENV) out .pytest_cache .ruff_cache
