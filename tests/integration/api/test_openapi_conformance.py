"""docs/openapi.json says what the API does: every route driven through the real handlers (moto and
the exchange simulators behind them) with valid and invalid requests, and EVERY answer checked
against the document: a status the operation lists, its content type, its body against the
documented schema (formats included), its documented headers. Each operation's test also
checks that it got every status the document lists for it.

The requests are checked against the document too, both ways: what the tests send as valid is
valid by the document, and each malformed request of test_malformed.py is invalid by it, except
the few rules JSON Schema cannot state (`UNSTATABLE`), which the document states in words.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from jsonschema import Draft202012Validator, FormatChecker
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from functions.bind import app as bind_function
from functions.read import app as read_function
from functions.unbind import app as unbind_function
from functions.verify import app as verify_function
from keyhealth.api.requests import PEM_FORMATS
from keyhealth.domain.credentials import KeyType
from simulators.base import Fault
from tests.integration.api.test_malformed import BIND_CASES, ROTATE_CASES
from tests.support.api import (
    bind_body,
    bind_event,
    binding_event,
    delete_event,
    get_event,
    list_event,
    rotate_body,
    rotate_event,
    verify_event,
)
from tests.support.events import PLATFORM_B, api_event

DOCUMENT = json.loads((Path(__file__).resolve().parents[3] / "docs" / "openapi.json").read_text())
_REGISTRY = Registry().with_resource("urn:doc", Resource.from_contents(DOCUMENT, default_specification=DRAFT202012))
PLATFORM_C = "arn:aws:iam::333333333333:user/conformance"
NOT_IAM = "arn:aws:sts::111111111111:federated-user/someone"  # not an IAM user or role: 403 forbidden
MISSING = "bnd_01JAAAAAAAAAAAAAAAAAAAAAAA"


def _private_key_check(expected: type) -> Any:
    def check(value: object) -> bool:
        if not isinstance(value, str):
            return True
        try:
            key = load_pem_private_key(value.strip().encode(), password=None)
        except (ValueError, TypeError):
            return False
        return isinstance(key, expected)

    return check


# The formats the document names for PEM private keys, checked as the code checks them.
FORMATS = FormatChecker()
FORMATS.checks(PEM_FORMATS[KeyType.ED25519])(_private_key_check(ed25519.Ed25519PrivateKey))
FORMATS.checks(PEM_FORMATS[KeyType.RSA])(_private_key_check(rsa.RSAPrivateKey))


def validator(schema: dict[str, Any]) -> Draft202012Validator:
    """A validator of `schema`, a part of the document (its `$ref`s resolve in the document)."""
    rebased = json.loads(json.dumps(schema).replace('"#/components/', '"urn:doc#/components/'))
    return Draft202012Validator(rebased, registry=_REGISTRY, format_checker=FORMATS)


def problems(schema: dict[str, Any], value: Any) -> list[str]:
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}" for e in validator(schema).iter_errors(value)
    ]


class Conformance:
    """Invokes handlers and checks each answer against the operation the document declares."""

    def __init__(self, stack) -> None:
        self.stack = stack
        self.seen: dict[tuple[str, str], set[str]] = defaultdict(set)

    def call(self, function: ModuleType, event: dict[str, Any]):
        response = self.stack.invoke(function, event)
        method, template = event["httpMethod"].lower(), event["resource"]
        operation = DOCUMENT["paths"][template][method]
        status = str(response.status)
        where = f"{method.upper()} {template} -> {status}"
        assert status in operation["responses"], f"{where}: not documented ({response.text[:300]})"
        self.seen[(method, template)].add(status)
        answer = operation["responses"][status]
        content = answer.get("content")
        if content is None:
            assert response.text == "", f"{where}: documented without a body, sent {response.text[:100]!r}"
        else:
            media_type = response.headers.get("content-type", "").split(";")[0].strip()
            assert media_type in content, f"{where}: Content-Type {media_type!r}, documented {list(content)}"
            found = problems(content[media_type]["schema"], json.loads(response.text))
            assert not found, f"{where}: the body breaks the document: {found} ({response.text[:500]})"
        for name, header in answer.get("headers", {}).items():
            if name.lower() in response.headers:
                value = response.headers[name.lower()]
                parsed = int(value) if header["schema"].get("type") == "integer" and value.isdigit() else value
                assert not problems(header["schema"], parsed), f"{where}: header {name}: {value!r}"
        return response

    def covered(self, method: str, template: str) -> None:
        documented = set(DOCUMENT["paths"][template][method]["responses"])
        assert self.seen[(method, template)] == documented, (
            f"{method.upper()} {template}: answered {sorted(self.seen[(method, template)])}, "
            f"documents {sorted(documented)}"
        )


@pytest.fixture
def api(stack) -> Conformance:
    return Conformance(stack)


def request_schema(method: str, template: str) -> dict[str, Any]:
    return DOCUMENT["paths"][template][method]["requestBody"]["content"]["application/json"]["schema"]


def _bump(binding_id: str) -> dict[str, Any]:
    """An update_item that another writer would make: the binding's version moves on."""
    return {
        "TableName": "keyhealth-bindings",
        "Key": {"pk": {"S": "T#111111111111:role/platform-backend"}, "sk": {"S": f"B#{binding_id}"}},
        "UpdateExpression": "SET version = version + :one",
        "ExpressionAttributeValues": {":one": {"N": "1"}},
    }


