# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed
# Idle OpenMP threads sleep instead of spinning: on a shared or small machine (CI runners, several test processes,
# notebook kernels) spinning threads made torch's CPU kernels up to 10x slower in our runs. Exported to every target
# and the processes they start; outside make, export it yourself before starting Python.
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: install demo test test-drills test-slow lab bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	mkdir -p runs
	$(VENV)/bin/papermill -k python3 --no-progress-bar notebooks/01_train_imagenet.ipynb runs/01_train_imagenet.ipynb
	@echo "executed notebook: runs/01_train_imagenet.ipynb"; ls figures/01_train_curves_*.png

test: $(STAMP)
	$(PY) -m pytest -q

test-drills: $(STAMP)
	$(PY) -m pytest -q -m drill tests

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow tests

lab: $(STAMP)
	$(PY) -m pip install --quiet -e ".[lab]"
	$(VENV)/bin/jupyter lab notebooks/

bench: $(STAMP)
	$(PY) benchmarks/bench_td_block.py

clean:
	rm -rf $(VENV) runs .pytest_cache
