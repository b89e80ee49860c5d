"""DELETE /bindings/{id}: the secret is scheduled for deletion, the metadata removed."""

from __future__ import annotations

from functions.read import app as read_function
from functions.unbind import app as unbind_function
from tests.support.api import assert_fully_present, created, delete_event, get_event, secret_of
from tests.support.events import PLATFORM_B


def test_unbind_schedules_the_secret_and_removes_the_metadata(stack):
    key = stack.exchanges.key("binance", "healthy")
    binding = created(stack, key)
    response = stack.invoke(unbind_function, delete_event(binding["binding_id"]))
    assert response.status == 204
    assert response.text == ""
    assert stack.table_items() == []  # binding, key marker and account marker all gone
    assert "DeletedDate" in secret_of(stack, binding["binding_id"])
    assert stack.invoke(read_function, get_event(binding["binding_id"])).status == 404
    assert stack.invoke(unbind_function, delete_event(binding["binding_id"])).status == 404


def test_the_key_can_be_bound_again_after_unbinding(stack):
    # Binance: its key check has no per-account limit (Bitget allows one check per second).
    key = stack.exchanges.key("binance", "healthy")
    binding = created(stack, key)
    stack.invoke(unbind_function, delete_event(binding["binding_id"]))
    again = created(stack, key)
    assert again["binding_id"] != binding["binding_id"]


def test_another_tenant_gets_404_and_nothing_changes(stack):
    key = stack.exchanges.key("bingx", "healthy spot and futures")
    binding = created(stack, key)
    response = stack.invoke(unbind_function, delete_event(binding["binding_id"], principal=PLATFORM_B))
    assert response.status == 404
    assert_fully_present(stack, binding["binding_id"], key.api_key)