def _raising(error: Exception):
    def hook() -> None:
        raise error

    return hook


@pytest.fixture
def all_keys(stack) -> list:
    return list(stack.exchanges.keys.values())


def test_bind_answers_as_documented(api, stack, all_keys, clock):
    schema = request_schema("post", "/bindings")
    statuses: dict[str, int] = defaultdict(int)
    # Every demo key of every exchange and key type: 201 for the usable ones, 422 with the report.
    # A demo key of the wrong shape (Binance's "malformed-key") is invalid by the document too: 400.
    for key in all_keys:
        body = bind_body(key, user_id="u-conformance")
        clock.skip(2)  # Bitget allows one check per second per account
        response = api.call(bind_function, bind_event(body))
        statuses[str(response.status)] += 1
        if problems(schema, body):
            assert response.status == 400, (key.label, response)
        else:
            assert response.status == (422 if key.expected_status == "failing" else 201), (key.label, response)
    healthy = stack.exchanges.key("binance", "healthy")
    # Whitespace around the credentials: valid by the document, trimmed by the code.
    padded = bind_body(
        stack.exchanges.key("bingx", "withdraw enabled"),
        api_key=" \t" + stack.exchanges.key("bingx", "withdraw enabled").api_key + "\u00a0\n",
    )
    assert not problems(schema, padded)
    assert api.call(bind_function, bind_event(padded, principal=PLATFORM_B)).status == 201
    # 409 already_bound; 422 idempotency_key_reused; a retry with the same key: the first answer.
    assert api.call(bind_function, bind_event(bind_body(healthy))).status == 409
    other = stack.exchanges.key("bitget", "healthy")
    first = api.call(
        bind_function, bind_event(bind_body(other), principal=PLATFORM_B, headers={"Idempotency-Key": "k1"})
    )
    again = api.call(
        bind_function, bind_event(bind_body(other), principal=PLATFORM_B, headers={"Idempotency-Key": "k1"})
    )
    assert (first.status, again.status, again.json) == (201, 201, first.json)
    reused = bind_event(bind_body(other, label="x"), principal=PLATFORM_B, headers={"Idempotency-Key": "k1"})
    assert api.call(bind_function, reused).json["error"]["code"] == "idempotency_key_reused"
    assert api.call(bind_function, bind_event(bind_body(healthy), headers={"Idempotency-Key": "é"})).status == 400
    twice = bind_event(bind_body(healthy), headers={"Idempotency-Key": "k2"})
    twice["multiValueHeaders"]["Idempotency-Key"] = ["k2", "k3"]  # which one? (Powertools refuses it)
    assert api.call(bind_function, twice).json["error"]["code"] == "invalid_idempotency_key"
    # Found by the fuzz run: PEM armour glued to the base64 was answered as whitespace in the key.
    glued = bind_body(
        stack.exchanges.key("binance", "healthy-ed25519"),
        api_secret="-----BEGIN PRIVATE KEY-----\n0-----END PRIVATE KEY-----",
    )
    assert api.call(bind_function, bind_event(glued)).json["error"]["code"] == "invalid_secret_format"
    # 503 with the report (the exchange in maintenance), and without (storage down).
    fresh = stack.exchanges.key("bingx", "healthy spot and futures")

    def bind_fresh(user_id: str, principal: str = PLATFORM_C):
        return api.call(bind_function, bind_event(bind_body(fresh, user_id=user_id), principal=principal))

    stack.exchanges.simulators["bingx"].fault = Fault.MAINTENANCE
    assert bind_fresh("u-2").json["report"]["status"] == "unknown"
    stack.exchanges.simulators["bingx"].fault = None
    stack.dynamodb.fail("transact_write_items")
    assert bind_fresh("u-3").json["error"]["code"] == "storage_unavailable"
    stack.dynamodb.heal()
    # 403 (not an IAM user or role) and 500 (an unexpected error).
    assert bind_fresh("u-4", principal=NOT_IAM).status == 403
    stack.dynamodb.before["get_item"] = _raising(RuntimeError("unexpected"))
    assert bind_fresh("u-5").status == 500
    # Every malformed bind of test_malformed.py: 400, and invalid by the document.
    for group, cases in BIND_CASES.items():
        for case in cases:
            valid = bind_body(stack.exchanges.key(*case.key))
            submitted = case.body(valid)
            response = api.call(bind_function, bind_event(submitted, headers=case.headers))
            assert response.status == 400, (case.name, response)
            if case.code not in UNSTATABLE:
                parsed = _loads(submitted) if isinstance(submitted, str) else submitted
                assert problems(schema, parsed), (group, case.name, "the document accepts a body the code refuses")
    assert statuses["201"]
    assert statuses["422"]
    api.covered("post", "/bindings")


