"""DynamoRunStore on moto: an audit run's bookkeeping (counters, tasks done, held alerts, the
per-binding markers that make recording idempotent, the finalisation lease and the summary)."""

from __future__ import annotations

import json
import operator
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from botocore.exceptions import ClientError, ReadTimeoutError

from keyhealth.adapters.dynamodb_runs import RUN_TTL_DAYS, DynamoRunStore
from keyhealth.audit.model import HeldAlert
from keyhealth.audit.ports import TaskDone
from keyhealth.domain.errors import StorageAdapterError
from keyhealth.exchanges.registry import Exchange
from keyhealth.notify.model import Alert
from tests.support.aws import TABLE, Recording

STARTED = datetime(2026, 11, 21, 2, 0, 0, tzinfo=UTC)
NOW = STARTED.timestamp()
LEASE = 360.0


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


def checked(binding_id: str, status: str = "healthy", *held: HeldAlert) -> TaskDone:
    """One task's contribution: one check of a bitget binding with that status."""
    return TaskDone(binding_id, {"checked.bitget": 1, f"status.bitget.{status}": 1}, held)


def items(dynamodb: Any, run_id: str, prefix: str) -> list[dict[str, Any]]:
    answer = dynamodb.query(
        TableName=TABLE,
        KeyConditionExpression="pk = :pk AND begins_with(sk, :p)",
        ExpressionAttributeValues={":pk": {"S": f"RUN#{run_id}"}, ":p": {"S": prefix}},
    )
    return answer["Items"]


class Cancelling(Recording):
    """TransactWriteItems is cancelled the next `times` times, with `reason` on every item."""

    def __init__(self, client: Any, reason: str, times: int = 1) -> None:
        super().__init__(client)
        self.reason, self.times = reason, times

    def transact_write_items(self, **params: Any) -> Any:
        self.calls.append(("transact_write_items", params))
        if self.times:
            self.times -= 1
            reasons = [{"Code": self.reason, "Message": "injected"} for _ in params["TransactItems"]]
            raise ClientError(
                {
                    "Error": {"Code": "TransactionCanceledException", "Message": "injected"},
                    "CancellationReasons": reasons,
                },
                "TransactWriteItems",
            )
        return self._client.transact_write_items(**params)


class LosingAnswers(Recording):
    """The next TransactWriteItems is written, and then its answer is lost (a read timeout)."""

    def transact_write_items(self, **params: Any) -> Any:
        self.calls.append(("transact_write_items", params))
        answer = self._client.transact_write_items(**params)
        if sum(1 for name, _ in self.calls if name == "transact_write_items") == 1:
            raise ReadTimeoutError(endpoint_url="https://dynamodb.eu-west-1.amazonaws.com")
        return answer


# ------------------------------------------------------------------------------ start, record
def test_a_run_cannot_be_started_twice(dynamodb):
    runs = DynamoRunStore(dynamodb, TABLE)
    runs.start("run-1", STARTED)
    runs.record("run-1", [checked("bnd_1"), checked("bnd_2")])

    with pytest.raises(StorageAdapterError) as refused:
        runs.start("run-1", STARTED)

    assert "ConditionalCheckFailed" in refused.value.reason
    assert runs.load("run-1").tasks_done == 2
    assert runs.counters("run-1") == {"checked.bitget": 2, "status.bitget.healthy": 2}


def test_record_adds_counters_and_done_tasks(dynamodb):
    runs = DynamoRunStore(dynamodb, TABLE)
    assert runs.start("run-1", STARTED) == runs.load("run-1")
    runs.record("run-1", [checked("bnd_1"), checked("bnd_2")])
    # One check that could not reach the exchange, and two bindings deleted since (nothing to count)
    unknown = TaskDone("bnd_3", {"checked.bitget": 1, "transient.bitget.timeout": 1})
    state = runs.record("run-1", [unknown, TaskDone("bnd_4"), TaskDone("bnd_5")])

    assert (state.tasks_done, state.dispatch_done, state.started_at) == (5, False, STARTED)
    assert runs.counters("run-1") == {
        "checked.bitget": 3,
        "status.bitget.healthy": 2,
        "transient.bitget.timeout": 1,
    }
    assert runs.load("run-1") == state
    assert runs.load("run-2") is None


