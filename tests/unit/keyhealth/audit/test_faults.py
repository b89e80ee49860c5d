"""The audit under faults, with in-memory fakes: a worker that dies mid-batch and gets its batch
back, records that fail or whose answers are lost, a finaliser that dies, and a dispatcher whose
page reads are throttled and whose sends fail. Every interleaving is forced (hooks on the fakes,
one thread where order matters); waits are recorded, never slept."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from keyhealth.audit.model import RUN_MARK, AuditTask, as_found_by, egress_for
from keyhealth.audit.usecases import (
    DISPATCH_BACKOFF,
    FINALIZE_LEASE_SECONDS,
    RECORD_BACKOFF,
    STORAGE_RETRY_SECONDS,
    DispatchFailed,
    dispatch_audit,
    finalize_run,
)
from keyhealth.bindings.model import Binding
from keyhealth.domain.errors import StorageAdapterError
from keyhealth.domain.exchange import ExchangeName
from keyhealth.domain.model import Status
from keyhealth.exchanges.registry import Exchange
from keyhealth.notify.model import Alert
from tests.support.fakes import FakeAlerts, FakeTaskQueue
from tests.support.template import resource
from tests.unit.keyhealth.audit.support import TENANT, C, World, result, run_batch

JITTER = 0.5  # the world's jitter: every back-off is its midpoint
#: SQS redelivers a batch whose invocation failed after the queue's visibility timeout.
VISIBILITY_TIMEOUT = float(resource("AuditQueueBinance")["Properties"]["VisibilityTimeout"])


class WorkerDied(Exception):
    """The worker's process ending where it stands (a timeout, an out-of-memory kill)."""


def die() -> None:
    raise WorkerDied


def arm(fake: Any, operation: str, calls: int, hook: Callable[[], object]) -> None:
    """Let the next `calls` calls of `operation` through, then run `hook` just before the one after."""
    left = calls

    def run() -> object:
        nonlocal left
        if left == 0:
            return hook()
        left -= 1
        fake.before[operation] = run  # `before` hooks run once: set again for the next call
        return None

    fake.before[operation] = run


def fail_summary_publish(alerts: FakeAlerts, times: int = 1) -> None:
    """The next `times` publishes of a run's summary fail (the held alerts and incidents go out)."""
    real = alerts.publish
    left = times

    def publish(alert: Alert) -> None:
        nonlocal left
        if alert.body["type"] == "audit_summary" and left:
            left -= 1
            raise StorageAdapterError("fake:publish", "ServiceUnavailable")
        real(alert)

    alerts.publish = publish  # type: ignore[method-assign]


def published(world: World, kind: str) -> list[str]:
    """The binding ids (or run ids, for summaries) of every alert of `kind` published so far."""
    return [a.body.get("binding_id") or a.body["run_id"] for a in world.alerts.published if a.body["type"] == kind]


def three_bindings(world: World) -> list[Binding]:
    """Run "run-2" of three tasks: one binding newly failing, one healed, one unchanged."""
    world.start("run-2", 3)
    world.answer(Exchange.BINANCE, result(Exchange.BINANCE, C.IP_NOT_WHITELISTED))
    return [
        world.bind(Exchange.BINANCE, "bnd_1", Status.HEALTHY),
        world.bind(Exchange.BITGET, "bnd_2", Status.DEGRADED),
        world.bind(Exchange.BINGX, "bnd_3", Status.HEALTHY),
    ]


def tasks_of(world: World, bindings: list[Binding], run_id: str = "run-2") -> list[AuditTask]:
    return [world.task(b, run_id=run_id) for b in bindings]


def assert_the_run_counted_each_binding_once(world: World, summary: dict[str, Any]) -> None:
    assert summary["counts"] == {"total": 3, "healthy": 2, "degraded": 0, "failing": 1, "unknown": 0}
    assert summary["newly_failing_count"] == 1
    assert [f["binding_id"] for f in summary["newly_failing"]] == ["bnd_1"]
    assert world.runs.load("run-2").tasks_done == 3
    assert sorted(published(world, "binding_status_changed")) == ["bnd_1", "bnd_2"]  # each once
    assert published(world, "audit_summary") == ["run-2"]
    assert world.runs.finishes == ["run-2"]


