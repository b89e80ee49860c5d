"""Generates the API's OpenAPI document from the handlers' own route definitions.

`make openapi` writes docs/openapi.json; a test fails when the checked-in file is stale.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import Any

FUNCTIONS = ("bind", "verify", "unbind", "read")
OUTPUT = Path(__file__).resolve().parents[1] / "docs" / "openapi.json"


def openapi_document() -> dict[str, Any]:
    document: dict[str, Any] | None = None
    for name in FUNCTIONS:
        app = importlib.import_module(f"functions.{name}.app").app
        part = json.loads(
            app.get_openapi_json_schema(
                title="keyhealth",
                version="1.0.0",
                description=(
                    "Checks crypto-exchange API keys live and keeps them healthy. Every route requires "
                    "AWS_IAM (SigV4) authorisation; the caller's IAM principal is the tenant."
                ),
            )
        )
        if document is None:
            document = part
            continue
        for path, operations in part.get("paths", {}).items():
            document["paths"].setdefault(path, {}).update(operations)
        schemas = part.get("components", {}).get("schemas", {})
        document.setdefault("components", {}).setdefault("schemas", {}).update(schemas)
    assert document is not None
    _drop_powertools_validation_answers(document)
    _no_body_without_content(document)
    _no_null_parameters(document)
    document["paths"] = dict(sorted(document["paths"].items()))
    document["components"]["schemas"] = dict(sorted(document["components"]["schemas"].items()))
    document["components"]["securitySchemes"] = {
        "sigv4": {"type": "apiKey", "name": "Authorization", "in": "header", "x-amazon-apigateway-authtype": "awsSigv4"}
    }
    document["security"] = [{"sigv4": []}]
    return document


# Powertools documents a 422 `HTTPValidationError` on every route it validates. keyhealth never
# answers that: invalid input is a 400 with its own `ErrorOut` (keyhealth.api.http).
_POWERTOOLS_SCHEMAS = ("HTTPValidationError", "ValidationError", "ResponseValidationError")


def _drop_powertools_validation_answers(document: dict[str, Any]) -> None:
    for operations in document["paths"].values():
        for operation in operations.values():
            answer = operation.get("responses", {}).get("422", {})
            schema = answer.get("content", {}).get("application/json", {}).get("schema", {})
            if schema.get("$ref") == "#/components/schemas/HTTPValidationError":
                del operation["responses"]["422"]
    schemas = document.get("components", {}).get("schemas", {})
    unused = True
    while unused:  # one may be referenced only by another (ValidationError by HTTPValidationError)
        unused = [
            name
            for name in _POWERTOOLS_SCHEMAS
            if name in schemas
            and f'"#/components/schemas/{name}"'
            not in json.dumps([document["paths"], {k: v for k, v in schemas.items() if k != name}])
        ]
        for name in unused:
            del schemas[name]


def _no_body_without_content(document: dict[str, Any]) -> None:
    """An answer documented with an empty content map has no body (DELETE's 204): OpenAPI says so by
    leaving `content` out."""
    for operations in document["paths"].values():
        for operation in operations.values():
            for answer in operation["responses"].values():
                if answer.get("content") == {}:
                    del answer["content"]


def _no_null_parameters(document: dict[str, Any]) -> None:
    """An optional query or header parameter is `T | None` in Python (None: not sent); a query
    string or header cannot carry a JSON null, so the document says T."""
    for operations in document["paths"].values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                schema = parameter["schema"]
                branches = schema.get("anyOf", [])
                if parameter["required"] or len(branches) != 2 or {"type": "null"} not in branches:
                    continue
                (kept,) = [b for b in branches if b != {"type": "null"}]
                del schema["anyOf"]
                schema.update({k: v for k, v in kept.items() if k not in schema})  # OpenAPI 3.1: $ref takes siblings


def render() -> str:
    return json.dumps(openapi_document(), indent=2, sort_keys=False) + "\n"


if __name__ == "__main__":
    OUTPUT.parent.mkdir(exist_ok=True)
    text = render()
    changed = not OUTPUT.exists() or OUTPUT.read_text() != text
    OUTPUT.write_text(text)
    print(
        f"{OUTPUT.relative_to(Path.cwd()) if OUTPUT.is_relative_to(Path.cwd()) else OUTPUT}: "
        + ("updated" if changed else "already current"),
        file=sys.stderr,
    )
