# Two entry points for a newcomer: `make run` (the node) and `make test` (the test suite).
# Both set up .venv/ idempotently (a stamp file records what was installed).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
CONFIG ?= config/osteo_node.example.yaml

.PHONY: run test setup setup-test lint clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.stamp-run: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[cpu]'
	touch $@

# torch is installed first, pinned, so that monai does not pull a multi-GB CUDA build.
$(VENV)/.stamp-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[cpu,train,test]'
	touch $@

setup: $(VENV)/.stamp-run
setup-test: $(VENV)/.stamp-test

# The node refuses to run as root (production: systemd/osteo-node.service, a dedicated user);
# `make run` on a developer machine or a container as root allows it explicitly.
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root,)

run: setup
	$(BIN)/osteo-node serve --config $(CONFIG) $(ROOT_FLAG)

test: setup-test
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
