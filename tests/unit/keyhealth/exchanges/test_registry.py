"""Every exchange spec in the registry is wired everywhere an exchange has to be.

Adding an exchange is one module under keyhealth/exchanges (plus its simulator and tests); the
rest loops over `SPECS`. These tests walk the specs and fail, naming the exchange, wherever a
new one is not yet known: request validation, configuration, the rate plans, the checkers, the
finding table, the OpenAPI document, the template's audit queues, the local stack, the simulators.
"""

from __future__ import annotations

import importlib
import inspect
import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from keyhealth.api.requests import BindRequest, InvalidRequest
from keyhealth.config import DEFAULT_BASE_URLS, Settings
from keyhealth.domain.exchange import CheckerContext, ExchangeChecker, ExchangeSpec
from keyhealth.domain.http import HttpRequest, HttpResponse
from keyhealth.exchanges import registry
from keyhealth.exchanges.registry import NAMES, RATE_PLANS, SPECS, Exchange
from local import stack as local_stack
from simulators import simulator_module
from simulators.base import DemoKey, ExchangeSimulator
from tests.support.clock import FakeClock
from tests.support.template import CfnTag, resource

ROOT = Path(__file__).resolve().parents[4]
EGRESS_IP = "203.0.113.10"
WRONG_API_KEY = "not-a-key"  # no exchange's keys have this shape

specs = pytest.mark.parametrize("spec", SPECS, ids=[s.name for s in SPECS])


class NoNetwork:
    """A transport for building checkers: building one must not call the exchange."""

    def send(self, request: HttpRequest) -> HttpResponse:
        raise AssertionError(f"a checker called {request.url} while being built")


def demo_keys(name: str) -> list[DemoKey]:
    module = simulator_module(name)
    return module.seed_demo(module.SIMULATOR(), EGRESS_IP)


def healthy_hmac_key(name: str) -> DemoKey:
    return next(k for k in demo_keys(name) if k.expected_status == "healthy" and k.key_type == "hmac")


def bind_body(spec: ExchangeSpec, key: DemoKey, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "user_id": "u-42",
        "exchange": spec.name,
        "api_key": key.api_key,
        "api_secret": key.api_secret,
        "key_type": "hmac",
        "scopes": ["spot"],
    }
    if key.passphrase is not None:
        body["passphrase"] = key.passphrase
    return {**body, **overrides}


def refusal(body: dict[str, Any]) -> str:
    with pytest.raises(InvalidRequest) as refused:
        BindRequest.model_validate(body).to_command()
    return refused.value.code


def function_variables(logical_id: str) -> dict[str, Any]:
    return resource(logical_id)["Properties"].get("Environment", {}).get("Variables", {})


def get_att_target(value: Any) -> str:
    assert isinstance(value, CfnTag), value
    assert value.tag == "!GetAtt", value
    return value.value if isinstance(value.value, str) else ".".join(value.value)


# ----------------------------------------------------------------------- the registry
def test_the_registry_lists_every_exchange_once_in_name_order():
    assert list(NAMES) == sorted({s.name for s in SPECS})
    assert [registry.spec(name) for name in NAMES] == list(SPECS)
    with pytest.raises(registry.UnknownExchange):
        registry.spec("mtgox")


@specs
def test_its_name_is_its_module_name(spec: ExchangeSpec):
    module = importlib.import_module(f"keyhealth.exchanges.{spec.name}")
    assert module.SPEC is spec
    assert spec.name == spec.name.lower()
    assert spec.name.isidentifier()


# --------------------------------------------------------------------------- rate plan
@specs
def test_its_rate_plan_is_its_own_and_its_audit_check_costs_something_in_existing_pools(spec: ExchangeSpec):
    plan = spec.rate_plan
    assert plan.exchange == spec.name
    assert RATE_PLANS[spec.name] is plan
    assert plan.audit_check_paths, "the audit's light check must call something"
    cost = plan.audit_check_cost()
    assert cost, f"{spec.name}'s audit check paths cost nothing in any pool"
    pools = {p.name: p for p in plan.pools}
    for pool, weight in cost.items():
        assert pool in pools, f"{spec.name}: {pool} is not one of its pools"
        assert weight > 0
        assert pools[pool].limit >= weight
        assert pools[pool].window_seconds > 0
    assert plan.checks_per_second(share=0.5) > 0
    assert 0 < plan.default_backoff_seconds <= plan.max_backoff_seconds


# ------------------------------------------------------------------------ configuration
@specs
def test_every_base_url_is_configurable_with_its_default(spec: ExchangeSpec):
    assert spec.base_urls, f"{spec.name} declares no base URL"
    defaults = Settings.from_env({})
    for base in spec.base_urls:
        assert DEFAULT_BASE_URLS[base.variable] == base.default
        assert defaults.url(base.variable) == base.default.rstrip("/")
        override = "http://127.0.0.1:9999"
        assert Settings.from_env({base.variable: f"{override}/"}).url(base.variable) == override


@specs
def test_its_audit_queue_is_configurable(spec: ExchangeSpec):
    url = f"https://sqs.eu-west-1.amazonaws.com/123456789012/audit-{spec.name}"
    settings = Settings.from_env({f"AUDIT_QUEUE_URL_{spec.name.upper()}": url, "AUDIT_QUEUE_URL": "https://fallback"})
    assert settings.queue_urls_for(spec.name) == (url,)