# -------------------------------------------------------------------------- the batch comes back
def test_a_batch_redelivered_after_the_worker_died_before_recording_counts_each_binding_once(world):
    # Given a batch whose bindings were all checked and stored, and a worker that died before
    # recording them in the run
    bindings = three_bindings(world)
    tasks = tasks_of(world, bindings)
    world.runs.before["record"] = die
    with pytest.raises(WorkerDied):
        run_batch(world, *tasks)
    assert world.bindings.get(TENANT, "bnd_1").status is Status.FAILING  # stored
    assert world.runs.load("run-2").tasks_done == 0  # not recorded

    # When SQS delivers the same batch again
    outcome = run_batch(world, *tasks)

    # Then each binding was checked again (one check each) and counted once, as the run found it:
    # the transitions of the first check are the run's, and their alerts are held and published once
    assert (outcome.done, outcome.duplicates, outcome.retry) == (3, 0, {})
    assert [len(world.adapters[b.exchange].calls) for b in bindings] == [2, 2, 2]
    [summary] = outcome.finalized
    assert_the_run_counted_each_binding_once(world, summary)


def test_a_batch_redelivered_after_the_worker_died_part_way_through_storing_counts_each_binding_once(world):
    # Given a worker checking one task at a time that dies storing the second binding: the
    # first and the third are stored, the second is not
    bindings = three_bindings(world)
    tasks = tasks_of(world, bindings)
    arm(world.bindings, "save", 1, die)
    with pytest.raises(WorkerDied):
        run_batch(world, *tasks, concurrency=1)
    stored = [world.bindings.get(TENANT, b.binding_id) for b in bindings]
    assert [b.version for b in stored] == [2, 1, 2]

    # When the batch comes back
    outcome = run_batch(world, *tasks, concurrency=1)

    # Then the run counts each binding once and holds each alert once
    [summary] = outcome.finalized
    assert_the_run_counted_each_binding_once(world, summary)
    assert world.bindings.get(TENANT, "bnd_2").status is Status.HEALTHY


def test_a_batch_redelivered_after_it_was_recorded_is_neither_checked_nor_counted_again(world):
    # Given a run of four tasks, three of them checked and recorded, and then the worker died
    # before SQS deleted their messages
    bindings = three_bindings(world)
    world.runs.dispatched("run-2", 4)
    last = world.bind(Exchange.BINANCE, "bnd_4", Status.HEALTHY)
    tasks = tasks_of(world, bindings)
    run_batch(world, *tasks)
    checks = sum(len(adapter.calls) for adapter in world.adapters.values())
    saves = world.bindings.saves

    # When the batch comes back
    outcome = run_batch(world, *tasks)

    # Then its tasks are done with, without a check, a write to the binding, or a count
    assert (outcome.done, outcome.duplicates, outcome.retry, outcome.finalized) == (3, 3, {}, [])
    assert sum(len(adapter.calls) for adapter in world.adapters.values()) == checks
    assert world.bindings.saves == saves
    assert world.runs.load("run-2").tasks_done == 3
    # and the run finishes with its last task, each binding counted once
    [summary] = run_batch(world, world.task(last, run_id="run-2")).finalized
    assert summary["counts"]["total"] == 4
    assert sorted(published(world, "binding_status_changed")) == ["bnd_1", "bnd_2", "bnd_4"]


def test_the_same_task_twice_in_one_batch_is_checked_once(world):
    bindings = three_bindings(world)
    first, second, third = tasks_of(world, bindings)

    outcome = run_batch(world, first, second, first, third)

    assert (outcome.done, outcome.duplicates) == (4, 1)
    assert len(world.adapters[Exchange.BINANCE].calls) == 1
    [summary] = outcome.finalized
    assert_the_run_counted_each_binding_once(world, summary)


def test_a_recheck_is_assessed_as_the_run_found_the_binding_unless_someone_else_wrote_it_since(world):
    # Given a binding whose first check in run-2 was stored: healthy -> failing
    [binding, *_] = three_bindings(world)
    world.runs.before["record"] = die
    with pytest.raises(WorkerDied):
        run_batch(world, world.task(binding, run_id="run-2"))
    stored = world.bindings.get(TENANT, "bnd_1")
    assert (stored.status, stored.extra[RUN_MARK]["status"]) == (Status.FAILING, "healthy")
    # Then run-2 sees it as it found it, another run as it is
    assert as_found_by(stored, "run-2").status is Status.HEALTHY
    assert RUN_MARK not in as_found_by(stored, "run-2").extra
    assert as_found_by(stored, "run-3") == stored
    # and after a verify in between (a write of its own), as it is
    verified = world.bindings.save(stored, previous=stored)
    assert as_found_by(verified, "run-2") == verified