def test_a_batch_is_recorded_in_one_transaction_with_a_marker_per_binding(dynamodb):
    # Given a batch of 10 tasks, each holding the three kinds of alert
    DynamoRunStore(dynamodb, TABLE).start("run-1", STARTED)
    client = Recording(dynamodb)
    runs = DynamoRunStore(client, TABLE)
    kinds = ("binding_status_changed", "binding_unreachable", "trading_permission_expiring")
    batch = [checked(f"bnd_{i}", "failing", *(held_alert(f"bnd_{i}", kind=k) for k in kinds)) for i in range(10)]
    # When it is recorded
    before = time.time()
    runs.record("run-1", batch)
    # Then one transaction wrote the run's counters, the held alerts and one marker per binding
    assert [name for name, _ in client.calls] == ["transact_write_items", "get_item"]
    [transaction] = [p["TransactItems"] for name, p in client.calls if name == "transact_write_items"]
    assert len(transaction) == 1 + 10 * (1 + 3)
    markers = items(dynamodb, "run-1", "DONE#")
    assert sorted(m["sk"]["S"] for m in markers) == sorted(f"DONE#bnd_{i}" for i in range(10))
    held = items(dynamodb, "run-1", "HELD#")
    assert len(held) == 30
    # expiring as the run's other items do
    assert {m["ttl"]["N"] for m in markers} == {h["ttl"]["N"] for h in held}
    assert int(before) + RUN_TTL_DAYS * 86400 <= int(markers[0]["ttl"]["N"]) <= time.time() + RUN_TTL_DAYS * 86400
    assert all(runs.is_done("run-1", f"bnd_{i}") for i in range(10))
    assert not runs.is_done("run-1", "bnd_10")
    assert not runs.is_done("run-2", "bnd_1")


def test_a_redelivered_task_is_counted_once_and_its_alert_held_once(dynamodb):
    # Given a run that recorded bnd_1 (its alert held) and bnd_2
    runs = DynamoRunStore(dynamodb, TABLE)
    runs.start("run-1", STARTED)
    runs.record("run-1", [checked("bnd_1", "failing", held_alert("bnd_1")), checked("bnd_2")])
    # When the same batch comes back, with a new task among the old ones
    state = runs.record("run-1", [checked("bnd_1", "failing", held_alert("bnd_1")), checked("bnd_2"), checked("bnd_3")])
    # Then only the new task counts
    assert state.tasks_done == 3
    assert runs.counters("run-1") == {"checked.bitget": 3, "status.bitget.failing": 1, "status.bitget.healthy": 2}
    assert [h.binding_id for h in runs.held("run-1")] == ["bnd_1"]
    # and a batch of only old tasks adds nothing at all
    assert runs.record("run-1", [checked("bnd_1"), checked("bnd_3")]) == state
    assert runs.counters("run-1")["checked.bitget"] == 3


def test_a_batch_with_the_same_task_twice_counts_it_once(dynamodb):
    runs = DynamoRunStore(dynamodb, TABLE)
    runs.start("run-1", STARTED)
    # SQS delivered the same task twice in one batch: one transaction refuses two writes of one item.
    state = runs.record("run-1", [checked("bnd_1", "failing", held_alert("bnd_1"))] * 2)
    assert state.tasks_done == 1
    assert runs.counters("run-1")["checked.bitget"] == 1
    assert [h.binding_id for h in runs.held("run-1")] == ["bnd_1"]


def test_a_record_written_but_whose_answer_was_lost_counts_once_when_retried(dynamodb):
    # Given a record that DynamoDB applied but whose answer timed out
    runs = DynamoRunStore(LosingAnswers(dynamodb), TABLE)
    runs.start("run-1", STARTED)
    with pytest.raises(StorageAdapterError) as lost:
        runs.record("run-1", [checked("bnd_1"), checked("bnd_2")])
    assert lost.value.reason == "ReadTimeoutError"
    # When the caller records the same tasks again
    state = runs.record("run-1", [checked("bnd_1"), checked("bnd_2")])
    # Then they count once
    assert state.tasks_done == 2
    assert runs.counters("run-1") == {"checked.bitget": 2, "status.bitget.healthy": 2}


def test_a_transaction_conflict_writes_nothing_and_is_a_storage_error_to_retry(dynamodb):
    client = Cancelling(dynamodb, "TransactionConflict")
    runs = DynamoRunStore(client, TABLE)
    runs.start("run-1", STARTED)
    with pytest.raises(StorageAdapterError) as conflict:
        runs.record("run-1", [checked("bnd_1")])
    assert conflict.value.reason == "TransactionConflict"
    assert runs.load("run-1").tasks_done == 0
    assert not runs.is_done("run-1", "bnd_1")
    assert runs.record("run-1", [checked("bnd_1")]).tasks_done == 1  # the retry


