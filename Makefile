# make demo: set up .venv, then preprocess, train and evaluate MACH on the bundled Delicious data.
# make test: set up .venv, then run the test suite (make test-fast: the quick part; make lint: ruff, black).
# On a GPU machine: make demo REQUIREMENTS=requirements-gpu.txt
PYTHON ?= python3
REQUIREMENTS ?= requirements.txt
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-fast lint clean

$(STAMP): $(REQUIREMENTS) requirements-common.txt requirements-dev.txt requirements-ray.txt setup.py pyproject.toml $(wildcard src/util/*.pyx src/util/*.h)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -r $(REQUIREMENTS) -r requirements-dev.txt -r requirements-ray.txt
	$(BIN)/pip install --quiet --no-build-isolation -e .
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/python preprocess.py --dataset delicious
	$(BIN)/python train.py --dataset delicious --resume
	$(BIN)/python evaluate.py --dataset delicious

test: setup
	$(BIN)/python -m pytest -q

# The tests that train nothing and run no script: under a minute.
test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

lint: setup
	$(BIN)/ruff check .
	$(BIN)/black --check --quiet .

clean:
	rm -rf $(VENV) build src/*.egg-info src/mach/*.so work
