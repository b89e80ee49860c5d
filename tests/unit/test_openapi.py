"""docs/openapi.json is generated from the handlers' routes and documents the contract's API."""

from __future__ import annotations

import json
import re

import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from keyhealth.api.requests import TRIMMED_SPACE, trimmed
from keyhealth.exchanges import registry
from scripts.openapi import OUTPUT, render

# The contract (section 2): every route, and the statuses each can answer.
CONTRACT = {
    ("post", "/bindings"): {"201", "400", "409", "422", "503"},
    ("get", "/bindings/{binding_id}"): {"200", "404"},
    ("get", "/bindings"): {"200", "400"},
    ("post", "/bindings/{binding_id}/verify"): {"200", "404"},
    ("put", "/bindings/{binding_id}/credentials"): {"200", "400", "404", "409", "422", "503"},
    ("delete", "/bindings/{binding_id}"): {"204", "404"},
    ("get", "/egress-ips"): {"200"},
}
# Beyond the contract's table: every route refuses a body that is not UTF-8 JSON or is over
# 16 KiB (400), a caller that is not an IAM user or role (403; API Gateway's own 403 too) and
# can fail unexpectedly (500); storage outages (503 storage_unavailable, Retry-After) wherever
# storage is read; a concurrent change (409 concurrent_update) where a binding is written.
EVERY_ROUTE = {"400", "403", "500"}
ALSO = {
    ("get", "/bindings/{binding_id}"): {"503"},
    ("get", "/bindings"): {"503"},
    ("post", "/bindings/{binding_id}/verify"): {"409", "503"},
    ("delete", "/bindings/{binding_id}"): {"409", "503"},
}
# The error body of each status: its schema lists the codes it carries.
ERROR_SCHEMAS = {
    "400": "BadRequest",
    "403": "ForbiddenAnswer",
    "404": "NotFound",
    "409": "Conflict",
    "500": "InternalError",
    "503": "StorageUnavailable",
}
# Bind and rotate check the key live: a 422 or 503 may carry the check's report, or not.
CHECK_SCHEMAS = {"422": "Unprocessable", "503": "CheckUnavailable"}
CHECKS_KEY = {("post", "/bindings"), ("put", "/bindings/{binding_id}/credentials")}


@pytest.fixture(scope="module")
def document() -> dict:
    return json.loads(render())


def schema_of(document: dict, name: str) -> dict:
    return document["components"]["schemas"][name]


def ref_name(schema: dict) -> str:
    return schema["$ref"].removeprefix("#/components/schemas/")


def test_the_checked_in_document_is_current():
    assert OUTPUT.read_text() == render(), "docs/openapi.json is stale: run `make openapi` and commit it"


def test_the_document_is_valid_openapi_3_1(document):
    from openapi_spec_validator import validate

    validate(document)


def test_every_route_of_the_contract_is_documented_with_its_methods(document):
    documented = {(method, path) for path, operations in document["paths"].items() for method in operations}
    assert documented == set(CONTRACT)


@pytest.mark.parametrize(("method", "path"), list(CONTRACT), ids=lambda v: v)
def test_each_operation_documents_exactly_the_answers_it_gives(document, method, path):
    operation = document["paths"][path][method]
    assert set(operation["responses"]) == CONTRACT[(method, path)] | EVERY_ROUTE | ALSO.get((method, path), set())
    for status, answer in operation["responses"].items():
        assert answer["description"], status
        if status == "204":
            assert "content" not in answer  # no body
            continue
        assert list(answer["content"]) == ["application/json"]
        assert ref_name(answer["content"]["application/json"]["schema"]) in document["components"]["schemas"]
    if "{binding_id}" in path:
        (binding_id,) = [p for p in operation["parameters"] if p["in"] == "path"]
        assert (binding_id["name"], binding_id["required"]) == ("binding_id", True)
        assert binding_id["schema"]["pattern"] == r"^bnd_[0-9A-HJKMNP-TV-Z]{26}$"


@pytest.mark.parametrize(("method", "path"), list(CONTRACT), ids=lambda v: v)
def test_each_error_status_has_its_own_body(document, method, path):
    for status, answer in document["paths"][path][method]["responses"].items():
        if not status.startswith(("4", "5")):
            continue
        expected = (CHECK_SCHEMAS if (method, path) in CHECKS_KEY else {}).get(status) or ERROR_SCHEMAS[status]
        assert ref_name(answer["content"]["application/json"]["schema"]) == expected, (method, path, status)
        if status in ("409", "503"):
            assert answer["headers"]["Retry-After"]["schema"] == {"type": "integer", "minimum": 1}
    assert "HTTPValidationError" not in document["components"]["schemas"]


def _error(code: str, **extra: object) -> dict:
    return {"error": {"code": code, "message": "m", **extra}}


REPORT = {
    "status": "failing",
    "checked_at": "2026-11-21T02:00:00Z",
    "permissions": {},
    "findings": [],
}


