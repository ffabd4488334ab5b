# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed
LAB     = $(VENV)/.installed-lab
PROFILE ?= embedded
DATA_DIR ?=
LAB_ARGS ?=
TB_ARGS ?=
# Idle OpenMP threads sleep instead of spinning: on a shared or small machine (CI runners, several test processes,
# notebook kernels) spinning threads made torch's CPU kernels up to 10x slower in our runs. Exported to every target
# and the processes they start; outside make, export it yourself before starting Python.
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: install demo test test-drills test-slow reproduce gallery lab tb bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

# Notebook 01 on the embedded data: streams the notebook's output, ends with its result line.
demo: $(STAMP)
	mkdir -p runs
	$(VENV)/bin/papermill -k python3 --no-progress-bar --log-output notebooks/01_train_imagenet.ipynb runs/01_train_imagenet.ipynb
	@echo "executed notebook: runs/01_train_imagenet.ipynb"
	@grep -o 'final val top-1: [0-9][^"\\]*' runs/01_train_imagenet.ipynb

# The suite runs on every core up to 4 (pytest-xdist): the notebooks in order in one worker, the tests spread over
# the others (the scheduler is in tests/conftest.py); the workers share the cached embedded data.
XDIST = -n auto --maxprocesses 4

test: $(STAMP)
	$(PY) -m pytest -q $(XDIST) --durations=20

test-drills: $(STAMP)
	$(PY) -m pytest -q -m drill tests

test-slow: $(STAMP)
	$(PY) -m pytest -q $(XDIST) -m slow tests

# All nine notebooks in order, headless; skips those already done with the same parameters (FORCE=1 reruns them).
# `make reproduce PROFILE=paper DATA_DIR=/data/imagenet` runs them on ImageNet with the paper's recipes. It writes
# under runs/ and figures/ only (both untracked): a checkout stays clean.
reproduce: $(STAMP)
	$(PY) -m tdam.notebook.reproduce --profile $(PROFILE) $(if $(DATA_DIR),--data-dir $(DATA_DIR)) $(if $(FORCE),--force)

# The README's gallery (docs/gallery/, tracked): make reproduce on the embedded data, then one figure per notebook
# copied there with index.json. Run it on purpose, to refresh the gallery, and commit the result.
gallery: $(STAMP)
	$(PY) -m tdam.notebook.reproduce --profile embedded $(if $(FORCE),--force) --gallery docs/gallery

$(LAB): $(STAMP)
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[lab]"
	touch $(LAB)

# JupyterLab at the repository root (notebooks/, figures/ and runs/ all reachable); as root too (containers,
# clusters). Extra options: make lab LAB_ARGS="--no-browser --port 8890".
lab: $(LAB)
	$(VENV)/bin/jupyter lab --notebook-dir=. $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS)

# TensorBoard over every training run (each run logs to <run>/tb/).
tb: $(STAMP)
	$(VENV)/bin/tensorboard --logdir runs $(TB_ARGS)

# ResNet-50 vs TD-ResNet-50 throughput: about 5 min on 2 CPU cores; a line after every repeat, results in
# runs/bench/td_block.json.
bench: $(STAMP)
	@echo "make bench: about 5 min on 2 CPU cores (ResNet-50 at batch 32, 224 px); progress after every repeat"
	$(PY) benchmarks/bench_td_block.py

clean:
	rm -rf $(VENV) runs .pytest_cache
