"""Request builders shared by the API tests."""

from __future__ import annotations

from typing import Any

from simulators.base import DemoKey
from tests.support.events import PLATFORM_A, api_event


def bind_body(key: DemoKey, *, user_id: str = "u-42", label: str | None = "grid bot", **overrides: Any) -> dict:
    body = {
        "user_id": user_id,
        "exchange": key.exchange,
        "api_key": key.api_key,
        "api_secret": key.api_secret,
        "key_type": key.key_type,
        "label": label,
        "scopes": list(key.scopes),
    }
    if key.passphrase is not None:
        body["passphrase"] = key.passphrase
    body.update(overrides)
    return body


def rotate_body(key: DemoKey, **overrides: Any) -> dict:
    body = {"api_key": key.api_key, "api_secret": key.api_secret, "key_type": key.key_type}
    if key.passphrase is not None:
        body["passphrase"] = key.passphrase
    body.update(overrides)
    return body


def bind_event(body: Any, *, principal: str = PLATFORM_A, headers: dict[str, str] | None = None) -> dict:
    return api_event("POST", "/bindings", body=body, principal=principal, headers=headers)


def rotate_event(binding_id: str, body: Any, *, principal: str = PLATFORM_A, headers=None) -> dict:
    return api_event(
        "PUT",
        f"/bindings/{binding_id}/credentials",
        resource="/bindings/{binding_id}/credentials",
        path_parameters={"binding_id": binding_id},
        body=body,
        principal=principal,
        headers=headers,
    )


def verify_event(binding_id: str, *, principal: str = PLATFORM_A) -> dict:
    return api_event(
        "POST",
        f"/bindings/{binding_id}/verify",
        resource="/bindings/{binding_id}/verify",
        path_parameters={"binding_id": binding_id},
        principal=principal,
    )


def get_event(binding_id: str, *, principal: str = PLATFORM_A) -> dict:
    return api_event(
        "GET",
        f"/bindings/{binding_id}",
        resource="/bindings/{binding_id}",
        path_parameters={"binding_id": binding_id},
        principal=principal,
    )


def delete_event(binding_id: str, *, principal: str = PLATFORM_A) -> dict:
    return api_event(
        "DELETE",
        f"/bindings/{binding_id}",
        resource="/bindings/{binding_id}",
        path_parameters={"binding_id": binding_id},
        principal=principal,
    )


def list_event(query: dict[str, str] | None = None, *, principal: str = PLATFORM_A) -> dict:
    return api_event("GET", "/bindings", query=query, principal=principal)
