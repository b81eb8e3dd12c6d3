# Everything goes through .venv, created on demand, so `make run` and `make test`
# work on a machine that has only python3 (and npm for buf).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CONFIG ?= configs/dev.yaml
PROTOS := $(wildcard proto/execgw/v1/*.proto)

.PHONY: setup proto run test lint bench clean

setup: $(STAMP)

$(STAMP): client/pyproject.toml server/pyproject.toml requirements/dev.txt requirements/constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c requirements/constraints.txt \
		-e client -e server -r requirements/dev.txt
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

proto: $(STAMP)
	$(PY) tools/genproto.py client/src
	$(PY) tools/gencontract.py docs/contract.md

run: $(STAMP)
	$(VENV)/bin/execgw serve --config $(CONFIG)

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP) node_modules/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	npx --no-install buf lint proto

bench: $(STAMP)
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) node_modules .mypy_cache .ruff_cache .pytest_cache
