# Everything goes through .venv, created on demand, so `make run` and `make test`
# work on a machine that has only python3 (and npm for buf).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CONFIG ?= configs/dev.yaml
PROTOS := $(wildcard proto/execgw/v1/*.proto)
BUF := npx --no-install buf
# The last released contract: `buf breaking` compares proto/ with it (docs/contract-evolution.md).
RELEASED_CONTRACT := proto/releases/v1.1.binpb

.PHONY: setup proto run test lint breaking contract-release go-example bench bench-quick bench-live kite-demo rehearsal clean

setup: $(STAMP)

# pipefail: the install's output is filtered to what it installs, and a failed install
# must still fail the target.
$(STAMP): SHELL := /bin/bash
$(STAMP): .SHELLFLAGS := -o pipefail -c
$(STAMP): client/pyproject.toml server/pyproject.toml requirements/dev.txt requirements/constraints.txt
	@echo "== creating $(VENV) and installing execgw with its pinned dependencies (first run only, about a minute)"
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --progress-bar off -c requirements/constraints.txt \
		-e client -e server -r requirements/dev.txt \
		| awk '/^(Collecting|Successfully installed)/ { print; fflush() }'
	$(PY) -c "import execgw.server, execgw.client"
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

proto: $(STAMP)
	$(PY) tools/genproto.py client/src
	$(PY) tools/gencontract.py docs/contract.md

run: $(STAMP)
	$(VENV)/bin/execgw serve --config $(CONFIG)

# tests/test_node_client.py runs examples/node, which needs node_modules: installed when
# npm is there (CI has it); without node the test skips.
NODE_DEPS := $(if $(shell command -v npm 2>/dev/null),node_modules/.installed)

# Two workers (pytest-xdist), a test file each at a time: most tests wait on servers and
# subprocesses, so two cores run the suite in about two thirds of the time. TEST_WORKERS=0
# runs it in one process.
TEST_WORKERS ?= 2
test: $(STAMP) $(NODE_DEPS)
	$(PY) -m pytest -q $(if $(filter-out 0,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadfile)

lint: $(STAMP) node_modules/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(BUF) lint proto
	$(BUF) breaking proto --against $(RELEASED_CONTRACT)

# Fails when proto/ breaks the released contract (a renamed or renumbered field, ...).
breaking: node_modules/.installed
	$(BUF) breaking proto --against $(RELEASED_CONTRACT)

# Only when a contract release is cut: rebuilds the image every later change is checked
# against. Never to make `breaking` pass (docs/contract-evolution.md).
contract-release: node_modules/.installed
	$(BUF) build proto -o $(RELEASED_CONTRACT)

# Needs Go and the protoc plugins (examples/go/README.md); nothing else depends on it.
go-example:
	examples/go/build.sh

# Prints each measurement as it is taken, then the medians, ratios and issue 15's
# targets; writes bench/results.json (under 3 minutes). BENCH_SECURE=1: what TLS, mTLS
# and a bearer token cost SubmitOrder, instead.
bench: $(STAMP)
	$(PY) bench/run.py $(if $(BENCH_SECURE),--secure)

# The same in under 30 s: one repetition of fewer calls, the slow rows left out;
# writes bench/results-quick.json.
bench-quick: $(STAMP)
	$(PY) bench/run.py --quick

# SubmitOrder latency, paper against live on the Kite stand-in (not part of `make test`).
bench-live: $(STAMP)
	$(PY) bench/live_kite.py

# The live path without a Kite account: the Kite stand-in (tests/kite_standin.py) on
# 127.0.0.1:8765 and a live gateway on it (configs/kite-demo.yaml). Ctrl-C stops both.
kite-demo: $(STAMP)
	$(PY) tools/kite_demo.py

# A traced dry-run session end to end (tools/rehearsal.py): a live + dry_run gateway, a
# scripted session of REHEARSAL_ORDERS orders through the Python client, then `execgw
# trace summary` of its spans. Config, journal, spans and log stay in var/rehearsal/.
REHEARSAL_ORDERS ?= 200
rehearsal: $(STAMP)
	$(PY) tools/rehearsal.py --orders $(REHEARSAL_ORDERS) --dir var/rehearsal

clean:
	rm -rf $(VENV) node_modules .mypy_cache .ruff_cache .pytest_cache
