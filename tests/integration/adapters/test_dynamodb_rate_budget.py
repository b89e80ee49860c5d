"""DynamoRateBudget on moto: the audit's rate budget shared by every worker, one counter per
exchange pool and window.

Time is a fake clock; sleeping only records the wait and moves that clock on.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from keyhealth.adapters.dynamodb_rate_budget import DynamoRateBudget
from keyhealth.exchanges import binance, bingx
from keyhealth.exchanges.registry import RATE_PLANS as PLANS
from keyhealth.exchanges.registry import Exchange
from tests.support.aws import TABLE, Recording
from tests.support.clock import FakeClock, RecordingSleep

BITGET_POOL = "ip_requests"  # 6000 per 60 s
BINGX_GROUP = "account_group_requests"  # 2000 per 10 s
BINGX_PERMISSIONS = f"interface:{bingx.API_PERMISSIONS_PATH}"  # 300 per 10 s
BINANCE_SAPI = f"sapi:{binance.API_RESTRICTIONS_PATH}"
WINDOW_START = 60.0 * 29_000_000  # a minute boundary, exact in floating point


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


def test_each_egress_ip_has_its_own_budget_and_workers_of_one_ip_share_it(dynamodb, clock, sleep):
    def worker(ip: str) -> DynamoRateBudget:
        return DynamoRateBudget(dynamodb, TABLE, PLANS, share=0.002, clock=clock, sleep=sleep, egress_ip=ip)

    first_a, first_b, second = worker("127.0.0.2"), worker("127.0.0.2"), worker("127.0.0.3")
    cost, deadline = {BITGET_POOL: 1}, clock.now + 1
    on_first = sum(w.acquire(Exchange.BITGET, cost, deadline=deadline) for _ in range(10) for w in (first_a, first_b))
    on_second = sum(second.acquire(Exchange.BITGET, cost, deadline=deadline) for _ in range(20))
    assert (on_first, on_second) == (12, 12)  # 0.2% of Bitget's 6,000 a minute, per IP: the exchange counts per IP
    keys = {i["pk"]["S"] for i in dynamodb.scan(TableName=TABLE)["Items"]}
    assert keys == {f"BUDGET#bitget#{BITGET_POOL}#127.0.0.2", f"BUDGET#bitget#{BITGET_POOL}#127.0.0.3"}
