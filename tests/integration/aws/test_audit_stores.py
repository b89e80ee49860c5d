"""The audit's DynamoDB and SQS adapters on moto: the shared rate budget, the per-exchange
circuit, the run's bookkeeping and the per-exchange task queues.

Time is a fake clock; sleeping only records the wait and moves that clock on.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from moto import mock_aws

from keyhealth.adapters.dynamodb_circuit import DynamoCircuit
from keyhealth.adapters.dynamodb_rate_budget import DynamoRateBudget
from keyhealth.adapters.dynamodb_runs import DynamoRunStore
from keyhealth.adapters.sqs_audit_tasks import SqsTaskQueue
from keyhealth.audit.model import AuditTask, HeldAlert
from keyhealth.domain.errors import StorageAdapterError
from keyhealth.exchanges import binance, bingx
from keyhealth.exchanges.registry import RATE_PLANS as PLANS
from keyhealth.exchanges.registry import Exchange
from keyhealth.notify.model import Alert
from tests.support.template import create_table

REGION = "eu-west-1"
TABLE = "keyhealth-bindings"
SESSION = boto3.session.Session(region_name=REGION, aws_access_key_id="testing", aws_secret_access_key="testing")

BITGET_POOL = "ip_requests"  # 6000 per 60 s
BINGX_GROUP = "account_group_requests"  # 2000 per 10 s
BINGX_PERMISSIONS = f"interface:{bingx.API_PERMISSIONS_PATH}"  # 300 per 10 s
BINANCE_SAPI = f"sapi:{binance.API_RESTRICTIONS_PATH}"
WINDOW_START = 60.0 * 29_000_000  # a minute boundary, exact in floating point


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class RecordingSleep:
    """Records each wait and moves the clock on by it, as a real sleep would."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.clock.now += seconds


