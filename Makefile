# keyhealth: every command a developer or CI needs. `make test` is the test command.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat requirements-dev.txt layers/shared/requirements.txt | cksum | cut -d' ' -f1)
export PYTHONPATH := $(CURDIR):$(CURDIR)/layers/shared

.PHONY: help venv test unit lint format run demo audit check-demo clean docs openapi bench-audit

help:
	@echo "make test    install into $(VENV) and run lint + the whole suite"
	@echo "make run     run keyhealth locally (moto, simulators, API on :3000) until Ctrl-C"
	@echo "make demo    with make run going: bind every demo key, audit, print results and alerts"
	@echo "make audit   with make run going: run the scheduled audit now and follow it"
	@echo "make check-demo  check every demo key once through the adapters (no AWS) and exit"
	@echo "make lint    ruff check + ruff format --check"
	@echo "make format  ruff format + ruff check --fix"

$(STAMP): requirements-dev.txt layers/shared/requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	rm -f $(VENV)/.installed-*
	touch $@

venv: $(STAMP)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: lint
	$(BIN)/python -m pytest

unit: venv
	$(BIN)/python -m pytest tests/unit

run: venv
	$(BIN)/python -m local.stack

demo: venv
	$(BIN)/python -m local.demo

audit: venv
	$(BIN)/python -m local.cli audit

check-demo: venv
	$(BIN)/python -m local.demo_checks

clean:
	rm -rf $(VENV) .aws-sam build .pytest_cache .ruff_cache

docs: venv
	$(BIN)/python scripts/finding_docs.py README.md

openapi: venv
	$(BIN)/python scripts/openapi.py

bench-audit: venv
	$(BIN)/python scripts/bench_audit.py $(BENCH_ARGS)
