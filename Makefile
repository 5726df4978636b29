# The two commands a newcomer needs: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench lint format clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Reinstall whenever the project's own dependency list changes.
$(STAMP): pyproject.toml setup.py | $(BIN)/python
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m tlkit.demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -q --durations=15

BENCH_STAMP := $(VENV)/.installed-bench

$(BENCH_STAMP): pyproject.toml setup.py | $(BIN)/python
	$(BIN)/pip install --quiet -e ".[dev,bench]"
	touch $(BENCH_STAMP) $(STAMP)

# Benchmarks print Markdown tables and write JSON under benchmarks/results/.
bench: $(BENCH_STAMP)
	$(BIN)/python benchmarks/overhead.py
	$(BIN)/python benchmarks/linear_probe.py
	$(BIN)/python benchmarks/frozen_prefix.py
	$(BIN)/python benchmarks/precision.py
	$(BIN)/python benchmarks/domain_adaptation.py
	$(BIN)/python benchmarks/cli_startup.py
	$(BIN)/python benchmarks/model_ranking.py
	$(BIN)/python benchmarks/export.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) logs build *.egg-info