# ------------------------------------------------------------------------------------- recording
def test_a_record_whose_answer_was_lost_is_retried_after_a_back_off_and_counts_once(world):
    # Given a store that applies the next record and then fails to answer (a timeout)
    bindings = three_bindings(world)
    world.runs.answers_lost["record"] = 1

    outcome = run_batch(world, *tasks_of(world, bindings))

    # Then the record was retried after one back-off, and nothing counted twice
    assert world.sleep.waits == [RECORD_BACKOFF.wait(1, JITTER)]
    assert [ids for run, ids in world.runs.records if run == "run-2"] == [["bnd_1", "bnd_2", "bnd_3"]] * 2
    [summary] = outcome.finalized
    assert_the_run_counted_each_binding_once(world, summary)


def test_a_record_that_keeps_failing_returns_its_tasks_and_they_count_once_when_they_come_back(world):
    # Given a store that refuses every record (its transactions keep conflicting)
    bindings = three_bindings(world)
    tasks = tasks_of(world, bindings)
    world.runs.fail("record")

    outcome = run_batch(world, *tasks)

    # Then after its bounded attempts the tasks are returned for redelivery
    assert outcome.retry == dict.fromkeys(("m-0", "m-1", "m-2"), STORAGE_RETRY_SECONDS)
    assert world.sleep.waits == [RECORD_BACKOFF.wait(i, JITTER) for i in range(1, RECORD_BACKOFF.attempts)]
    assert world.runs.load("run-2").tasks_done == 0
    # and when they come back and the store answers, each binding counts once, as the run found it
    world.runs.heal()
    [summary] = run_batch(world, *tasks).finalized
    assert_the_run_counted_each_binding_once(world, summary)


# ------------------------------------------------------------------------------------- finalising
def test_a_finaliser_that_died_publishing_the_summary_is_taken_over_after_its_lease(world):
    # Given the last batch of a run, whose finaliser fails publishing the summary
    bindings = three_bindings(world)
    tasks = tasks_of(world, bindings)
    fail_summary_publish(world.alerts)
    with pytest.raises(StorageAdapterError):
        run_batch(world, *tasks)  # the invocation fails: SQS keeps the batch
    assert published(world, "binding_status_changed") == ["bnd_1", "bnd_2"]
    assert published(world, "audit_summary") == []
    assert not world.runs.load("run-2").finished

    # When a copy of a task comes back while the finaliser's claim is live
    early = run_batch(world, tasks[0])
    # Then it does not finalise (the finaliser might still be at work)
    assert early.finalized == []
    assert len(world.runs.claims) == 1

    # When SQS redelivers the batch, after the queue's visibility timeout
    world.clock.now += VISIBILITY_TIMEOUT
    outcome = run_batch(world, *tasks)

    # Then it takes the run over: one summary, counts right, the held alerts published again
    [summary] = outcome.finalized
    assert (outcome.done, outcome.duplicates) == (3, 3)
    assert summary["counts"]["total"] == 3
    assert published(world, "audit_summary") == ["run-2"]
    assert world.runs.finishes == ["run-2"]
    assert world.runs.finished["run-2"] == summary
    assert sorted(published(world, "binding_status_changed")) == ["bnd_1", "bnd_1", "bnd_2", "bnd_2"]  # at least once
    assert len(world.runs.claims) == 2


def test_a_finaliser_that_died_storing_the_summary_is_taken_over_and_the_summary_is_stored_once(world):
    # Given the last batch of a run, whose finaliser fails storing the summary (after publishing it)
    bindings = three_bindings(world)
    tasks = tasks_of(world, bindings)
    world.runs.before["finish"] = die
    with pytest.raises(WorkerDied):
        run_batch(world, *tasks)
    assert published(world, "audit_summary") == ["run-2"]
    assert world.runs.finishes == []

    # When SQS redelivers the batch after its visibility timeout
    world.clock.now += VISIBILITY_TIMEOUT
    [summary] = run_batch(world, *tasks).finalized

    # Then the summary is stored once, with the right counts (it may have been published twice)
    assert world.runs.finishes == ["run-2"]
    assert summary["counts"] == {"total": 3, "healthy": 2, "degraded": 0, "failing": 1, "unknown": 0}
    assert published(world, "audit_summary") == ["run-2", "run-2"]
    # and a later copy of a task finalises nothing
    world.clock.now += VISIBILITY_TIMEOUT
    assert run_batch(world, *tasks).finalized == []
    assert world.runs.finishes == ["run-2"]


def test_a_second_finaliser_does_not_store_its_summary(world):
    world.start("run-2", 0)
    state = world.runs.load("run-2")
    services, runs = world.deps.services, world.runs
    assert finalize_run("run-2", runs, services, state) is not None
    assert finalize_run("run-2", runs, services, state) is None  # e.g. one that outlived its lease
    assert runs.finishes == ["run-2"]


