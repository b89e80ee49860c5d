"""Request builders and stack assertions shared by the API and audit tests."""

from __future__ import annotations

from typing import Any

from simulators.base import DemoKey
from tests.support.events import PLATFORM_A, api_event
from tests.support.stack import SECRET_PREFIX


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


def binding_event(method: str, binding_id: str, suffix: str = "", **kwargs: Any) -> dict:
    """An event for a route on one binding (`/bindings/{binding_id}` + `suffix`)."""
    return api_event(
        method,
        f"/bindings/{binding_id}{suffix}",
        resource="/bindings/{binding_id}" + suffix,
        path_parameters={"binding_id": binding_id},
        **kwargs,
    )


def rotate_event(binding_id: str, body: Any, *, principal: str = PLATFORM_A, headers=None) -> dict:
    return binding_event("PUT", binding_id, "/credentials", body=body, principal=principal, headers=headers)


def verify_event(binding_id: str, *, principal: str = PLATFORM_A) -> dict:
    return binding_event("POST", binding_id, "/verify", principal=principal)


def get_event(binding_id: str, *, principal: str = PLATFORM_A) -> dict:
    return binding_event("GET", binding_id, principal=principal)


def delete_event(binding_id: str, *, principal: str = PLATFORM_A) -> dict:
    return binding_event("DELETE", binding_id, principal=principal)


def list_event(query: dict[str, str] | None = None, *, principal: str = PLATFORM_A) -> dict:
    return api_event("GET", "/bindings", query=query, principal=principal)


def created(stack, key: DemoKey, **overrides: Any) -> dict:
    """Bind `key` through the handler and return the created binding."""
    from functions.bind import app as bind_function

    response = stack.invoke(bind_function, bind_event(bind_body(key, **overrides)))
    assert response.status == 201, response
    return response.json["binding"]


def secret_of(stack, binding_id: str) -> dict:
    """Secrets Manager's description of the binding's secret (a test of its mechanics: skipped on kms)."""
    stack.requires_secrets_manager("tests/integration/adapters/test_kms_credentials.py")
    return stack.secretsmanager.describe_secret(SecretId=f"{SECRET_PREFIX}{binding_id}")


def current_api_key(stack, binding_id: str, stage: str = "AWSCURRENT") -> str:
    return stack.stored_credentials(binding_id, stage).api_key


def assert_fully_present(stack, binding_id: str, api_key: str) -> None:
    """Metadata, key marker and a live secret all exist, and the secret is `api_key`'s."""
    items = {i["sk"]["S"]: i for i in stack.table_items()}
    binding = items[f"B#{binding_id}"]
    assert binding["api_key_masked"]["S"] == f"{api_key[:4]}...{api_key[-4:]}"
    markers = [i for sk, i in items.items() if sk.startswith("K#") and i["binding_id"]["S"] == binding_id]
    assert len(markers) == 1
    assert stack.credentials_live(binding_id)
    assert current_api_key(stack, binding_id) == api_key


def assert_fully_absent(stack, binding_id: str | None = None) -> None:
    """No metadata, no marker, and no live secret (none at all, or one scheduled for deletion)."""
    items = stack.table_items()
    if binding_id is None:
        assert items == []
        assert stack.secret_names() == []
        return
    assert not [i for i in items if binding_id in str(i)]
    assert f"{SECRET_PREFIX}{binding_id}" not in stack.secret_names()