# What JSON Schema cannot state and the document says in words: the body's size as sent (16 KiB),
# its media type and JSON syntax.
UNSTATABLE = {"body_too_large", "unsupported_content_type", "invalid_json"}


# Rotate: credentials valid for another exchange than the binding's (the document lists every
# exchange's shapes; the request does not say which exchange the binding is on).
OTHER_EXCHANGE_SHAPE = {
    "invalid_api_key_format",
    "invalid_secret_format",
    "passphrase_required",
    "passphrase_not_allowed",
    "invalid_passphrase_format",
    "key_type_not_supported",
}


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return None  # not JSON: nothing the document could accept


def test_rotate_answers_as_documented(api, stack, clock):
    schema = request_schema("put", "/bindings/{binding_id}/credentials")
    bound = {}
    for exchange, label in (("binance", "healthy"), ("bitget", "healthy"), ("bingx", "healthy spot and futures")):
        response = api.call(bind_function, bind_event(bind_body(stack.exchanges.key(exchange, label))))
        bound[exchange] = response.json["binding"]["binding_id"]
    clock.skip(2)
    for exchange, label in (
        ("binance", "healthy-rsa"),
        ("bitget", "legacy-trade"),
        ("bingx", "no IP binding, trading"),
    ):
        body = rotate_body(stack.exchanges.key(exchange, label))
        assert not problems(schema, body)
        assert api.call(bind_function, rotate_event(bound[exchange], body)).status == 200
    clock.skip(2)
    failing = rotate_body(stack.exchanges.key("binance", "wrong-secret"))
    assert api.call(bind_function, rotate_event(bound["binance"], failing)).json["error"]["code"] == "key_failing"
    same = rotate_body(stack.exchanges.key("bitget", "healthy"))
    assert api.call(bind_function, rotate_event(bound["binance"], same)).status == 400  # another exchange's shape
    taken = rotate_body(stack.exchanges.key("binance", "healthy"))
    other = api.call(bind_function, bind_event(bind_body(stack.exchanges.key("binance", "healthy"))))
    assert other.status == 201
    assert api.call(bind_function, rotate_event(bound["binance"], taken)).json["error"]["code"] == "already_bound"
    headers = {"Idempotency-Key": "r1"}
    clock.skip(2)
    renewed = rotate_body(stack.exchanges.key("bingx", "healthy spot and futures"))
    assert api.call(bind_function, rotate_event(bound["bingx"], renewed, headers=headers)).status == 200
    changed = rotate_body(stack.exchanges.key("bingx", "withdraw enabled"))
    assert api.call(bind_function, rotate_event(bound["bingx"], changed, headers=headers)).status == 422
    assert api.call(bind_function, rotate_event(MISSING, renewed)).status == 404
    assert api.call(bind_function, rotate_event("not-an-id", renewed)).status == 404
    stack.exchanges.simulators["bingx"].fault = Fault.UNAVAILABLE
    assert api.call(bind_function, rotate_event(bound["bingx"], changed)).json["error"]["code"] == (
        "exchange_unavailable"
    )
    stack.exchanges.simulators["bingx"].fault = None
    stack.dynamodb.fail("get_item")
    assert api.call(bind_function, rotate_event(bound["bingx"], changed)).status == 503
    stack.dynamodb.heal()
    assert api.call(bind_function, rotate_event(bound["bingx"], changed, principal=NOT_IAM)).status == 403
    stack.dynamodb.before["get_item"] = _raising(RuntimeError("unexpected"))
    assert api.call(bind_function, rotate_event(bound["bingx"], changed)).status == 500
    for case in ROTATE_CASES:
        valid = rotate_body(stack.exchanges.key(*case.key))
        submitted = case.body(valid)
        response = api.call(bind_function, rotate_event(bound[case.key[0]], submitted, headers=case.headers))
        assert response.status == 400, (case.name, response)
        if case.code in UNSTATABLE or not isinstance(submitted, dict):
            continue
        # The document accepts only what is valid for some exchange: the rest is refused by the
        # binding's own exchange rules, which the document states in words.
        if not problems(schema, submitted):
            assert case.code in OTHER_EXCHANGE_SHAPE, (case.name, "the document accepts a body the code refuses")
    api.covered("put", "/bindings/{binding_id}/credentials")