# ---------------------------------------------------------------------- bind requests
@specs
def test_a_bind_request_accepts_its_name_and_a_key_of_its_shape(spec: ExchangeSpec):
    key = healthy_hmac_key(spec.name)
    assert spec.keys.api_key.match(key.api_key), f"{spec.name}'s healthy demo key does not have its key shape"

    command = BindRequest.model_validate(bind_body(spec, key)).to_command()

    assert command.exchange == spec.name
    assert command.credentials.api_key == key.api_key
    assert (command.credentials.passphrase is not None) is spec.passphrase_required


@specs
def test_a_bind_request_refuses_a_key_of_another_shape(spec: ExchangeSpec):
    assert not spec.keys.api_key.match(WRONG_API_KEY)
    body = bind_body(spec, healthy_hmac_key(spec.name), api_key=WRONG_API_KEY)
    assert refusal(body) == "invalid_api_key_format"


@specs
def test_a_passphrase_is_required_exactly_when_its_keys_have_one(spec: ExchangeSpec):
    key = healthy_hmac_key(spec.name)
    body = bind_body(spec, key)
    assert spec.passphrase_required is (spec.keys.passphrase is not None) is (key.passphrase is not None)
    if spec.passphrase_required:
        del body["passphrase"]
        assert refusal(body) == "passphrase_required"
    else:
        assert refusal({**body, "passphrase": "OnePassphrase1"}) == "passphrase_not_allowed"


def test_a_bind_request_refuses_an_exchange_the_registry_does_not_know():
    body = {"user_id": "u-42", "exchange": "mtgox", "api_key": "k", "api_secret": "s", "scopes": ["spot"]}
    with pytest.raises(ValidationError):
        BindRequest.model_validate(body)


def test_the_exchange_enum_and_the_openapi_document_list_exactly_the_registry():
    assert sorted(e.value for e in Exchange) == sorted(NAMES)
    document = json.loads((ROOT / "docs" / "openapi.json").read_text())
    assert sorted(document["components"]["schemas"]["Exchange"]["enum"]) == sorted(NAMES)


# ---------------------------------------------------------------------------- checker
@specs
def test_its_checker_is_an_exchange_checker_reporting_its_spec(spec: ExchangeSpec):
    context = CheckerContext(
        transport=NoNetwork(), urls=dict(DEFAULT_BASE_URLS), egress_ips=(EGRESS_IP,), clock=FakeClock()
    )

    checker = spec.build_checker(context)

    assert checker.spec is spec
    # ExchangeChecker is a Protocol: the checker must have its `check`, parameter for parameter.
    expected = [(p.name, p.kind, p.default) for p in inspect.signature(ExchangeChecker.check).parameters.values()][
        1:
    ]  # without self
    actual = [(p.name, p.kind, p.default) for p in inspect.signature(checker.check).parameters.values()]
    assert actual == expected


# ------------------------------------------------------------------------------- docs
@specs
def test_the_finding_table_has_a_cell_for_it_in_every_row(spec: ExchangeSpec):
    rows = [line for line in (ROOT / "docs" / "findings.md").read_text().splitlines() if line.startswith("| `")]
    assert rows
    missing = [row.split("`")[1] for row in rows if f"**{spec.display_name}**:" not in row]
    assert missing == [], f"docs/findings.md has no {spec.display_name} text for {missing}: run `make docs`"


# ------------------------------------------------------------------------------ audit
@specs
def test_the_template_gives_it_an_audit_queue_the_dispatcher_fills_and_the_worker_reads(spec: ExchangeSpec):
    variable = f"AUDIT_QUEUE_URL_{spec.name.upper()}"
    reference = function_variables("AuditDispatcherFunction").get(variable)
    assert isinstance(reference, CfnTag), f"the dispatcher has no {variable}"
    while reference.tag == "!If":  # one queue per egress IP (EgressIpCount): with one IP, the last branch
        reference = reference.value[2]
    assert reference.tag == "!Ref"
    queue = reference.value
    assert resource(queue)["Type"] == "AWS::SQS::Queue"
    assert queue == local_stack.audit_queue_id(spec.name)  # the local stack makes the same queue

    events = resource("AuditWorkerFunction")["Properties"]["Events"].values()
    sources = [get_att_target(e["Properties"]["Queue"]) for e in events if e["Type"] == "SQS"]
    assert sources.count(f"{queue}.Arn") == 1, f"the audit worker does not read {queue}"


# ------------------------------------------------------------------ local stack, simulators
@specs
def test_the_local_stack_simulates_it_at_every_base_url(spec: ExchangeSpec):
    assert local_stack.exchanges()[spec.name] == tuple(base.variable for base in spec.base_urls)


@specs
def test_it_has_a_simulator_with_demo_keys(spec: ExchangeSpec):
    module = simulator_module(spec.name)
    assert issubclass(module.SIMULATOR, ExchangeSimulator)
    keys = demo_keys(spec.name)
    assert keys, f"simulators.{spec.name}.seed_demo seeds no key"
    assert {k.exchange for k in keys} == {spec.name}
    assert {k.expected_status for k in keys} >= {"healthy", "failing"}
