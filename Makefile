# `make test` is the README's test command and what .ci/run calls.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: test install demo

$(BIN)/python:
	$(PY) -m venv $(VENV)

install: $(BIN)/python
	$(BIN)/python -m pip install -q -e ".[test]"

test: install
	$(BIN)/python -m pytest -q

demo: $(BIN)/python
	$(BIN)/python -m pip install -q -e ".[report]"
	$(BIN)/duckcluster demo
