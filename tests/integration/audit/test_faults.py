"""The audit under faults, end to end: the real dispatcher and worker handlers on moto and the
three simulators, with faults injected into their AWS calls (conftest.Injector). A worker that
dies mid-batch gets its batch back; the dispatcher is throttled and its sends fail; a finaliser
dies and a redelivery takes over. Each fault is placed by the call's parameters, and every
interleaving that matters is forced; back-offs are recorded, not slept."""

from __future__ import annotations

import json
from typing import Any

import pytest

from keyhealth.adapters.dynamodb_bindings import shard_of
from keyhealth.audit.model import AuditTask
from keyhealth.audit.usecases import DISPATCH_BACKOFF, DispatchFailed
from keyhealth.domain.errors import StorageAdapterError
from keyhealth.exchanges.registry import Exchange
from simulators import bitget
from tests.integration.audit.conftest import JITTER, Audit, Params, raising, refusing
from tests.integration.audit.test_audit import by_type, population
from tests.support.api import created
from tests.support.template import resource

#: SQS redelivers the batch of a failed invocation after the queue's visibility timeout.
VISIBILITY_TIMEOUT = float(resource("AuditQueueBinance")["Properties"]["VisibilityTimeout"])
COUNTS = {"total": 7, "healthy": 4, "degraded": 2, "failing": 1, "unknown": 0}


class WorkerDied(Exception):
    """The worker's process ending where it stands (a timeout, an out-of-memory kill)."""


def broken_on_the_exchanges(audit: Audit) -> dict[str, dict]:
    """The population of test_audit, with one key losing our IP and one user unticking
    withdrawals: two status changes and a trading-rights reminder, once each, in a good run."""
    stack = audit.stack
    bindings = population(stack)
    sims = stack.exchanges.simulators
    sims["binance"].keys[stack.exchanges.key("binance", "healthy-ed25519").api_key].ip_whitelist = ("203.0.113.9",)
    sims["bitget"].keys[stack.exchanges.key("bitget", "withdraw-enabled").api_key].authorities = bitget.FULL_TRADE
    return bindings


def assert_each_binding_counted_once(audit: Audit, run_id: str, bindings: dict[str, dict], *, times: int = 1) -> None:
    """The run finished with every binding counted once; each held alert was published `times` times."""
    item = audit.run_item(run_id)
    assert (item["tasks_total"]["N"], item["tasks_done"]["N"], item["finished"]["BOOL"]) == ("7", "7", True)
    summary = audit.summary(run_id)
    assert summary["counts"] == COUNTS
    assert summary["newly_failing_count"] == 1
    assert [f["binding_id"] for f in summary["newly_failing"]] == [bindings["binance-to-fail"]["binding_id"]]
    alerts = by_type(audit.stack.alerts())
    changed = sorted(a["body"]["binding_id"] for a in alerts["binding_status_changed"])
    expected = sorted([bindings["binance-to-fail"]["binding_id"], bindings["bitget-to-heal"]["binding_id"]] * times)
    assert changed == expected
    assert [a["body"]["binding_id"] for a in alerts["trading_permission_expiring"]] == [
        bindings["binance-expiring"]["binding_id"]
    ] * times
    assert audit.waiting() == 0


def records_a_run(params: Params) -> bool:
    """The worker's record: the transaction that puts DONE# markers."""
    return any(
        action.get("Put", {}).get("Item", {}).get("sk", {}).get("S", "").startswith("DONE#")
        for action in params["TransactItems"]
    )


def entries_for(params: Params) -> list[str]:
    return [AuditTask.from_json(e["MessageBody"]).binding_id for e in params.get("Entries", [])]


def sent_entries(audit: Audit) -> list[str]:
    """The binding id of every entry of every SendMessageBatch call (refused or not)."""
    return [b for name, params in audit.sqs.calls if name == "send_message_batch" for b in entries_for(params)]


def waits(*retries: int) -> list[float]:
    return sorted(DISPATCH_BACKOFF.wait(r, JITTER) for r in retries)