@pytest.mark.parametrize(
    ("schema", "body", "valid"),
    [
        ("Unprocessable", {**_error("key_failing"), "report": REPORT}, True),
        ("Unprocessable", _error("idempotency_key_reused"), True),
        ("Unprocessable", _error("key_failing"), False),  # key_failing carries the report
        ("Unprocessable", {**_error("idempotency_key_reused"), "report": REPORT}, False),
        ("CheckUnavailable", {**_error("exchange_unavailable"), "report": REPORT}, True),
        ("CheckUnavailable", _error("storage_unavailable"), True),
        ("CheckUnavailable", _error("exchange_unavailable"), False),
        ("StorageUnavailable", {**_error("storage_unavailable"), "report": REPORT}, False),
        ("StorageUnavailable", _error("exchange_unavailable"), False),
        ("ForbiddenAnswer", _error("forbidden"), True),
        ("ForbiddenAnswer", {"message": "Missing Authentication Token"}, True),
        ("ForbiddenAnswer", {"Message": "User: anonymous is not authorized"}, True),
        ("ForbiddenAnswer", {}, False),
        ("Conflict", _error("already_bound", binding_id="bnd_01JAAAAAAAAAAAAAAAAAAAAAAA"), True),
        ("Conflict", _error("binding_not_found"), False),
        ("BadRequest", _error("invalid_request", details=[{"field": "scopes", "problem": "too short"}]), True),
        ("BadRequest", _error("forbidden"), False),
    ],
)
def test_error_bodies_say_which_codes_carry_a_report(document, schema, body, valid):
    resource = Resource.from_contents(document, default_specification=DRAFT202012)
    validator = Draft202012Validator(
        {"$ref": f"urn:doc#/components/schemas/{schema}"}, registry=Registry().with_resource("urn:doc", resource)
    )
    assert validator.is_valid(body) is valid


def test_every_operation_requires_sigv4(document):
    assert document["security"] == [{"sigv4": []}]
    assert document["components"]["securitySchemes"]["sigv4"]["x-amazon-apigateway-authtype"] == "awsSigv4"
    for operations in document["paths"].values():
        for operation in operations.values():
            assert operation.get("security", document["security"]) == [{"sigv4": []}]


def test_bind_and_rotate_declare_the_idempotency_key_header(document):
    for path, method in (("/bindings", "post"), ("/bindings/{binding_id}/credentials", "put")):
        (header,) = [p for p in document["paths"][path][method]["parameters"] if p["in"] == "header"]
        assert header["name"].lower() == "idempotency-key"
        assert header["required"] is False
        assert header["schema"]["type"] == "string"
        assert header["schema"]["pattern"] == r"^[\x21-\x7e]{1,255}$"


def test_optional_parameters_are_never_null(document):
    for operations in document["paths"].values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                assert "null" not in json.dumps(parameter["schema"]), parameter


def test_the_cursor_is_never_empty(document):
    (cursor,) = [p for p in document["paths"]["/bindings"]["get"]["parameters"] if p["name"] == "cursor"]
    assert cursor["schema"]["minLength"] == 1


def test_the_bind_request_is_one_shape_per_exchange_and_key_type(document):
    request = document["paths"]["/bindings"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    branches = schema_of(document, ref_name(request))["oneOf"]
    shapes = {(b["properties"]["exchange"]["const"], b["title"].split(", ")[1].removesuffix(" key")) for b in branches}
    assert shapes == {(s.name, t.value) for s in registry.SPECS for t in s.keys.key_types}
    for branch in branches:
        spec = registry.spec(branch["properties"]["exchange"]["const"])
        assert branch["additionalProperties"] is False
        assert {"user_id", "exchange", "api_key", "api_secret", "scopes"} <= set(branch["required"])
        assert branch["properties"]["api_secret"]["writeOnly"] is True
        assert branch["properties"]["api_key"]["pattern"] == trimmed(spec.keys.api_key.pattern)
        assert branch["properties"]["scopes"]["uniqueItems"] is True
        assert branch["properties"]["user_id"]["pattern"] == r"^[A-Za-z0-9._:@-]{1,128}$"
        passphrase = branch["properties"]["passphrase"]
        if spec.passphrase_required:
            assert "passphrase" in branch["required"]
            assert passphrase["pattern"] == trimmed(r"^[\x21-\x7e]{1,64}$")
        else:
            assert passphrase == {"type": "null", "description": passphrase["description"]}
    query = {p["name"] for p in document["paths"]["/bindings"]["get"]["parameters"]}
    assert query == {"user_id", "exchange", "status", "limit", "cursor"}


def test_the_trimmed_whitespace_is_what_str_strip_removes():
    space = re.compile(TRIMMED_SPACE)
    python_whitespace = {chr(c) for c in range(0x110000) if chr(c).isspace()}
    assert {chr(c) for c in range(0x110000) if space.fullmatch(chr(c))} == python_whitespace
    assert "".join(sorted(python_whitespace)).strip() == ""


def test_every_key_rule_is_an_anchored_pattern_json_schema_reads():
    for spec in registry.SPECS:
        rules = spec.keys
        for pattern in (rules.api_key, rules.hmac_secret, rules.passphrase):
            if pattern is None:
                continue
            assert pattern.pattern.startswith("^"), pattern
            assert pattern.pattern.endswith("$"), pattern
            assert re.compile(trimmed(pattern.pattern))
