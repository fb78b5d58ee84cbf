# The README's two commands. Each sets up the virtual environment it needs (once), then:
#   make run    split the photos, train ZFNet, classify sunflower.jpg, build the explorer site
#   make test   check the code style, then run the test suite (what CI runs)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test

run: $(VENV)/.installed
	$(BIN)/python split_data.py
	$(BIN)/python train.py --resume
	$(BIN)/python predict.py sunflower.jpg
	$(BIN)/python explore.py

test: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -r requirements.txt
	$(BIN)/python -m pip install --no-deps --no-build-isolation -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed requirements-dev.txt
	$(BIN)/python -m pip install -r requirements-dev.txt
	touch $@
