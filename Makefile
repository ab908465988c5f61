# The two commands of a fresh machine:
#   make up     start the platform on its embedded defaults (NATS + one node)
#   make test   run the whole test suite
# Both create .venv and install the project into it first; nothing else is assumed installed.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: up test bench lint typecheck clean system

$(BIN)/python:
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Switchboard needs Python 3.11+; set PYTHON=python3.11"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	@echo "install: switchboard and its test tools into $(VENV) (progress below)"
	$(BIN)/pip install --progress-bar on -e '.[test]'
	@# silero-vad declares torch as a dependency; we only use its bundled ONNX model.
	$(BIN)/pip install --progress-bar on --no-deps silero-vad==6.2.3
	@touch $(STAMP)

system:
	scripts/bootstrap-system.sh test

up: $(STAMP)
	scripts/bootstrap-system.sh runtime || true
	$(BIN)/switchboard up

test: $(STAMP) system lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python bench/actors.py

lint: $(STAMP)
	$(BIN)/ruff check .
	scripts/typecheck.sh

clean:
	rm -rf $(VENV) .pytest_cache