def test_held_alerts_round_trip_and_page_past_one_megabyte(dynamodb):
    client = Recording(dynamodb)
    runs = DynamoRunStore(client, TABLE)
    runs.start("run-1", STARTED)
    alerts = [held_alert(f"bnd_{i:03d}", padding=20_000) for i in range(60)]  # ~1.2 MB together
    expiring = held_alert("bnd_000", kind="trading_permission_expiring")
    tasks = [TaskDone(a.binding_id, {}, (a,)) for a in alerts]
    tasks[0] = TaskDone("bnd_000", {}, (alerts[0], expiring))
    runs.record("run-1", tasks[:30])
    runs.record("run-1", tasks[30:])
    runs.start("run-2", STARTED)
    runs.record("run-2", [TaskDone("bnd_other", {}, (held_alert("bnd_other"),))])

    read = list(runs.held("run-1"))

    assert sum(1 for name, _ in client.calls if name == "query") >= 2
    key = operator.attrgetter("binding_id", "kind")
    assert sorted(read, key=key) == sorted([*alerts, expiring], key=key)
    assert runs.load("run-1").tasks_done == 60


# ------------------------------------------------------------------------------------ finalise
def test_finalization_is_claimed_only_when_the_run_is_complete_and_then_by_one_caller(dynamodb):
    runs = DynamoRunStore(dynamodb, TABLE)
    runs.start("run-1", STARTED)
    runs.record("run-1", [TaskDone(f"bnd_{i}") for i in range(3)])
    assert not runs.claim_finalization("run-1", now=NOW, lease_seconds=LEASE)  # all done, dispatch still running

    state = runs.dispatched("run-1", 5)
    assert (state.tasks_total, state.tasks_done, state.complete) == (5, 3, False)
    assert not runs.claim_finalization("run-1", now=NOW, lease_seconds=LEASE)

    state = runs.record("run-1", [TaskDone("bnd_3"), TaskDone("bnd_4")])
    assert state.complete
    assert [runs.claim_finalization("run-1", now=NOW + i, lease_seconds=LEASE) for i in range(3)] == [
        True,
        False,
        False,
    ]


def test_a_claim_is_a_lease_taken_over_once_expired_and_never_after_the_run_finished(dynamodb):
    # Given a complete run whose finaliser claimed it and then died
    runs = DynamoRunStore(dynamodb, TABLE)
    runs.start("run-1", STARTED)
    runs.dispatched("run-1", 0)
    assert runs.claim_finalization("run-1", now=NOW, lease_seconds=LEASE)
    # Then nobody else may finalise it while the lease runs
    assert not runs.claim_finalization("run-1", now=NOW + LEASE - 1, lease_seconds=LEASE)
    # and the first claimant after it has expired takes over
    assert runs.claim_finalization("run-1", now=NOW + LEASE, lease_seconds=LEASE)
    assert not runs.claim_finalization("run-1", now=NOW + LEASE + 1, lease_seconds=LEASE)
    # Once finished, the run is never claimed again
    assert runs.finish("run-1", {"type": "audit_summary"}, STARTED)
    assert not runs.claim_finalization("run-1", now=NOW + 10 * LEASE, lease_seconds=LEASE)


def test_an_empty_run_can_be_finalized_at_dispatch(dynamodb):
    runs = DynamoRunStore(dynamodb, TABLE)
    runs.start("run-1", STARTED)
    assert runs.dispatched("run-1", 0).complete
    assert runs.claim_finalization("run-1", now=NOW, lease_seconds=LEASE)


def test_a_failed_dispatch_is_in_the_run_state(dynamodb):
    runs = DynamoRunStore(dynamodb, TABLE)
    runs.start("run-1", STARTED)
    state = runs.dispatched("run-1", 12, failed="sqs:SendMessageBatch: ServiceUnavailable")
    assert (state.dispatch_done, state.tasks_total) == (True, 12)
    assert state.dispatch_failed == "sqs:SendMessageBatch: ServiceUnavailable"
    assert runs.load("run-1") == state
    assert runs.load("run-1").complete is False


def test_finish_stores_the_summary_once(dynamodb):
    runs = DynamoRunStore(dynamodb, TABLE)
    runs.start("run-1", STARTED)
    summary = {"type": "audit_summary", "run_id": "run-1", "counts": {"total": 0}, "incidents": []}
    assert runs.finish("run-1", summary, STARTED.replace(minute=5))
    # A second finaliser (one that outlived its lease) does not overwrite it
    assert not runs.finish("run-1", {**summary, "counts": {"total": 99}}, STARTED.replace(minute=9))

    item = dynamodb.get_item(TableName=TABLE, Key={"pk": {"S": "RUN#run-1"}, "sk": {"S": "RUN"}})["Item"]
    assert json.loads(item["summary"]["S"]) == summary
    assert item["finished_at"]["S"] == "2026-11-21T02:05:00Z"
    assert runs.load("run-1").finished