def test_the_lease_outlives_a_worker_invocation_and_expires_before_sqs_redelivers():
    # A live finaliser is never taken over (the worker's timeout is shorter than the lease); the
    # batch SQS redelivers after a failed invocation always finds the lease expired.
    assert float(resource("AuditWorkerFunction")["Properties"]["Timeout"]) < FINALIZE_LEASE_SECONDS
    for queue in ("AuditQueueBinance", "AuditQueueBitget", "AuditQueueBingx"):
        assert float(resource(queue)["Properties"]["VisibilityTimeout"]) > FINALIZE_LEASE_SECONDS


# --------------------------------------------------------------------------------------- dispatch
class FakeSource:
    """Bindings by (exchange, shard), read in pages of `page_size` in binding id order, each page
    after the last id of the one before (as DynamoDB's ExclusiveStartKey). `failing[(exchange,
    shard, page)]`: the error codes the next reads of that page fail with, one per read."""

    shards = 2

    def __init__(self, page_size: int = 10) -> None:
        self.page_size = page_size
        self.partitions: dict[tuple[ExchangeName, int], dict[str, str]] = {}  # -> binding id: tenant
        self.failing: dict[tuple[ExchangeName, int, int], list[str]] = {}
        self.reads: list[tuple[ExchangeName, int, int]] = []

    def add(self, exchange: ExchangeName, shard: int, *binding_ids: str) -> None:
        self.partitions.setdefault((exchange, shard), {}).update(dict.fromkeys(binding_ids, TENANT))

    def iter_exchange(self, exchange: ExchangeName, shard: int) -> Iterator[tuple[str, str]]:
        partition = self.partitions.get((exchange, shard), {})
        last: str | None = None
        for page in range(10_000):
            ids = sorted(i for i in partition if last is None or i > last)[: self.page_size]
            self.reads.append((exchange, shard, page))
            if codes := self.failing.get((exchange, shard, page)):
                raise StorageAdapterError("fake:Query(ByExchange)", codes.pop(0))
            for binding_id in ids:
                yield partition[binding_id], binding_id
            if len(ids) < self.page_size:
                return
            last = ids[-1]


def ids(prefix: str, count: int) -> list[str]:
    return [f"{prefix}{i:02d}" for i in range(count)]


def dispatch(world: World, source: FakeSource, queue: FakeTaskQueue, run_id: str = "run-d", **options: Any):
    return dispatch_audit(
        run_id,
        source,
        queue,
        world.runs,
        world.clock.datetime,
        exchanges=[Exchange.BINANCE, Exchange.BITGET],
        parallelism=1,
        sleep=options.pop("sleep", world.sleep),
        jitter=lambda: JITTER,
        **options,
    )


def waits(*retries: int) -> list[float]:
    return [DISPATCH_BACKOFF.wait(r, JITTER) for r in retries]


def test_a_throttled_page_read_is_retried_after_a_back_off_and_each_binding_is_sent_once(world):
    # Given a shard of 25 bindings whose second page is throttled twice, and another shard
    source, queue = FakeSource(), FakeTaskQueue()
    source.add(Exchange.BINANCE, 0, *ids("bnd_a", 25))
    source.add(Exchange.BITGET, 1, *ids("bnd_b", 3))
    source.failing[(Exchange.BINANCE, 0, 1)] = ["ProvisionedThroughputExceededException", "ThrottlingException"]

    state = dispatch(world, source, queue)

    # Then the shard was read again after each back-off, and every binding sent once
    assert world.sleep.waits == waits(1, 2)
    assert source.reads.count((Exchange.BINANCE, 0, 0)) == 3
    assert sorted(t.binding_id for t in queue.sent) == sorted(ids("bnd_a", 25) + ids("bnd_b", 3))
    assert (state.dispatch_done, state.tasks_total, state.dispatch_failed) == (True, 28, None)


def test_a_binding_deleted_while_a_shard_is_read_again_hides_no_other(world):
    # Given a shard whose second page fails once, and a binding of its first page (sent already)
    # unbound before the shard is read again
    source, queue = FakeSource(), FakeTaskQueue()
    source.add(Exchange.BINANCE, 0, *ids("bnd_a", 25))
    source.failing[(Exchange.BINANCE, 0, 1)] = ["ThrottlingException"]

    def sleep(seconds: float) -> None:
        world.sleep(seconds)
        del source.partitions[(Exchange.BINANCE, 0)]["bnd_a03"]

    state = dispatch(world, source, queue, sleep=sleep)

    # Then every binding is sent once: the read goes on after the last id taken, not after a count
    assert sorted(t.binding_id for t in queue.sent) == ids("bnd_a", 25)
    assert state.tasks_total == 25


