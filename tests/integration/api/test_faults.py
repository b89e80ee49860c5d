"""Fault injection at every AWS call of bind, rotate, verify and unbind.

Afterwards a binding is either fully present (metadata, key marker and a live secret that
agree) or fully absent, no secret is orphaned, the client got a 5xx with a stable code,
and retrying the same request succeeds.
"""

from __future__ import annotations

import pytest

from functions.bind import app as bind_function
from functions.unbind import app as unbind_function
from functions.verify import app as verify_function
from tests.support.api import (
    assert_fully_absent,
    assert_fully_present,
    bind_body,
    bind_event,
    created,
    current_api_key,
    delete_event,
    rotate_body,
    rotate_event,
    secret_of,
    verify_event,
)


def assert_retryable_5xx(response) -> None:
    assert response.status == 503, response
    assert response.json["error"]["code"] == "storage_unavailable"
    assert response.headers["retry-after"] == "1"


@pytest.mark.parametrize(
    ("client", "operation"),
    [
        ("dynamodb", "get_item"),  # the already-bound lookup
        ("secretsmanager", "create_secret"),
        ("dynamodb", "transact_write_items"),  # metadata: the secret must be removed again
    ],
)
def test_bind_fault_leaves_nothing_and_a_retry_succeeds(stack, client, operation):
    key = stack.exchanges.key("binance", "healthy")
    faulty, operation = stack.fault_point(client, operation)
    faulty.fail(operation)
    response = stack.invoke(bind_function, bind_event(bind_body(key)))
    assert_retryable_5xx(response)
    faulty.heal()
    assert_fully_absent(stack)

    retry = stack.invoke(bind_function, bind_event(bind_body(key)))
    assert retry.status == 201
    assert_fully_present(stack, retry.json["binding"]["binding_id"], key.api_key)


def test_bind_double_fault_is_logged_with_the_secret_to_remove(stack, all_logs):
    """Metadata write and the compensating delete both fail: no item points anywhere, and
    the one secret left is named in an error log line (with its binding id tag) for ops."""
    key = stack.exchanges.key("binance", "healthy")
    undo, call = stack.delete_now_point()
    stack.dynamodb.fail("transact_write_items")
    undo.fail(call)
    response = stack.invoke(bind_function, bind_event(bind_body(key)))
    assert_retryable_5xx(response)
    stack.dynamodb.heal()
    undo.heal()
    assert stack.table_items() == []
    [orphan] = stack.secret_names()
    [record] = [r for r in all_logs.records if r.getMessage().startswith("orphan secret left after a failed bind")]
    assert "OrphanSweeperFunction" in record.getMessage()  # it names the function that removes it
    assert record.levelname == "ERROR"
    assert record.binding_id == orphan.split("/")[-1]
    assert orphan in record.secret_id
    assert key.api_secret not in all_logs.text


def test_bind_idempotency_store_fault_is_503_and_stores_nothing(stack):
    key = stack.exchanges.key("binance", "healthy")
    stack.dynamodb.fail("put_item")  # Powertools' in-progress record
    response = stack.invoke(bind_function, bind_event(bind_body(key), headers={"Idempotency-Key": "k-1"}))
    assert_retryable_5xx(response)
    stack.dynamodb.heal()
    assert_fully_absent(stack)


@pytest.mark.parametrize(
    ("client", "operation"),
    [
        ("dynamodb", "get_item"),
        ("secretsmanager", "put_secret_value"),
        ("secretsmanager", "get_secret_value"),  # reading back the pending version
        ("secretsmanager", "describe_secret"),
        ("secretsmanager", "update_secret_version_stage"),  # promotion
        ("sns", "publish"),  # the status-change alert
        ("dynamodb", "transact_write_items"),  # metadata: promotion must be undone
    ],
)
def test_rotate_fault_keeps_the_old_credentials_whole_and_a_retry_succeeds(stack, client, operation):
    old, new = stack.exchanges.key("binance", "healthy"), stack.exchanges.key("binance", "withdraw-enabled")
    binding = created(stack, old, scopes=["spot"])  # healthy -> degraded: rotation publishes
    binding_id = binding["binding_id"]
    faulty, operation = stack.fault_point(client, operation)
    faulty.fail(operation)
    response = stack.invoke(bind_function, rotate_event(binding_id, rotate_body(new)))
    assert_retryable_5xx(response)
    faulty.heal()
    assert_fully_present(stack, binding_id, old.api_key)
    if stack.store == "secretsmanager":
        labelled = [labels for labels in secret_of(stack, binding_id)["VersionIdsToStages"].values() if labels]
        assert ["AWSCURRENT"] in labelled

    retry = stack.invoke(bind_function, rotate_event(binding_id, rotate_body(new)))
    assert retry.status == 200, retry
    assert_fully_present(stack, binding_id, new.api_key)
    assert current_api_key(stack, binding_id, "AWSPREVIOUS") == old.api_key


@pytest.mark.parametrize(
    ("client", "operation"),
    [
        ("dynamodb", "get_item"),
        ("secretsmanager", "get_secret_value"),
        ("sns", "publish"),
        ("dynamodb", "put_item"),  # the binding's conditional write
    ],
)
def test_verify_fault_changes_nothing_and_no_alert_is_lost(stack, client, operation):
    key = stack.exchanges.key("binance", "healthy")
    binding = created(stack, key)
    stack.exchanges.simulators["binance"].keys[key.api_key].enable_withdrawals = True  # healthy -> degraded
    before = [i for i in stack.table_items() if i["sk"]["S"].startswith("B#")]
    faulty, operation = stack.fault_point(client, operation)
    faulty.fail(operation)
    response = stack.invoke(verify_function, verify_event(binding["binding_id"]))
    assert_retryable_5xx(response)
    faulty.heal()
    assert [i for i in stack.table_items() if i["sk"]["S"].startswith("B#")] == before

    retry = stack.invoke(verify_function, verify_event(binding["binding_id"]))
    assert retry.status == 200
    assert retry.json["binding"]["status"] == "degraded"
    statuses = [a["body"]["status"] for a in stack.alerts()]
    # The change is announced at least once (a failed write after a sent alert repeats it).
    assert "degraded" in statuses
    assert set(statuses) == {"degraded"}


@pytest.mark.parametrize(
    ("client", "operation"),
    [
        ("dynamodb", "get_item"),
        ("secretsmanager", "delete_secret"),
        ("dynamodb", "transact_write_items"),  # metadata: the secret must be restored
    ],
)
def test_unbind_fault_keeps_the_binding_whole_and_a_retry_succeeds(stack, client, operation):
    key = stack.exchanges.key("binance", "healthy")
    binding = created(stack, key)
    faulty, operation = stack.fault_point(client, operation)
    faulty.fail(operation)
    response = stack.invoke(unbind_function, delete_event(binding["binding_id"]))
    assert_retryable_5xx(response)
    faulty.heal()
    assert_fully_present(stack, binding["binding_id"], key.api_key)

    assert stack.invoke(unbind_function, delete_event(binding["binding_id"])).status == 204
    assert_fully_absent(stack, binding["binding_id"])
