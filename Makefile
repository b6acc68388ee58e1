# Two commands for a new user: `make serve` and `make test`. Everything else is a building block.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export FORECAST_REGISTRY_DIR ?= registry

.PHONY: venv train lint test clean

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

train: venv  ## train, evaluate, register and promote a model on the default data
	$(PY) -m forecast train

lint: venv
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

test: lint  ## lint, type-check and run every test
	$(PY) -m pytest

clean:
	rm -rf $(VENV) data registry run .pytest_cache .mypy_cache .ruff_cache
