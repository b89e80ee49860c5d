"""DynamoRunStore on moto: an audit run's bookkeeping (counters, tasks done, held alerts, the
finalization claim and the summary)."""

from __future__ import annotations

import json
import operator
from datetime import UTC, datetime

import pytest

from keyhealth.adapters.dynamodb_runs import DynamoRunStore
from keyhealth.audit.model import HeldAlert
from keyhealth.domain.errors import StorageAdapterError
from keyhealth.exchanges.registry import Exchange
from keyhealth.notify.model import Alert
from tests.support.aws import TABLE, Recording

STARTED = datetime(2026, 11, 21, 2, 0, 0, tzinfo=UTC)


def held_alert(binding_id: str, *, kind: str = "binding_status_changed", padding: int = 0) -> HeldAlert:
    return HeldAlert(
        binding_id=binding_id,
        exchange=Exchange.BITGET,
        code="ip_not_whitelisted",
        kind=kind,
        newly_failing=kind == "binding_status_changed",
        alert=Alert(
            subject=f"keyhealth: bitget binding {binding_id} healthy -> failing (ip_not_whitelisted)",
            body={"type": kind, "binding_id": binding_id, "findings": [{"code": "ip_not_whitelisted"}]},
            text="The key went from healthy to failing.\n" + "x" * padding,
            attributes={"type": kind, "severity": "critical", "exchange": "bitget", "status": "failing"},
        ),
    )


def test_a_run_cannot_be_started_twice(dynamodb):
    runs = DynamoRunStore(dynamodb, TABLE)
    runs.start("run-1", STARTED)
    runs.record("run-1", {"checked.bitget": 2}, [], 2)

    with pytest.raises(StorageAdapterError) as refused:
        runs.start("run-1", STARTED)

    assert "ConditionalCheckFailed" in refused.value.reason
    assert runs.load("run-1").tasks_done == 2
    assert runs.counters("run-1") == {"checked.bitget": 2}


def test_record_adds_counters_and_done_tasks(dynamodb):
    runs = DynamoRunStore(dynamodb, TABLE)
    assert runs.start("run-1", STARTED) == runs.load("run-1")
    runs.record("run-1", {"checked.bitget": 2, "status.bitget.healthy": 2}, [], 2)
    state = runs.record("run-1", {"checked.bitget": 1, "transient.bitget.timeout": 1}, [], 3)  # 2 deleted bindings

    assert (state.tasks_done, state.dispatch_done, state.started_at) == (5, False, STARTED)
    assert runs.counters("run-1") == {
        "checked.bitget": 3,
        "status.bitget.healthy": 2,
        "transient.bitget.timeout": 1,
    }
    assert runs.load("run-1") == state
    assert runs.load("run-2") is None


def test_finalization_is_claimed_once_and_only_when_the_run_is_complete(dynamodb):
    runs = DynamoRunStore(dynamodb, TABLE)
    runs.start("run-1", STARTED)
    runs.record("run-1", {}, [], 3)
    assert not runs.claim_finalization("run-1")  # every task done, but dispatch still running

    state = runs.dispatched("run-1", 5)
    assert (state.tasks_total, state.tasks_done, state.complete) == (5, 3, False)
    assert not runs.claim_finalization("run-1")

    state = runs.record("run-1", {}, [], 2)
    assert state.complete
    assert [runs.claim_finalization("run-1") for _ in range(3)] == [True, False, False]


def test_an_empty_run_can_be_finalized_at_dispatch(dynamodb):
    runs = DynamoRunStore(dynamodb, TABLE)
    runs.start("run-1", STARTED)
    assert runs.dispatched("run-1", 0).complete
    assert runs.claim_finalization("run-1")


def test_held_alerts_round_trip_and_page_past_one_megabyte(dynamodb):
    client = Recording(dynamodb)
    runs = DynamoRunStore(client, TABLE)
    runs.start("run-1", STARTED)
    alerts = [held_alert(f"bnd_{i:03d}", padding=20_000) for i in range(60)]  # ~1.2 MB together
    alerts.append(held_alert("bnd_000", kind="trading_permission_expiring"))
    runs.record("run-1", {}, alerts[:30], 30)
    runs.record("run-1", {}, alerts[30:], 31)
    runs.start("run-2", STARTED)
    runs.record("run-2", {}, [held_alert("bnd_other")], 1)

    read = list(runs.held("run-1"))

    assert sum(1 for name, _ in client.calls if name == "query") >= 2
    key = operator.attrgetter("binding_id", "kind")
    assert sorted(read, key=key) == sorted(alerts, key=key)


def test_the_same_alert_recorded_twice_is_held_once(dynamodb):
    runs = DynamoRunStore(dynamodb, TABLE)
    runs.start("run-1", STARTED)
    runs.record("run-1", {}, [held_alert("bnd_1")], 1)
    runs.record("run-1", {}, [held_alert("bnd_1")], 1)  # a redelivered task
    assert [h.binding_id for h in runs.held("run-1")] == ["bnd_1"]


def test_finish_stores_the_summary(dynamodb):
    runs = DynamoRunStore(dynamodb, TABLE)
    runs.start("run-1", STARTED)
    summary = {"type": "audit_summary", "run_id": "run-1", "counts": {"total": 0}, "incidents": []}
    runs.finish("run-1", summary, STARTED.replace(minute=5))

    item = dynamodb.get_item(TableName=TABLE, Key={"pk": {"S": "RUN#run-1"}, "sk": {"S": "RUN"}})["Item"]
    assert json.loads(item["summary"]["S"]) == summary
    assert item["finished_at"]["S"] == "2026-11-21T02:05:00Z"
    assert runs.load("run-1").finished


def test_a_batch_with_the_same_alert_twice_is_written_once(dynamodb):
    runs = DynamoRunStore(dynamodb, TABLE)
    runs.start("run-1", STARTED)
    # SQS delivered the same task twice in one batch: one BatchWriteItem refuses duplicate keys.
    runs.record("run-1", {}, [held_alert("bnd_1"), held_alert("bnd_1")], 2)
    assert [h.binding_id for h in runs.held("run-1")] == ["bnd_1"]
