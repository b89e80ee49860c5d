"""docs/openapi.json is generated from the handlers' routes and documents the contract's API."""

from __future__ import annotations

import json

import pytest

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
# Beyond the contract's table: storage outages (503 storage_unavailable, Retry-After) and a
# concurrent change (409 concurrent_update) on the routes that write.
ALSO = {
    ("post", "/bindings/{binding_id}/verify"): {"409", "503"},
    ("delete", "/bindings/{binding_id}"): {"503"},
}


@pytest.fixture(scope="module")
def document() -> dict:
    return json.loads(render())


def test_the_checked_in_document_is_current():
    assert OUTPUT.read_text() == render(), "docs/openapi.json is stale: run `make openapi` and commit it"


def test_every_route_of_the_contract_is_documented_with_its_methods(document):
    documented = {(method, path) for path, operations in document["paths"].items() for method in operations}
    assert documented == set(CONTRACT)


@pytest.mark.parametrize(("method", "path"), list(CONTRACT), ids=lambda v: v)
def test_each_operation_documents_exactly_the_answers_it_gives(document, method, path):
    operation = document["paths"][path][method]
    assert set(operation["responses"]) == CONTRACT[(method, path)] | ALSO.get((method, path), set())
    for status, answer in operation["responses"].items():
        assert answer["description"], status
        if status != "204":
            schema = answer["content"]["application/json"]["schema"]["$ref"]
            assert schema.removeprefix("#/components/schemas/") in document["components"]["schemas"]
    if "{binding_id}" in path:
        assert [(p["name"], p["in"], p["required"]) for p in operation["parameters"]] == [("binding_id", "path", True)]


def test_error_answers_use_the_api_error_shape(document):
    # Invalid input is a 400 ErrorOut, not the framework's 422 HTTPValidationError.
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            for status, answer in operation["responses"].items():
                if status.startswith(("4", "5")):
                    ref = answer["content"]["application/json"]["schema"]["$ref"]
                    assert ref.endswith(("/ErrorOut", "/ErrorWithReport")), (method, path, status)
    assert "HTTPValidationError" not in document["components"]["schemas"]


def test_every_operation_requires_sigv4(document):
    assert document["security"] == [{"sigv4": []}]
    assert document["components"]["securitySchemes"]["sigv4"]["x-amazon-apigateway-authtype"] == "awsSigv4"
    for operations in document["paths"].values():
        for operation in operations.values():
            assert operation.get("security", document["security"]) == [{"sigv4": []}]


def test_the_bind_request_is_documented_with_its_rules(document):
    request = document["paths"]["/bindings"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    schema = document["components"]["schemas"][request["$ref"].removeprefix("#/components/schemas/")]
    assert set(schema["required"]) == {"user_id", "exchange", "api_key", "api_secret", "scopes"}
    assert schema["additionalProperties"] is False
    assert schema["properties"]["api_secret"]["writeOnly"] is True
    query = {p["name"] for p in document["paths"]["/bindings"]["get"]["parameters"]}
    assert query == {"user_id", "exchange", "status", "limit", "cursor"}
