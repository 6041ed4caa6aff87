# The two commands of the README: `make up` installs and starts regtrain on the embedded
# default; `make test` installs the dev extras and runs the whole suite.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# where `make up` listens: make up PORT=8080 HOST=0.0.0.0 (beyond loopback needs REGTRAIN_API_KEYS)
HOST ?= 127.0.0.1
PORT ?= 8000

# Test processes: the integration tests mostly wait (on servers they start, on jobs they poll),
# so three share two cores well; each file stays on one, keeping its module fixtures' servers.
TEST_WORKERS ?= 3

.PHONY: install install-dev up test lint bench

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch==2.13.0 first, so the CPU wheel on this machine's disk is taken, never a CUDA build;
# then the client (clients/python), which regtrain depends on and which is not on PyPI, with its
# notebook extras (pandas, tqdm), so that the README's client snippet runs as pasted in .venv;
# then regtrain itself, as a copy (every `make up` installs the checkout again): an editable
# install prints setuptools' "Editable installation" notice in every build, and `make up` is
# for using regtrain. install-dev, for changing it, installs it editable.
install: $(BIN)/python
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q './clients/python[notebook]'
	$(BIN)/pip install -q .

# install-dev also installs examples/plugins (a model plugin, the `residual_mlp` type), which its
# tests and the integration tests train: an operator installs plugins the same way, in the API's
# and every worker's environment.
install-dev: $(BIN)/python
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ./clients/python
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/pip install -q --no-deps -e ./examples/plugins

up: install
	@echo 'regtrain: the command is $(abspath $(BIN))/regtrain; for a bare `regtrain` in another shell:'
	@echo '  export PATH="$(abspath $(BIN)):$$PATH"    (or: source $(VENV)/bin/activate)'
	$(BIN)/regtrain up --host $(HOST) --port $(PORT)

test: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist loadfile

bench: install
	$(BIN)/python -m bench
