"""The orphan sweeper's handler on moto: the whole stack's Secrets Manager, DynamoDB and SNS, bindings
made and unbound through the real API handlers, and orphans made by the double fault they exist for.

Kept: a secret with its binding, one younger than an hour, one scheduled for deletion (unbound), a
secret of another stack. Removed (scheduled for deletion with the recovery window): one whose bind
double-faulted, one whose binding points to another secret. A storage error on one is counted and the
others are still swept. Exactly one alert, with the count; none when there is nothing to remove.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from moto.core import DEFAULT_ACCOUNT_ID
from moto.secretsmanager.models import secretsmanager_backends

from functions.bind import app as bind_function
from functions.orphan_sweeper import app as sweeper
from functions.unbind import app as unbind_function
from keyhealth.adapters import secretsmanager_credentials
from keyhealth.domain.ids import new_binding_id
from tests.support.api import bind_body, bind_event, created, delete_event
from tests.support.aws import REGION, TABLE
from tests.support.events import LambdaContext
from tests.support.stack import SECRET_PREFIX

EVENT = Path(__file__).resolve().parents[3] / "events" / "orphan-sweeper.json"
HOUR = 3600
RECOVERY_DAYS = 7  # the stack's SECRET_RECOVERY_DAYS default


def sweep(stack) -> dict[str, int]:
    stack.secretsmanager.calls.clear()
    return sweeper.lambda_handler(json.loads(EVENT.read_text()), LambdaContext())


def orphan_alerts(stack) -> list[dict[str, Any]]:
    return [a for a in stack.alerts() if a["body"]["type"] == "orphans_removed"]


def describe(stack, secret: str) -> dict[str, Any]:
    return stack.secretsmanager.describe_secret(SecretId=secret)


def is_scheduled(stack, secret: str) -> bool:
    return "DeletedDate" in describe(stack, secret)


def tags_of(stack, secret: str) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in describe(stack, secret).get("Tags", [])}


def double_faulted_bind(stack, key) -> str:
    """A bind whose binding write and compensating delete both fail: the secret it leaves (its name)."""
    before = set(stack.secret_names())
    undo, call = stack.delete_now_point()
    stack.dynamodb.fail("transact_write_items")
    undo.fail(call)
    response = stack.invoke(bind_function, bind_event(bind_body(key)))
    stack.dynamodb.heal()
    undo.heal()
    assert response.status == 503, response
    [name] = set(stack.secret_names()) - before
    return name


def bare_secret(stack, name: str, **tags: str) -> str:
    """A secret as bind creates it (name and tags), with no binding."""
    return stack.secretsmanager.create_secret(
        Name=name,
        SecretString='{"api_key": "x", "api_secret": "never-read"}',
        Tags=[{"Key": k, "Value": v} for k, v in tags.items()],
    )["ARN"]


def created_seconds_ago(stack, clock, secret: str, seconds: float) -> None:
    """Backdate (or postdate) a secret's CreatedDate in moto, relative to the stack's clock."""
    secretsmanager_backends[DEFAULT_ACCOUNT_ID][REGION].secrets[secret].created_date = int(clock() - seconds)


def fail_once(operation: str):
    def hook() -> None:
        raise ClientError({"Error": {"Code": "ThrottlingException", "Message": "injected"}}, operation)

    return hook


# ---------------------------------------------------------------------------------------------------------------


def test_the_sweep_removes_the_orphans_keeps_the_rest_and_alerts_once(stack, clock):
    healthy = stack.exchanges.key("binance", "healthy")
    # Given a binding (its secret is kept)
    kept = created(stack, healthy, scopes=["spot"])
    # And an unbound binding (its secret is scheduled for deletion: no orphan)
    unbound = created(stack, stack.exchanges.key("bitget", "healthy"))
    assert stack.invoke(unbind_function, delete_event(unbound["binding_id"])).status == 204
    # And the secret of a bind that double-faulted (no binding points to it)
    orphan = double_faulted_bind(stack, stack.exchanges.key("binance", "withdraw-enabled"))
    # And a binding whose item points to another secret than the one named after it
    elsewhere = created(stack, stack.exchanges.first("bingx", "healthy"))
    [item] = [i for i in stack.binding_items() if i["binding_id"]["S"] == elsewhere["binding_id"]]
    own_secret = item["secret_id"]["S"]
    stack.dynamodb.update_item(
        TableName=TABLE,
        Key={"pk": item["pk"], "sk": item["sk"]},
        UpdateExpression="SET secret_id = :other",
        ExpressionAttributeValues={":other": {"S": kept_secret(stack, kept)}},
    )
    # And, two hours later, a secret with no binding made a minute ago (a bind between its two writes)
    clock.skip(2 * HOUR)
    young_id = new_binding_id(clock())
    young = bare_secret(
        stack,
        f"{SECRET_PREFIX}{young_id}",
        **{"keyhealth:tenant": tenant_of(stack, orphan), "keyhealth:binding_id": young_id},
    )
    created_seconds_ago(stack, clock, young, 60)
    # And a secret of another stack whose name starts like ours
    other_stack = bare_secret(stack, SECRET_PREFIX.rstrip("/") + "-2/" + new_binding_id(clock()))

    # When the schedule's event reaches the sweeper
    answer = sweep(stack)

    # Then the two orphans are scheduled for deletion (not deleted: the recovery window applies)
    assert answer == {"checked": 5, "removed": 2, "failed": 0}
    assert is_scheduled(stack, orphan)
    assert is_scheduled(stack, own_secret)
    for removed in (orphan, own_secret):
        deletion = describe(stack, removed)["DeletedDate"]
        assert deletion > describe(stack, removed)["CreatedDate"]  # a deletion date in the future, not gone
    # And the rest is kept as it was
    assert not is_scheduled(stack, kept_secret(stack, kept))
    assert not is_scheduled(stack, young)
    assert not is_scheduled(stack, other_stack)
    # And no secret's value was read
    assert "get_secret_value" not in stack.secretsmanager.calls
    # And exactly one warning alert says how many, and which
    [alert] = orphan_alerts(stack)
    assert alert["attributes"] == {
        "type": "orphans_removed",
        "severity": "warning",
        "exchange": "all",
        "status": "sweep",
    }
    body = alert["body"]
    assert (body["count"], body["failed"], body["checked"]) == (2, 0, 5)
    assert sorted(body["binding_ids"]) == sorted(
        [tags_of(stack, orphan)["keyhealth:binding_id"], elsewhere["binding_id"]]
    )
    assert (body["secret_prefix"], body["recovery_days"], body["complete"]) == (SECRET_PREFIX, RECOVERY_DAYS, True)
    assert "2 stored credentials" in alert["subject"]
    assert healthy.api_secret not in json.dumps(alert)


def kept_secret(stack, binding: dict[str, Any]) -> str:
    [item] = [i for i in stack.binding_items() if i["binding_id"]["S"] == binding["binding_id"]]
    return item["secret_id"]["S"]


def tenant_of(stack, secret: str) -> str:
    return tags_of(stack, secret)["keyhealth:tenant"]


def test_nothing_to_remove_publishes_nothing(stack, clock):
    # Given bindings whose secrets all back them, and an unbound one
    created(stack, stack.exchanges.key("binance", "healthy"), scopes=["spot"])
    unbound = created(stack, stack.exchanges.key("bitget", "healthy"))
    stack.invoke(unbind_function, delete_event(unbound["binding_id"]))
    clock.skip(2 * HOUR)
    # When
    answer = sweep(stack)
    # Then
    assert answer == {"checked": 2, "removed": 0, "failed": 0}
    assert orphan_alerts(stack) == []
    assert stack.secretsmanager.calls.count("delete_secret") == 0


def test_an_orphan_younger_than_an_hour_waits_for_the_next_sweep(stack, clock):
    orphan = double_faulted_bind(stack, stack.exchanges.key("binance", "healthy"))
    clock.skip(HOUR - 60)
    assert sweep(stack) == {"checked": 1, "removed": 0, "failed": 0}
    assert not is_scheduled(stack, orphan)
    clock.skip(120)
    assert sweep(stack) == {"checked": 1, "removed": 1, "failed": 0}
    assert is_scheduled(stack, orphan)
    [alert] = orphan_alerts(stack)
    assert alert["body"]["binding_ids"] == [tags_of(stack, orphan)["keyhealth:binding_id"]]


@pytest.mark.parametrize(
    ("client", "operation"),
    [("dynamodb", "get_item"), ("secretsmanager", "describe_secret"), ("secretsmanager", "delete_secret")],
)
def test_a_storage_failure_on_one_secret_is_counted_and_the_others_are_swept(stack, clock, client, operation):
    # Given three orphans
    orphans = [
        double_faulted_bind(stack, stack.exchanges.first(exchange, "healthy"))
        for exchange in ("binance", "bitget", "bingx")
    ]
    clock.skip(2 * HOUR)
    # And the first call of one kind failing
    getattr(stack, client).before[operation] = fail_once(operation)
    # When
    answer = sweep(stack)
    # Then one is counted as failed, the other two are removed
    assert answer == {"checked": 3, "removed": 2, "failed": 1}
    scheduled = [is_scheduled(stack, o) for o in orphans]
    assert sorted(scheduled) == [False, True, True]
    [left] = [o for o, s in zip(orphans, scheduled, strict=True) if not s]
    # And the one alert names both
    [alert] = orphan_alerts(stack)
    body = alert["body"]
    assert (body["count"], body["failed"]) == (2, 1)
    assert body["failed_binding_ids"] == [tags_of(stack, left)["keyhealth:binding_id"]]
    # And the next sweep removes it
    assert sweep(stack) == {"checked": 3, "removed": 1, "failed": 0}
    assert is_scheduled(stack, left)


def test_the_listing_is_read_page_by_page(stack, clock, monkeypatch):
    monkeypatch.setattr(secretsmanager_credentials, "LIST_PAGE_SIZE", 2)
    for exchange in ("binance", "bitget", "bingx"):
        created(stack, stack.exchanges.first(exchange, "healthy"))
    orphan = double_faulted_bind(stack, stack.exchanges.key("binance", "withdraw-enabled"))
    clock.skip(2 * HOUR)
    assert sweep(stack) == {"checked": 4, "removed": 1, "failed": 0}
    assert stack.secretsmanager.calls.count("list_secrets") == 2
    assert is_scheduled(stack, orphan)


def test_a_listing_failure_fails_the_invocation_and_a_rerun_sweeps(stack, clock):
    orphan = double_faulted_bind(stack, stack.exchanges.key("binance", "healthy"))
    clock.skip(2 * HOUR)
    stack.secretsmanager.fail("list_secrets")
    with pytest.raises(Exception, match="secret_list"):
        sweep(stack)
    stack.secretsmanager.heal()
    assert orphan_alerts(stack) == []
    assert sweep(stack) == {"checked": 1, "removed": 1, "failed": 0}
    assert is_scheduled(stack, orphan)


def test_the_store_describes_a_secret_from_its_metadata_and_a_gone_one_as_none(stack, clock):
    # Given a secret as bind makes it
    orphan = double_faulted_bind(stack, stack.exchanges.key("binance", "healthy"))
    store = stack.services.secrets
    arn = describe(stack, orphan)["ARN"]
    # When / Then: its metadata and bind's tags, no value
    described = store.describe(arn)
    assert described is not None
    assert (described.secret_id, described.name) == (arn, orphan)
    assert described.binding_id == orphan.removeprefix(SECRET_PREFIX)
    assert described.tenant == tags_of(stack, orphan)["keyhealth:tenant"]
    assert described.created_at is not None
    assert described.created_at.utcoffset().total_seconds() == 0
    assert not described.scheduled_for_deletion
    assert "get_secret_value" not in stack.secretsmanager.calls
    # And once scheduled, then gone
    store.schedule_deletion(arn, recovery_days=7)
    assert store.describe(arn).scheduled_for_deletion
    store.delete_now(arn)
    assert store.describe(arn) is None
