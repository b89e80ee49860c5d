# keyhealth: every command a developer or CI needs. `make test` is the test command.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat requirements-dev.txt layers/shared/requirements.txt | cksum | cut -d' ' -f1)
export PYTHONPATH := $(CURDIR):$(CURDIR)/layers/shared
# SAM CLI pins its own boto3 and click: it lives in its own venv, never in the test environment.
SAM_VENV        ?= .venv-sam
SAM_CLI_VERSION := 1.170.0
SAM_STAMP       := $(SAM_VENV)/.installed-$(SAM_CLI_VERSION)
SAM             := SAM_CLI_TELEMETRY=0 $(SAM_VENV)/bin/sam
SAM_REGION      ?= eu-west-1

.PHONY: help venv test unit lint lint-template build format run demo audit check-demo clean docs openapi bench-audit

help:
	@echo "make test    install into $(VENV) and run lint + the whole suite"
	@echo "make run     run keyhealth locally (moto, simulators, API on :3000) until Ctrl-C"
	@echo "make demo    with make run going: bind every demo key, audit, print results and alerts"
	@echo "make audit   with make run going: run the scheduled audit now and follow it"
	@echo "make check-demo  check every demo key once through the adapters (no AWS) and exit"
	@echo "make lint    ruff check + ruff format --check"
	@echo "make lint-template  cfn-lint and sam validate --lint on template.yaml and its SAM translation, sam build"
	@echo "make build   sam build (arm64, no Docker): then sam deploy --guided"
	@echo "make format  ruff format + ruff check --fix"

$(STAMP): requirements-dev.txt layers/shared/requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	rm -f $(VENV)/.installed-*
	touch $@

venv: $(STAMP)

# Every check runs, so one `make lint` shows every problem; it fails if any failed. mypy and lint-imports
# keep caches (.mypy_cache, .import_linter_cache): a run with nothing changed takes about a second.
LINT_CHECKS := "ruff check ." "ruff format --check ." "mypy" "lint-imports --no-logo"
lint: venv
	@failed=; for check in $(LINT_CHECKS); do \
		echo "$(BIN)/$$check"; $(BIN)/$$check || failed="$$failed [$$check]"; \
	done; \
	if [ -n "$$failed" ]; then echo "make lint: failed:$$failed"; exit 1; fi

$(SAM_STAMP):
	test -x $(SAM_VENV)/bin/python || $(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(SAM_VENV)/bin/python -m pip install --quiet aws-sam-cli==$(SAM_CLI_VERSION)
	rm -f $(SAM_VENV)/.installed-*
	touch $@

# cfn-lint alone misses an invalid Runtime and bad Refs inside SAM resources: the translated
# CloudFormation (default parameters, and every optional resource switched on) is linted too.
lint-template: venv $(SAM_STAMP)
	$(BIN)/cfn-lint template.yaml
	$(SAM) validate --lint --region $(SAM_REGION)
	$(BIN)/python scripts/sam_translate.py --output build/template.json
	$(BIN)/cfn-lint build/template.json
	$(BIN)/python scripts/sam_translate.py --output build/template-options.json \
		--parameter NatGateways=per-az --parameter AwsInterfaceEndpoints=true \
		--parameter ApiAllowedAccounts=111111111111,222222222222 --parameter ApiAllowedVpcEndpoints=vpce-0123abcd \
		--parameter SlackWebhookSecretArn=arn:aws:secretsmanager:eu-west-1:111111111111:secret:slack-AbCdEf
	$(BIN)/cfn-lint build/template-options.json
	$(SAM) build --region $(SAM_REGION)

build: $(SAM_STAMP)
	$(SAM) build --region $(SAM_REGION)

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
	$(BIN)/python -m keyhealth_cli audit

check-demo: venv
	$(BIN)/python -m local.demo_checks

clean:
	rm -rf $(VENV) $(SAM_VENV) .aws-sam build .pytest_cache .ruff_cache

docs: venv
	$(BIN)/python scripts/finding_docs.py docs/findings.md

openapi: venv
	$(BIN)/python scripts/openapi.py

bench-audit: venv
	$(BIN)/python scripts/bench_audit.py $(BENCH_ARGS)
