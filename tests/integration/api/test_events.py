"""The sample events in events/ (for `sam local invoke -e`) work against the real handlers.

Each API event is loaded as it is on disk, patched only where a value must come from the
running stack (the simulator's credentials, the id of a binding that exists), and sent to
the function that serves its route. Every file in events/ must have a test: API events here,
other events in the test of the function they belong to.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from functions.bind import app as bind_function
from functions.read import app as read_function
from functions.unbind import app as unbind_function
from functions.verify import app as verify_function
from keyhealth.domain.ids import is_binding_id
from tests.support.api import bind_body, bind_event
from tests.support.events import api_event

ROOT = Path(__file__).resolve().parents[3]
EVENTS = ROOT / "events"


@dataclass(frozen=True)
class Route:
    method: str
    resource: str
    function: ModuleType
    status: int


API_EVENTS = {
    "bind.json": Route("POST", "/bindings", bind_function, 201),
    "rotate.json": Route("PUT", "/bindings/{binding_id}/credentials", bind_function, 200),
    "verify.json": Route("POST", "/bindings/{binding_id}/verify", verify_function, 200),
    "unbind.json": Route("DELETE", "/bindings/{binding_id}", unbind_function, 204),
    "get-binding.json": Route("GET", "/bindings/{binding_id}", read_function, 200),
    "list-bindings.json": Route("GET", "/bindings", read_function, 200),
    "egress-ips.json": Route("GET", "/egress-ips", read_function, 200),
}


def load(name: str) -> dict[str, Any]:
    return json.loads((EVENTS / name).read_text())


def keys_of(event: dict[str, Any]) -> dict[str, Any]:
    """The event's shape: its keys, and those of requestContext and identity."""
    context = event["requestContext"]
    return {"event": set(event), "requestContext": set(context), "identity": set(context["identity"])}


def test_every_event_file_has_a_test():
    files = sorted(p.name for p in EVENTS.glob("*.json"))
    assert set(API_EVENTS) <= set(files), "an API route lost its sample event"
    others = [p for p in (ROOT / "tests").rglob("*.py") if p.resolve() != Path(__file__).resolve()]
    for name in files:
        if name in API_EVENTS:
            continue
        assert "httpMethod" not in load(name), f"events/{name} is an API event: add it to API_EVENTS"
        assert any(name in p.read_text() for p in others), f"events/{name} is used by no test"


@pytest.mark.parametrize("name", list(API_EVENTS))
def test_each_api_event_has_the_shape_api_gateway_sends(name):
    event, route = load(name), API_EVENTS[name]
    assert (event["httpMethod"], event["resource"]) == (route.method, route.resource)
    assert event["requestContext"]["resourcePath"] == route.resource
    assert event["requestContext"]["httpMethod"] == route.method
    assert event["requestContext"]["path"] == f"/v1{event['path']}"
    assert keys_of(event) == keys_of(api_event("GET", "/"))
    if "{binding_id}" in route.resource:
        binding_id = event["pathParameters"]["binding_id"]
        assert is_binding_id(binding_id)
        assert event["path"] == route.resource.replace("{binding_id}", binding_id)
    if event["body"] is not None:
        json.loads(event["body"])
    assert event["multiValueHeaders"] == {k: [v] for k, v in event["headers"].items()}


def with_binding(event: dict[str, Any], binding_id: str) -> dict[str, Any]:
    placeholder = event["pathParameters"]["binding_id"]
    event["pathParameters"]["binding_id"] = binding_id
    event["path"] = event["path"].replace(placeholder, binding_id)
    event["requestContext"]["path"] = event["requestContext"]["path"].replace(placeholder, binding_id)
    return event


def with_credentials(event: dict[str, Any], key) -> dict[str, Any]:
    body = json.loads(event["body"])
    assert {"api_key", "api_secret"} <= set(body)
    body |= {"api_key": key.api_key, "api_secret": key.api_secret}
    event["body"] = json.dumps(body)
    return event


@pytest.mark.parametrize("name", list(API_EVENTS))
def test_each_api_event_is_served_by_its_function(stack, name):
    event, route = load(name), API_EVENTS[name]
    key = stack.exchanges.key("binance", "healthy")  # an HMAC key with spot and futures, as the samples ask
    existing = None
    if name not in ("bind.json", "egress-ips.json"):
        bound = stack.invoke(bind_function, bind_event(bind_body(key, user_id="u-42")))
        assert bound.status == 201, bound
        existing = bound.json["binding"]
    if "{binding_id}" in route.resource:
        event = with_binding(event, existing["binding_id"])
    if event["body"] and "api_secret" in event["body"]:
        event = with_credentials(event, key)

    response = stack.invoke(route.function, event)

    assert response.status == route.status, response
    if route.status == 204:
        assert response.text == ""
        assert stack.binding_items() == []
        return
    body = response.json
    match name:
        case "bind.json" | "rotate.json" | "verify.json":
            assert body["binding"]["status"] == body["report"]["status"] == "healthy"
            assert body["binding"]["user_id"] == "u-42"
        case "get-binding.json":
            assert body == existing
        case "list-bindings.json":
            assert body == {"items": [existing], "next_cursor": None}
        case "egress-ips.json":
            assert body == {"egress_ips": ["127.0.0.2"], "planned": [], "canary": {}}