def test_verify_answers_as_documented(api, stack, clock):
    binding = api.call(bind_function, bind_event(bind_body(stack.exchanges.key("binance", "healthy")))).json
    binding_id = binding["binding"]["binding_id"]
    assert api.call(verify_function, verify_event(binding_id)).status == 200
    stack.exchanges.simulators["binance"].fault = Fault.MAINTENANCE
    assert api.call(verify_function, verify_event(binding_id)).json["report"]["status"] == "unknown"
    stack.exchanges.simulators["binance"].fault = None
    assert api.call(verify_function, verify_event(MISSING)).status == 404
    assert api.call(verify_function, verify_event("not-an-id")).status == 404
    assert api.call(verify_function, verify_event(binding_id, principal=PLATFORM_B)).status == 404
    assert api.call(verify_function, verify_event(binding_id, principal=NOT_IAM)).status == 403
    # Another request writes the binding between verify's read and its write: 409 concurrent_update.
    stack.dynamodb.before["put_item"] = lambda: stack.dynamodb.update_item(**_bump(binding_id))
    assert api.call(verify_function, verify_event(binding_id)).json["error"]["code"] == "concurrent_update"
    stack.dynamodb.fail("get_item")
    assert api.call(verify_function, verify_event(binding_id)).status == 503
    stack.dynamodb.heal()
    stack.dynamodb.before["get_item"] = _raising(RuntimeError("unexpected"))
    assert api.call(verify_function, verify_event(binding_id)).status == 500
    body = binding_event("POST", binding_id, "/verify", body="x", headers={"Content-Type": "text/plain"})
    assert api.call(verify_function, body).status == 400
    api.covered("post", "/bindings/{binding_id}/verify")


