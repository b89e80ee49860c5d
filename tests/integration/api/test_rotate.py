"""PUT /bindings/{id}/credentials: new credentials are checked first and swapped in only if usable."""

from __future__ import annotations

from functions.bind import app as bind_function
from simulators.base import Fault
from tests.support.api import (
    assert_fully_present,
    created,
    current_api_key,
    rotate_body,
    rotate_event,
    secret_of,
)
from tests.support.events import PLATFORM_B


def stages(stack, binding_id: str) -> list[list[str]]:
    return sorted(sorted(labels) for labels in secret_of(stack, binding_id)["VersionIdsToStages"].values())


def test_usable_new_credentials_are_promoted_and_the_old_kept_as_previous(stack):
    old, new = stack.exchanges.key("binance", "healthy"), stack.exchanges.key("binance", "healthy-ed25519")
    binding = created(stack, old)
    response = stack.invoke(bind_function, rotate_event(binding["binding_id"], rotate_body(new)))

    assert response.status == 200, response
    rotated = response.json["binding"]
    assert rotated["binding_id"] == binding["binding_id"]
    assert rotated["key_type"] == "ed25519"
    assert rotated["api_key_masked"] == f"{new.api_key[:4]}...{new.api_key[-4:]}"
    assert current_api_key(stack, binding["binding_id"]) == new.api_key
    assert current_api_key(stack, binding["binding_id"], "AWSPREVIOUS") == old.api_key
    assert stages(stack, binding["binding_id"]) == [["AWSCURRENT"], ["AWSPREVIOUS"]]
    assert_fully_present(stack, binding["binding_id"], new.api_key)


def test_failing_new_credentials_leave_the_old_ones_current(stack):
    old, bad = stack.exchanges.key("bitget", "healthy"), stack.exchanges.key("bitget", "wrong-passphrase")
    binding = created(stack, old)
    response = stack.invoke(bind_function, rotate_event(binding["binding_id"], rotate_body(bad)))

    assert response.status == 422
    assert response.json["error"]["code"] == "key_failing"
    assert [f["code"] for f in response.json["report"]["findings"]] == ["invalid_passphrase"]
    assert current_api_key(stack, binding["binding_id"]) == old.api_key
    # The rejected version carries no label any more: nothing can read it as current or pending.
    assert stages(stack, binding["binding_id"]) == [[], ["AWSCURRENT"]]
    assert_fully_present(stack, binding["binding_id"], old.api_key)


def test_an_outage_during_rotation_is_503_and_changes_nothing(stack):
    old, new = stack.exchanges.key("bitget", "healthy"), stack.exchanges.key("bitget", "uta-healthy")
    binding = created(stack, old)
    stack.exchanges.simulators["bitget"].fault = Fault.UNAVAILABLE
    response = stack.invoke(bind_function, rotate_event(binding["binding_id"], rotate_body(new)))
    assert response.status == 503
    assert "retry-after" in response.headers
    assert_fully_present(stack, binding["binding_id"], old.api_key)


def test_rotating_to_a_key_bound_elsewhere_is_409(stack):
    first = created(stack, stack.exchanges.key("binance", "healthy"))
    second_key = stack.exchanges.key("binance", "healthy-rsa")
    created(stack, second_key, user_id="u-99")
    response = stack.invoke(bind_function, rotate_event(first["binding_id"], rotate_body(second_key)))
    assert response.status == 409
    assert response.json["error"]["code"] == "already_bound"


def test_a_status_change_on_rotation_is_published(stack):
    old, new = stack.exchanges.key("binance", "healthy"), stack.exchanges.key("binance", "withdraw-enabled")
    binding = created(stack, old, scopes=["spot"])
    response = stack.invoke(bind_function, rotate_event(binding["binding_id"], rotate_body(new)))
    assert response.status == 200
    assert response.json["binding"]["status"] == "degraded"
    alerts = stack.alerts()
    assert [a["body"]["status"] for a in alerts] == ["degraded"]
    assert alerts[0]["attributes"]["severity"] == "warning"


def test_another_tenant_gets_404_and_nothing_changes(stack):
    old, new = stack.exchanges.key("binance", "healthy"), stack.exchanges.key("binance", "healthy-ed25519")
    binding = created(stack, old)
    response = stack.invoke(bind_function, rotate_event(binding["binding_id"], rotate_body(new), principal=PLATFORM_B))
    assert response.status == 404
    assert_fully_present(stack, binding["binding_id"], old.api_key)
    assert stages(stack, binding["binding_id"]) == [["AWSCURRENT"]]


def test_rotation_is_idempotent(stack):
    old, new = stack.exchanges.key("binance", "healthy"), stack.exchanges.key("binance", "healthy-ed25519")
    binding = created(stack, old)
    headers = {"Idempotency-Key": "rotate-1"}
    first = stack.invoke(bind_function, rotate_event(binding["binding_id"], rotate_body(new), headers=headers))
    again = stack.invoke(bind_function, rotate_event(binding["binding_id"], rotate_body(new), headers=headers))
    assert (first.status, again.status) == (200, 200)
    assert again.json == first.json
    assert len(secret_of(stack, binding["binding_id"])["VersionIdsToStages"]) == 2