# ------------------------------------------------------------------------ the batch comes back
def test_a_batch_redelivered_after_the_worker_died_before_recording_counts_each_binding_once(audit):
    # Given the first batch's worker dying after checking and storing its bindings, just before
    # it records them in the run (SQS keeps the batch)
    bindings = broken_on_the_exchanges(audit)
    audit.dynamodb.inject("transact_write_items", raising(WorkerDied), when=records_a_run)
    with pytest.raises(WorkerDied):
        audit.run("run-1")

    # When SQS delivers the batch again, and the rest of the run
    audit.drain()

    # Then each binding is counted once and each of its alerts published once: the second check
    # of a binding is assessed as the run had found it
    assert_each_binding_counted_once(audit, "run-1", bindings)
    [summary] = by_type(audit.stack.alerts())["audit_summary"]
    assert summary["body"]["counts"] == COUNTS


def test_a_batch_redelivered_after_it_was_recorded_is_not_checked_or_counted_again(audit):
    # Given the first batch recorded in its run, and the worker dying before SQS deleted it
    bindings = broken_on_the_exchanges(audit)
    audit.sqs.inject("delete_message_batch", raising(WorkerDied))
    with pytest.raises(WorkerDied):
        audit.run("run-1")
    binance = audit.stack.exchanges.simulators["binance"]
    asked = binance.stats["requests"]

    # When SQS delivers it again, and the rest of the run
    audit.drain()

    # Then its tasks are done with, without asking the exchange again, and counted once
    assert binance.stats["requests"] == asked
    assert_each_binding_counted_once(audit, "run-1", bindings)


# ---------------------------------------------------------------------------------- dispatch
def test_the_dispatcher_retries_throttled_reads_and_failed_sends_and_the_run_finishes_right(audit):
    # Given the shard of one Binance binding throttled three times, the first send to the Bitget
    # queue failing, and SQS refusing one BingX task's entry once
    bindings = broken_on_the_exchanges(audit)
    to_fail = bindings["binance-to-fail"]["binding_id"]
    throttled_shard = f"X#binance#{shard_of(to_fail):02d}"

    def reads_the_shard(params: Params) -> bool:
        return params.get("IndexName") == "ByExchange" and params["ExpressionAttributeValues"][":pk"]["S"] == (
            throttled_shard
        )

    audit.dynamodb.fail("query", "ProvisionedThroughputExceededException", times=2, when=reads_the_shard)
    audit.dynamodb.fail("query", "ThrottlingException", when=reads_the_shard)
    bitget_url = audit.queues[Exchange.BITGET]
    audit.sqs.fail("send_message_batch", "ThrottlingException", when=lambda p: p["QueueUrl"] == bitget_url)
    degraded = bindings["bingx-degraded"]["binding_id"]
    audit.sqs.inject(
        "send_message_batch",
        refusing(lambda entry: AuditTask.from_json(entry["MessageBody"]).binding_id == degraded),
        when=lambda p: degraded in entries_for(p),
    )

    # When the schedule starts a run
    answer = audit.dispatch("run-1")

    # Then every read and send was retried after its back-off, and each binding dispatched once
    assert sorted(audit.sleep.waits) == waits(1, 2, 3, 1, 1)  # the shard's three, the two sends' one each
    assert answer["tasks"] == 7
    assert sent_entries(audit).count(degraded) == 2  # refused, then sent again on its own
    assert audit.waiting() == 7
    reads = [p for name, p in audit.dynamodb.calls if name == "query" and reads_the_shard(p)]
    assert len(reads) == 4
    # and the run finishes with the right counts
    audit.drain()
    assert_each_binding_counted_once(audit, "run-1", bindings)


def test_a_send_repeated_after_its_answer_was_lost_does_not_inflate_the_run(audit):
    # Given SQS taking the first send to the Binance queue and its answer lost (a timeout)
    bindings = broken_on_the_exchanges(audit)
    audit.sqs.lose_answer("send_message_batch", when=lambda p: p["QueueUrl"] == audit.queues[Exchange.BINANCE])

    # When the run is dispatched
    answer = audit.dispatch("run-1")

    # Then the tasks of that send are queued twice, but the run counts each binding once
    assert answer["tasks"] == 7
    assert audit.waiting() > 7
    # and it finishes once all are delivered, duplicates included, with the right counts
    audit.drain()
    assert_each_binding_counted_once(audit, "run-1", bindings)
    assert len(by_type(audit.stack.alerts())["audit_summary"]) == 1