def test_read_routes_answer_as_documented(api, stack):
    ids = [
        api.call(bind_function, bind_event(bind_body(stack.exchanges.key(*key), user_id=user))).json["binding"][
            "binding_id"
        ]
        for key, user in (
            (("binance", "healthy"), "u-1"),
            (("binance", "withdraw-enabled"), "u-1"),
            (("bingx", "healthy spot and futures"), "u-2"),
        )
    ]
    assert api.call(read_function, get_event(ids[0])).status == 200
    for missing in (MISSING, "not-an-id", "x" * 2000):
        assert api.call(read_function, get_event(missing)).status == 404
    assert api.call(read_function, get_event(ids[0], principal=NOT_IAM)).status == 403
    page = api.call(read_function, list_event({"limit": "1"})).json
    assert page["next_cursor"]
    assert api.call(read_function, list_event({"limit": "1", "cursor": page["next_cursor"]})).status == 200
    for query in (
        {"user_id": "u-1", "exchange": "binance", "status": "healthy", "limit": "100"},
        {"status": "degraded"},
        {},
    ):
        assert api.call(read_function, list_event(query)).status == 200
    for query in (
        {"cursor": "not-a-cursor"},
        {"cursor": ""},
        {"limit": "0"},
        {"limit": "101"},
        {"limit": "ten"},
        {"user_id": "u 1"},
        {"exchange": "kraken"},
        {"status": "fine"},
    ):
        assert api.call(read_function, list_event(query)).status == 400, query
    assert api.call(read_function, list_event(principal=NOT_IAM)).status == 403
    stack.dynamodb.fail("get_item", "query")
    assert api.call(read_function, get_event(ids[0])).status == 503
    assert api.call(read_function, list_event()).status == 503
    stack.dynamodb.heal()
    stack.dynamodb.before["get_item"] = _raising(RuntimeError("unexpected"))
    assert api.call(read_function, get_event(ids[0])).status == 500
    stack.dynamodb.before["query"] = _raising(RuntimeError("unexpected"))
    assert api.call(read_function, list_event()).status == 500
    big = binding_event("GET", ids[0], body="x" * 17 * 1024)
    assert api.call(read_function, big).status == 400
    assert api.call(read_function, api_event("GET", "/bindings", body="x" * 17 * 1024)).status == 400
    api.covered("get", "/bindings/{binding_id}")
    api.covered("get", "/bindings")


def test_egress_ips_answer_as_documented(api, stack, monkeypatch):
    assert api.call(read_function, api_event("GET", "/egress-ips")).status == 200
    assert api.call(read_function, api_event("GET", "/egress-ips", principal=NOT_IAM)).status == 403
    assert api.call(read_function, api_event("GET", "/egress-ips", body="x" * 17 * 1024)).status == 400
    settings = type(stack.container.settings)
    monkeypatch.setattr(settings, "egress_ips", property(_raising_property), raising=False)
    assert api.call(read_function, api_event("GET", "/egress-ips")).status == 500
    api.covered("get", "/egress-ips")


def _raising_property(_self: object) -> Any:
    raise RuntimeError("unexpected")


def test_unbind_answers_as_documented(api, stack):
    ids = [
        api.call(bind_function, bind_event(bind_body(stack.exchanges.key("binance", label)))).json["binding"][
            "binding_id"
        ]
        for label in ("healthy", "withdraw-enabled", "no-ip-restriction")
    ]
    assert api.call(unbind_function, delete_event(ids[0])).status == 204
    assert api.call(unbind_function, delete_event(ids[0])).status == 404
    assert api.call(unbind_function, delete_event("not-an-id")).status == 404
    assert api.call(unbind_function, delete_event(ids[1], principal=NOT_IAM)).status == 403
    stack.dynamodb.fail("transact_write_items")
    assert api.call(unbind_function, delete_event(ids[1])).status == 503
    stack.dynamodb.heal()
    # Another request changes the binding before each of unbind's deletes: 409 concurrent_update.
    stack.dynamodb.every["transact_write_items"] = lambda: stack.dynamodb.update_item(**_bump(ids[2]))
    assert api.call(unbind_function, delete_event(ids[2])).json["error"]["code"] == "concurrent_update"
    stack.dynamodb.every.clear()
    stack.dynamodb.before["get_item"] = _raising(RuntimeError("unexpected"))
    assert api.call(unbind_function, delete_event(ids[1])).status == 500
    big = binding_event("DELETE", ids[1], body="x" * 17 * 1024)
    assert api.call(unbind_function, big).status == 400
    api.covered("delete", "/bindings/{binding_id}")
