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

.PHONY: help venv test unit lint lint-template build format run demo audit check-demo clean docs openapi bench-audit cost

help:
	@echo "make test    install into $(VENV) and run lint + the whole suite"
	@echo "make run     run keyhealth locally (moto, simulators, API on :3000) until Ctrl-C"
	@echo "make demo    with make run going: bind every demo key, audit, print results and alerts"
	@echo "make audit   with make run going: run the scheduled audit now and follow it"
	@echo "make check-demo  check every demo key once through the adapters (no AWS) and exit"
	@echo "make lint    ruff check + ruff format --check"
	@echo "make lint-template  cfn-lint, sam validate --lint and checkov on template.yaml and its SAM translation, sam build (default and CredentialStore=kms)"
	@echo "make audit-deps  pip-audit the pinned requirements (the layer's, deployed, and the dev ones) for known vulnerabilities"
	@echo "make build   sam build (arm64, no Docker): then sam deploy --guided"
	@echo "make format  ruff format + ruff check --fix"
	@echo "make cost    measure both credential stores on moto, print the monthly cost model, regenerate docs/cost.md"

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

# checkov (the template's security scan) pins many dependencies of its own: its own venv, like the SAM CLI.
CHECKOV_VENV    ?= .venv-checkov
CHECKOV_VERSION := 3.3.30
CHECKOV_STAMP   := $(CHECKOV_VENV)/.installed-$(CHECKOV_VERSION)
# scripts/checkov_scan.py fails on a failed check, a parse error, a template with nothing scanned, a skip without a reason.
CHECKOV_SCAN    := $(BIN)/python scripts/checkov_scan.py --checkov $(CHECKOV_VENV)/bin/checkov

$(CHECKOV_STAMP):
	test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(CHECKOV_VENV)/bin/python -m pip install --quiet checkov==$(CHECKOV_VERSION)
	rm -f $(CHECKOV_VENV)/.installed-*
	touch $@

# cfn-lint alone misses an invalid Runtime and bad Refs inside SAM resources: the translated
# CloudFormation (default parameters, and every optional resource switched on) is linted too.
# checkov scans template.yaml (skips, each with its reason, in the resources' Metadata) and the translation
# (scripts/checkov-translated.yaml: the checks of what SAM generates without copying the Metadata).
#
# The variant: CredentialStore=kms and EgressIpCount=3, which every step runs with as well. CredentialStore
# switches no resource (both stores are always deployed; it only tells the functions where new credentials
# go); EgressIpCount=3 switches on the second and third egress IPs' NAT gateways, subnets, workers and queues.
# cfn-lint ignores --parameters on a SAM template, and sam validate and checkov take no parameter values: they
# get build/template-variant.yaml, template.yaml with those parameters' Defaults set (scripts/checkov_scan.py
# --render-to, which refuses a value outside AllowedValues); the translator takes them as parameter values
# (the options translation has every optional resource on: four egress IPs); sam build as overrides.
# One cfn-lint and one checkov run per pair of files: each run costs seconds of start-up.
VARIANT := --parameter CredentialStore=kms --parameter EgressIpCount=3
RENDER  := $(BIN)/python scripts/checkov_scan.py --render-to

lint-template: venv $(SAM_STAMP) $(CHECKOV_STAMP)
	$(RENDER) build/template-variant.yaml $(VARIANT) template.yaml
	$(BIN)/cfn-lint template.yaml build/template-variant.yaml
	$(SAM) validate --lint --region $(SAM_REGION)
	$(SAM) validate --lint --region $(SAM_REGION) --template-file build/template-variant.yaml
	$(BIN)/python scripts/sam_translate.py --output build/template.json
	$(BIN)/python scripts/sam_translate.py --output build/template-options.json --parameter CredentialStore=kms \
		--parameter EgressIpCount=4 --parameter AwsInterfaceEndpoints=true \
		--parameter ApiAllowedAccounts=111111111111,222222222222 --parameter ApiAllowedVpcEndpoints=vpce-0123abcd \
		--parameter SlackWebhookSecretArn=arn:aws:secretsmanager:eu-west-1:111111111111:secret:slack-AbCdEf
	$(RENDER) build/template-options.json --parameter CredentialStore=kms --parameter EgressIpCount=4 \
		build/template-options.json
	$(BIN)/cfn-lint build/template.json build/template-options.json
	$(CHECKOV_SCAN) template.yaml build/template-variant.yaml
	$(CHECKOV_SCAN) --config-file scripts/checkov-translated.yaml build/template.json build/template-options.json
	$(SAM) build --region $(SAM_REGION) --parameter-overrides CredentialStore=kms EgressIpCount=3
	$(SAM) build --region $(SAM_REGION)

# pip-audit in its own venv: checkov's venv would run it on checkov's older pins (packaging, cyclonedx).
# AUDIT_IF_UNREACHABLE=warn: when no vulnerability service answers (PyPI's JSON API, OSV), say so and pass.
AUDIT_VENV           ?= .venv-audit
PIP_AUDIT_VERSION    := 2.10.1
AUDIT_STAMP          := $(AUDIT_VENV)/.installed-$(PIP_AUDIT_VERSION)
AUDIT_IF_UNREACHABLE ?= fail

$(AUDIT_STAMP):
	test -x $(AUDIT_VENV)/bin/python || $(PYTHON) -m venv $(AUDIT_VENV)
	$(AUDIT_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(AUDIT_VENV)/bin/python -m pip install --quiet pip-audit==$(PIP_AUDIT_VERSION)
	rm -f $(AUDIT_VENV)/.installed-*
	touch $@

# Known vulnerabilities that do not apply: scripts/pip-audit-ignore.txt, each with its reason.
.PHONY: audit-deps
audit-deps: $(AUDIT_STAMP)
	$(AUDIT_VENV)/bin/python scripts/audit_deps.py --if-unreachable $(AUDIT_IF_UNREACHABLE) \
		layers/shared/requirements.txt requirements-dev.txt

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

# Both credential stores on moto in-process (about 30 s): AWS calls and latency per operation, the monthly
# cost at 1,000 / 100,000 / 1,000,000 bindings; writes docs/cost.json and docs/cost.md (COST_ARGS: --bindings N).
cost: venv
	$(BIN)/python scripts/cost.py --write-docs $(COST_ARGS)

# schemathesis against the local stack (docs/openapi.json, fixed seed, ~2,200 requests in about 85 s on 2 cores):
# fails on any failed check, on fewer than 2,000 requests, or if the stack printed a demo secret. FUZZ_ARGS: see
# `python scripts/fuzz.py --help` (e.g. FUZZ_ARGS="--seed 7 --max-examples 100").
.PHONY: fuzz
fuzz: venv
	$(BIN)/python scripts/fuzz.py $(FUZZ_ARGS)