def test_a_partly_refused_send_is_retried_with_only_the_refused_tasks(world):
    # Given SQS refusing two entries of the first batch of ten
    source, queue = FakeSource(), FakeTaskQueue()
    source.add(Exchange.BINANCE, 0, *ids("bnd_a", 12))
    queue.refuse("bnd_a03", "bnd_a07")

    state = dispatch(world, source, queue)

    # Then only those two were sent again, after one back-off
    assert queue.calls_sent == [ids("bnd_a", 10), ["bnd_a03", "bnd_a07"], ["bnd_a10", "bnd_a11"]]
    assert sorted(t.binding_id for t in queue.sent) == ids("bnd_a", 12)
    assert world.sleep.waits == waits(1)
    assert state.tasks_total == 12


def test_a_send_repeated_after_its_answer_was_lost_does_not_inflate_the_run(world):
    # Given 12 bindings, and SQS taking the first batch but its answer lost (a timeout)
    source, queue = FakeSource(), FakeTaskQueue()
    for binding_id in ids("bnd_a", 12):
        world.bind(Exchange.BINANCE, binding_id)
    source.add(Exchange.BINANCE, 0, *ids("bnd_a", 12))
    queue.answers_lost = 1

    state = dispatch(world, source, queue)

    # Then the first batch is in the queue twice, and the run's total counts each binding once
    assert len(queue.sent) == 22
    assert state.tasks_total == 12
    # When the workers check every message, duplicates included
    summaries = []
    for start in range(0, len(queue.sent), 10):
        summaries += run_batch(world, *queue.sent[start : start + 10]).finalized
    # Then the run finishes once, with each binding counted once
    [summary] = summaries
    assert summary["counts"]["total"] == 12
    assert world.runs.load("run-d").tasks_done == 12
    assert len(world.adapters[Exchange.BINANCE].calls) == 12


def test_a_dispatch_that_gives_up_says_so_in_the_run_and_the_run_covers_what_was_sent(world):
    # Given SQS taking the first batch of ten and then failing every call
    source, queue = FakeSource(), FakeTaskQueue()
    for binding_id in ids("bnd_a", 15):
        world.bind(Exchange.BINANCE, binding_id)
    source.add(Exchange.BINANCE, 0, *ids("bnd_a", 15))
    source.add(Exchange.BITGET, 1, *ids("bnd_b", 3))
    arm(queue, "send", 1, lambda: queue.fail("send"))

    # When the dispatcher runs, it retries with back-off, gives up, and says so
    with pytest.raises(DispatchFailed) as failed:
        dispatch(world, source, queue)

    assert failed.value.reason == "fake:send: ServiceUnavailable"
    assert world.sleep.waits == waits(*range(1, DISPATCH_BACKOFF.attempts))
    state = world.runs.load("run-d")
    assert state == failed.value.state
    assert (state.dispatch_done, state.tasks_total, state.dispatch_failed) == (True, 10, failed.value.reason)
    assert [t.binding_id for t in queue.sent] == ids("bnd_a", 10)  # the other partition was not started
    # and the run finishes over the tasks that were sent, its summary saying dispatch failed
    [summary] = run_batch(world, *queue.sent).finalized
    assert summary["counts"]["total"] == 10
    assert summary["dispatch_failed"] == "fake:send: ServiceUnavailable"


def test_a_dispatch_whose_end_cannot_be_recorded_at_first_retries_it(world):
    source, queue = FakeSource(), FakeTaskQueue()
    source.add(Exchange.BITGET, 1, *ids("bnd_b", 3))

    def throttled() -> None:
        raise StorageAdapterError("fake:dispatched", "ThrottlingException")

    world.runs.before["dispatched"] = throttled

    state = dispatch(world, source, queue)

    assert (state.dispatch_done, state.tasks_total) == (True, 3)
    assert world.sleep.waits == waits(1)


def test_with_several_egress_ips_each_task_names_the_ip_its_binding_is_checked_from_today(world):
    source, queue = FakeSource(), FakeTaskQueue()
    source.add(Exchange.BINANCE, 0, *ids("a", 30))
    source.add(Exchange.BITGET, 1, *ids("b", 30))
    ips = ("127.0.0.2", "127.0.0.3", "127.0.0.4")
    dispatch(world, source, queue, egress_ips=ips)
    day = int(world.clock.now // 86_400)
    assert {t.egress_ip for t in queue.sent} == set(ips)
    assert all(t.egress_ip == egress_for(t.binding_id, ips, day) for t in queue.sent)