class Recording:
    """Delegates to a boto3 client; counts calls, and can run a hook after one of them."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.after_first: dict[str, Any] = {}
        self._lock: threading.Lock | None = None

    def serialised(self) -> Recording:
        """One call at a time, as DynamoDB applies writes to one item (moto does not lock)."""
        self._lock = threading.Lock()
        return self

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        if not callable(attribute) or name.startswith("_") or name in ("meta", "exceptions"):
            return attribute

        def call(**params: Any) -> Any:
            self.calls.append((name, params))
            try:
                if self._lock is None:
                    return attribute(**params)
                with self._lock:
                    return attribute(**params)
            finally:
                if hook := self.after_first.pop(name, None):
                    hook()

        return call


@pytest.fixture
def dynamodb() -> Iterator[Any]:
    with mock_aws():
        client = SESSION.client("dynamodb")
        create_table(client, "BindingsTable", TABLE)
        yield client


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(WINDOW_START + 10.0)


@pytest.fixture
def sleep(clock: FakeClock) -> RecordingSleep:
    return RecordingSleep(clock)


def budget_of(client: Any, clock: FakeClock, sleep: Any, *, share: float, scale: float = 1.0) -> DynamoRateBudget:
    return DynamoRateBudget(client, TABLE, PLANS, share=share, window_scale=scale, clock=clock, sleep=sleep)


def grants(budget: DynamoRateBudget, exchange: Exchange, cost: dict[str, int], *, tries: int, deadline: float) -> int:
    return sum(budget.acquire(exchange, cost, deadline=deadline) for _ in range(tries))


# --------------------------------------------------------------------------- rate budget
def test_the_budget_is_the_share_of_the_exchange_limit_per_window(dynamodb, clock, sleep):
    budget = budget_of(dynamodb, clock, sleep, share=0.5)
    assert budget.window(Exchange.BITGET, BITGET_POOL) == (60.0, 3000)
    assert budget.window(Exchange.BINGX, BINGX_PERMISSIONS) == (10.0, 150)
    assert budget.window(Exchange.BINANCE, "api") == (60.0, 3000)


def test_grants_up_to_the_budget_then_waits_for_the_next_window_and_grants_there(dynamodb, clock, sleep):
    budget = budget_of(dynamodb, clock, sleep, share=0.002)  # 12 requests per minute on Bitget
    cost = {BITGET_POOL: 1}
    index = int(clock.now // 60)

    granted = grants(budget, Exchange.BITGET, cost, tries=12, deadline=clock.now + 120)
    assert (granted, sleep.waits) == (12, [])
    assert budget.used(Exchange.BITGET, BITGET_POOL) == (index, 12)

    assert budget.acquire(Exchange.BITGET, cost, deadline=clock.now + 120)
    [wait] = sleep.waits
    assert wait == pytest.approx(50.0, abs=0.01)  # from 10 s into the minute to the next minute
    assert wait >= 50.0
    assert budget.used(Exchange.BITGET, BITGET_POOL) == (index + 1, 1)


def test_refuses_without_waiting_when_the_deadline_is_before_the_next_window(dynamodb, clock, sleep):
    budget = budget_of(dynamodb, clock, sleep, share=0.002)
    cost = {BITGET_POOL: 1}
    assert grants(budget, Exchange.BITGET, cost, tries=12, deadline=clock.now + 1) == 12

    assert not budget.acquire(Exchange.BITGET, cost, deadline=WINDOW_START + 59.9)
    assert sleep.waits == []
    assert budget.used(Exchange.BITGET, BITGET_POOL) == (int(clock.now // 60), 12)


def test_a_weight_that_does_not_fit_waits_even_if_smaller_ones_would(dynamodb, clock, sleep):
    budget = budget_of(dynamodb, clock, sleep, share=0.01)  # Binance api pool: 60 per minute
    assert budget.acquire(Exchange.BINANCE, {"api": 20}, deadline=clock.now)
    assert budget.acquire(Exchange.BINANCE, {"api": 20}, deadline=clock.now)
    assert not budget.acquire(Exchange.BINANCE, {"api": 21}, deadline=clock.now + 1)
    assert budget.acquire(Exchange.BINANCE, {"api": 20}, deadline=clock.now)
    assert budget.used(Exchange.BINANCE, "api")[1] == 60


def test_two_workers_share_one_budget(dynamodb, clock, sleep):
    first = budget_of(dynamodb, clock, sleep, share=0.002)
    second = budget_of(dynamodb, clock, sleep, share=0.002)
    cost = {BITGET_POOL: 1}
    deadline = clock.now + 1
    granted = [
        worker.acquire(Exchange.BITGET, cost, deadline=deadline) for _ in range(10) for worker in (first, second)
    ]
    assert sum(granted) == 12
    assert granted[:12] == [True] * 12  # neither worker is refused while the window has room
    assert first.used(Exchange.BITGET, BITGET_POOL) == second.used(Exchange.BITGET, BITGET_POOL)


def test_two_workers_at_the_real_share_never_exceed_the_window_together(dynamodb, clock, sleep):
    first = budget_of(dynamodb, clock, sleep, share=0.5)
    second = budget_of(dynamodb, clock, sleep, share=0.5)
    _, per_window = first.window(Exchange.BINGX, BINGX_PERMISSIONS)  # 150 per 10 s
    cost = bingx.RATE_PLAN.audit_check_cost()
    deadline = clock.now + 1
    granted = sum(
        worker.acquire(Exchange.BINGX, cost, deadline=deadline) for _ in range(80) for worker in (first, second)
    )
    assert per_window * 0.9 <= granted <= per_window
    assert first.used(Exchange.BINGX, BINGX_PERMISSIONS)[1] <= per_window
    assert sleep.waits == []


def test_a_worker_that_loses_the_race_to_open_a_window_spends_from_it_without_waiting(dynamodb, clock, sleep):
    """Both workers find last minute's window; the other one opens this minute's first."""
    budget_of(dynamodb, clock, sleep, share=0.002).acquire(Exchange.BITGET, {BITGET_POOL: 1}, deadline=clock.now)
    clock.now += 60.0
    mine = Recording(dynamodb)
    other = budget_of(dynamodb, clock, sleep, share=0.002)
    mine.after_first["update_item"] = lambda: other.acquire(Exchange.BITGET, {BITGET_POOL: 1}, deadline=clock.now)
    worker = budget_of(mine, clock, sleep, share=0.002)

    assert worker.acquire(Exchange.BITGET, {BITGET_POOL: 1}, deadline=clock.now + 120)
    assert sleep.waits == []  # this window has room: no wait for the next one
    assert worker.used(Exchange.BITGET, BITGET_POOL) == (int(clock.now // 60), 2)


def test_window_scale_shrinks_windows_and_budgets_together_keeping_the_rate(dynamodb, clock, sleep):
    real = budget_of(dynamodb, clock, sleep, share=0.02)
    budget = budget_of(dynamodb, clock, sleep, share=0.02, scale=0.1)
    seconds, per_window = budget.window(Exchange.BITGET, BITGET_POOL)
    assert (seconds, per_window) == (pytest.approx(6.0), 12)
    real_seconds, real_per_window = real.window(Exchange.BITGET, BITGET_POOL)
    assert per_window / seconds == pytest.approx(real_per_window / real_seconds)

    index = int(clock.now // seconds)
    cost = {BITGET_POOL: 1}
    assert grants(budget, Exchange.BITGET, cost, tries=per_window, deadline=clock.now) == per_window
    assert budget.used(Exchange.BITGET, BITGET_POOL) == (index, per_window)

    assert budget.acquire(Exchange.BITGET, cost, deadline=clock.now + 10)
    [wait] = sleep.waits
    assert wait == pytest.approx(2.0, abs=0.01)  # 10 s after a minute boundary is 4 s into a 6 s window
    assert budget.used(Exchange.BITGET, BITGET_POOL)[0] == index + 1


def test_leases_taken_by_two_threads_at_once_are_both_spent(dynamodb, clock, sleep):
    client = Recording(dynamodb)
    budget = budget_of(client, clock, sleep, share=0.1)  # 600 per minute on Bitget, leased 10 at a time
    _, per_window = budget.window(Exchange.BITGET, BITGET_POOL)
    cost = {BITGET_POOL: 1}
    assert grants(budget, Exchange.BITGET, cost, tries=10, deadline=clock.now) == 10  # the first lease, spent
    nested: list[bool] = []
    # While one thread of this worker reserves its next lease, another thread reserves one too.
    client.after_first["update_item"] = lambda: nested.append(budget.acquire(Exchange.BITGET, cost, deadline=0))

    granted = grants(budget, Exchange.BITGET, cost, tries=per_window - 11, deadline=clock.now + 1)

    assert nested == [True]
    assert granted == per_window - 11  # every unit reserved in the shared window is spent
    assert budget.used(Exchange.BITGET, BITGET_POOL)[1] == per_window
    writes = sum(1 for name, _ in client.calls if name == "update_item")
    assert writes <= per_window / 10 + 2  # one write per lease of 10 (and the window's opening)
    assert not budget.acquire(Exchange.BITGET, cost, deadline=clock.now + 1)


def test_a_bingx_check_spends_in_the_group_and_in_its_interface(dynamodb, clock, sleep):
    budget = budget_of(dynamodb, clock, sleep, share=0.01)  # group 20 per 10 s, interface 3 per 10 s
    cost = bingx.RATE_PLAN.audit_check_cost()
    index = int(clock.now // 10)

    assert grants(budget, Exchange.BINGX, cost, tries=3, deadline=clock.now) == 3
    assert budget.used(Exchange.BINGX, BINGX_GROUP) == (index, 3)
    assert budget.used(Exchange.BINGX, BINGX_PERMISSIONS) == (index, 3)

    # The interface is spent although the group has room: the check must wait.
    assert not budget.acquire(Exchange.BINGX, cost, deadline=clock.now + 1)
    assert budget.used(Exchange.BINGX, BINGX_PERMISSIONS) == (index, 3)
    # Another interface of the same group is not limited by this one's counter.
    assert budget.acquire(Exchange.BINGX, bingx.RATE_PLAN.cost([bingx.UID_PATH]), deadline=clock.now)


def test_settle_adds_to_the_current_window_only(dynamodb, clock, sleep):
    budget = budget_of(dynamodb, clock, sleep, share=0.002)
    index = int(clock.now // 60)
    assert budget.acquire(Exchange.BITGET, {BITGET_POOL: 1}, deadline=clock.now)

    budget.settle(Exchange.BITGET, {BITGET_POOL: 5})
    assert budget.used(Exchange.BITGET, BITGET_POOL) == (index, 6)

    clock.now += 60.0  # the window turned before the extra weight was reported
    budget.settle(Exchange.BITGET, {BITGET_POOL: 5})
    assert budget.used(Exchange.BITGET, BITGET_POOL) == (index, 6)
    assert budget.acquire(Exchange.BITGET, {BITGET_POOL: 1}, deadline=clock.now)
    assert budget.used(Exchange.BITGET, BITGET_POOL) == (index + 1, 1)


def test_settled_weight_counts_against_the_window(dynamodb, clock, sleep):
    budget = budget_of(dynamodb, clock, sleep, share=0.002)
    assert grants(budget, Exchange.BITGET, {BITGET_POOL: 1}, tries=10, deadline=clock.now) == 10
    budget.settle(Exchange.BITGET, {BITGET_POOL: 2})
    assert not budget.acquire(Exchange.BITGET, {BITGET_POOL: 1}, deadline=clock.now + 1)


def test_settle_before_any_window_is_dropped(dynamodb, clock, sleep):
    budget = budget_of(dynamodb, clock, sleep, share=0.002)
    budget.settle(Exchange.BITGET, {BITGET_POOL: 5})
    assert budget.used(Exchange.BITGET, BITGET_POOL) == (-1, 0)


@pytest.mark.parametrize("share", [0.005, 0.05])  # 30 per minute one by one; 300 per minute in leases of 6
def test_concurrent_threads_never_exceed_one_window(dynamodb, clock, sleep, share):
    client = Recording(dynamodb).serialised()
    budget = budget_of(client, clock, sleep, share=share)
    _, per_window = budget.window(Exchange.BITGET, BITGET_POOL)
    tries = per_window // 7 + 1  # 8 threads ask for a little more than the window holds
    granted: list[bool] = []
    start = threading.Barrier(8)

    def worker() -> None:
        start.wait()
        for _ in range(tries):
            granted.append(budget.acquire(Exchange.BITGET, {BITGET_POOL: 1}, deadline=clock.now + 1))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(granted) == 8 * tries
    assert per_window - 6 <= sum(granted) <= per_window  # at most what is left of the last lease
    assert budget.used(Exchange.BITGET, BITGET_POOL) == (int(clock.now // 60), per_window)
    assert sleep.waits == []


# ------------------------------------------------------------------------------- circuit
def circuit_of(client: Any, clock: FakeClock, *, cache_seconds: float = 0.0) -> DynamoCircuit:
    return DynamoCircuit(client, TABLE, clock=clock, cache_seconds=cache_seconds)


def test_a_circuit_starts_closed(dynamodb, clock):
    state = circuit_of(dynamodb, clock).state(Exchange.BINANCE)
    assert (state.remaining(clock.now), state.code, state.strikes) == (0.0, None, 0)


def test_trip_opens_the_circuit_for_every_worker_and_counts_strikes(dynamodb, clock):
    mine, theirs = circuit_of(dynamodb, clock), circuit_of(dynamodb, clock)
    tripped = mine.trip(Exchange.BINGX, 300.0, "rate_limited")
    assert (tripped.open_until, tripped.code, tripped.strikes) == (clock.now + 300.0, "rate_limited", 1)

    seen = theirs.state(Exchange.BINGX)
    assert (seen.remaining(clock.now), seen.code, seen.strikes) == (300.0, "rate_limited", 1)
    assert theirs.state(Exchange.BINANCE).remaining(clock.now) == 0.0  # per exchange

    clock.now += 300.0
    assert theirs.trip(Exchange.BINGX, 10.0, "egress_blocked").strikes == 2
    assert theirs.state(Exchange.BINGX).code == "egress_blocked"


def test_trip_never_shortens_an_open_circuit(dynamodb, clock):
    circuit = circuit_of(dynamodb, clock)
    circuit.trip(Exchange.BINANCE, 600.0, "egress_blocked")
    clock.now += 1.0

    state = circuit.trip(Exchange.BINANCE, 30.0, "rate_limited")

    assert (state.open_until, state.code) == (clock.now + 599.0, "egress_blocked")
    stored = circuit_of(dynamodb, clock).state(Exchange.BINANCE)
    assert (stored.open_until, stored.code, stored.strikes) == (clock.now + 599.0, "egress_blocked", 1)


def test_trip_lengthens_an_open_circuit(dynamodb, clock):
    circuit = circuit_of(dynamodb, clock)
    circuit.trip(Exchange.BINANCE, 30.0, "rate_limited")
    state = circuit.trip(Exchange.BINANCE, 600.0, "egress_blocked")
    assert (state.remaining(clock.now), state.code, state.strikes) == (600.0, "egress_blocked", 2)


def test_close_resets_the_strikes(dynamodb, clock):
    circuit = circuit_of(dynamodb, clock, cache_seconds=60.0)
    circuit.trip(Exchange.BITGET, 2.0, "rate_limited")
    circuit.trip(Exchange.BITGET, 4.0, "rate_limited")
    assert circuit.state(Exchange.BITGET).strikes == 2
    clock.now += 5.0

    circuit.close(Exchange.BITGET)

    assert circuit.state(Exchange.BITGET).strikes == 0  # read again despite the cache
    assert circuit_of(dynamodb, clock).state(Exchange.BITGET).remaining(clock.now) == 0.0
    assert circuit.trip(Exchange.BITGET, 2.0, "rate_limited").strikes == 1


def test_state_is_read_through_a_cache_of_cache_seconds(dynamodb, clock):
    reads = Recording(dynamodb)
    cached = circuit_of(reads, clock, cache_seconds=1.0)
    assert cached.state(Exchange.BINANCE).remaining(clock.now) == 0.0
    circuit_of(dynamodb, clock).trip(Exchange.BINANCE, 60.0, "rate_limited")  # by another worker

    clock.now += 0.5
    assert cached.state(Exchange.BINANCE).remaining(clock.now) == 0.0  # still the cached answer
    assert [name for name, _ in reads.calls] == ["get_item"]

    clock.now += 0.5
    assert cached.state(Exchange.BINANCE).remaining(clock.now) == 59.0
    assert [name for name, _ in reads.calls] == ["get_item", "get_item"]


def test_without_a_cache_every_state_is_read(dynamodb, clock):
    reads = Recording(dynamodb)
    circuit = circuit_of(reads, clock, cache_seconds=0.0)
    for _ in range(3):
        circuit.state(Exchange.BINANCE)
    assert [name for name, _ in reads.calls] == ["get_item"] * 3


def test_a_trip_refreshes_the_cache_of_the_worker_that_tripped(dynamodb, clock):
    circuit = circuit_of(dynamodb, clock, cache_seconds=60.0)
    circuit.state(Exchange.BINANCE)
    circuit.trip(Exchange.BINANCE, 60.0, "rate_limited")
    assert circuit.state(Exchange.BINANCE).remaining(clock.now) == 60.0


# ----------------------------------------------------------------------------- run store
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
    key = lambda h: (h.binding_id, h.kind)  # noqa: E731
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


# -------------------------------------------------------------------------------- queues
def test_tasks_go_to_their_exchange_queue_in_batches_of_ten():
    with mock_aws():
        sqs = Recording(SESSION.client("sqs"))
        urls = {e: sqs.create_queue(QueueName=f"audit-{e.value}")["QueueUrl"] for e in Exchange}
        queue = SqsTaskQueue(sqs, urls)
        tasks = [
            AuditTask("run-1", Exchange.BINANCE if i % 5 else Exchange.BINGX, "t", f"bnd_{i:02d}") for i in range(28)
        ]

        queue.send(tasks)

        batches = [(p["QueueUrl"], len(p["Entries"])) for name, p in sqs.calls if name == "send_message_batch"]
        binance_url, bingx_url = urls[Exchange.BINANCE], urls[Exchange.BINGX]
        assert sorted(batches) == sorted([(binance_url, 10), (binance_url, 10), (binance_url, 2), (bingx_url, 6)])
        received = {exchange: _drain(sqs, url) for exchange, url in urls.items()}
        assert received[Exchange.BITGET] == []
        for exchange in (Exchange.BINANCE, Exchange.BINGX):
            expected = sorted(t.binding_id for t in tasks if t.exchange is exchange)
            assert sorted(t.binding_id for t in received[exchange]) == expected
            assert {t.exchange for t in received[exchange]} == {exchange}


def test_a_refused_message_is_a_storage_error():
    with mock_aws():
        sqs = SESSION.client("sqs")
        url = sqs.create_queue(QueueName="audit-bitget")["QueueUrl"]

        class Refusing(Recording):
            def send_message_batch(self, **params: Any) -> dict[str, Any]:
                return {"Successful": [], "Failed": [{"Id": "0", "SenderFault": False, "Code": "InternalError"}]}

        queue = SqsTaskQueue(Refusing(sqs), {Exchange.BITGET: url})
        with pytest.raises(StorageAdapterError):
            queue.send([AuditTask("run-1", Exchange.BITGET, "t", "bnd_1")])


def _drain(sqs: Any, url: str) -> list[AuditTask]:
    tasks = []
    while messages := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
        for message in messages:
            tasks.append(AuditTask.from_json(message["Body"]))
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    return tasks


def test_a_batch_with_the_same_alert_twice_is_written_once(dynamodb):
    runs = DynamoRunStore(dynamodb, TABLE)
    runs.start("run-1", STARTED)
    # SQS delivered the same task twice in one batch: one BatchWriteItem refuses duplicate keys.
    runs.record("run-1", {}, [held_alert("bnd_1"), held_alert("bnd_1")], 2)
    assert [h.binding_id for h in runs.held("run-1")] == ["bnd_1"]