def test_a_dispatch_that_gives_up_fails_loudly_and_its_run_says_so_instead_of_hanging(audit, capsys):
    # Given one BingX binding, and the BingX queue refusing every send
    stack = audit.stack
    created(stack, stack.exchanges.key("bingx", "healthy spot and futures"))
    audit.sqs.fail("send_message_batch", times=1000, when=lambda p: p["QueueUrl"] == audit.queues[Exchange.BINGX])
    capsys.readouterr()

    # When the schedule starts a run, the dispatcher retries the send with back-off, then fails
    with pytest.raises(DispatchFailed) as failed:
        audit.dispatch("run-1")

    assert failed.value.reason == "sqs:SendMessageBatch: ServiceUnavailable"
    assert len([name for name, _ in audit.sqs.calls if name == "send_message_batch"]) == DISPATCH_BACKOFF.attempts
    assert sorted(audit.sleep.waits) == waits(*range(1, DISPATCH_BACKOFF.attempts))
    # Then the run says dispatch failed, covers what was sent (nothing), and is finished, not
    # left "dispatching": its summary says so, and it does not count as a finished audit
    item = audit.run_item("run-1")
    assert item["dispatch_failed"]["S"] == failed.value.reason
    assert (item["dispatch_done"]["BOOL"], item["tasks_total"]["N"], item["finished"]["BOOL"]) == (True, "0", True)
    assert audit.summary("run-1")["dispatch_failed"] == failed.value.reason
    [summary] = summaries(audit)  # the published one (notify's AuditSummary carries no dispatch_failed yet)
    assert summary["counts"]["total"] == 0
    emitted = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{"_aws"')]
    assert not any("AuditRunsFinished" in metric for metric in emitted)


# -------------------------------------------------------------------------------- finalising
def is_summary(params: Params) -> bool:
    return params["MessageAttributes"]["type"]["StringValue"] == "audit_summary"


def finishes(params: Params) -> bool:
    return "summary" in params.get("UpdateExpression", "")


def summaries(audit: Audit) -> list[dict[str, Any]]:
    return [a["body"] for a in audit.stack.alerts() if a["body"]["type"] == "audit_summary"]


def test_a_finaliser_that_died_publishing_the_summary_is_taken_over_by_the_redelivered_batch(audit):
    # Given the run's last batch, whose finaliser fails publishing the summary: the invocation
    # fails, and SQS keeps the batch
    bindings = broken_on_the_exchanges(audit)
    audit.sns.fail("publish", "InternalError", when=is_summary)
    with pytest.raises(StorageAdapterError):
        audit.run("run-1")
    assert summaries(audit) == []
    item = audit.run_item("run-1")
    assert (item["tasks_done"]["N"], "finished" in item, "finalizing_until" in item) == ("7", False, True)

    # When SQS redelivers the batch, after the queue's visibility timeout
    audit.clock.skip(VISIBILITY_TIMEOUT)
    audit.drain()

    # Then it takes the run over: one summary, stored once, counts right; the held alerts were
    # published by both finalisers (at least once)
    [summary] = summaries(audit)
    assert summary == audit.summary("run-1")
    assert summary["counts"] == COUNTS
    assert_each_binding_counted_once(audit, "run-1", bindings, times=2)


def test_a_finaliser_that_died_storing_the_summary_is_taken_over_and_the_summary_is_stored_once(audit):
    # Given the run's last batch, whose finaliser publishes the summary and fails storing it
    bindings = broken_on_the_exchanges(audit)
    audit.dynamodb.fail("update_item", when=finishes)
    with pytest.raises(StorageAdapterError):
        audit.run("run-1")
    assert "finished" not in audit.run_item("run-1")

    # When SQS redelivers the batch after the queue's visibility timeout
    audit.clock.skip(VISIBILITY_TIMEOUT)
    audit.drain()

    # Then the summary is stored once (the second finish), with the right counts; it was
    # published twice (at least once)
    assert len([p for name, p in audit.dynamodb.calls if name == "update_item" and finishes(p)]) == 2
    stored = audit.summary("run-1")
    first, second = summaries(audit)
    assert first["counts"] == second["counts"] == stored["counts"] == COUNTS
    assert stored == second
    assert_each_binding_counted_once(audit, "run-1", bindings, times=2)
