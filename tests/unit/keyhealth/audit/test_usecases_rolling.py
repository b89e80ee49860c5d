"""The rolling audit's use cases (audit/usecases.py, rolling section) over in-memory fakes: a tick
claims its window and dispatches the due slots, workers check them, each tick's finaliser judges the
sliding window, and one summary a day goes out. A simulated day of 5-minute ticks on a fake clock:
nothing sleeps, every interleaving is forced."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from datetime import time as dt_time

import pytest

from keyhealth.audit.rolling import RollingPlan
from keyhealth.audit.usecases import (
    DispatchFailed,
    RollingDeps,
    TickOutcome,
    dispatch_tick,
    summary_due,
)
from keyhealth.domain.exchange import ExchangeName
from keyhealth.exchanges.registry import Exchange
from tests.support.fakes import FakeTaskQueue, FakeTicks
from tests.unit.keyhealth.audit.support import C, World, build_world, result, run_batch

MIDNIGHT = datetime(2026, 11, 21, tzinfo=UTC)
PLAN = RollingPlan(tick_minutes=5)
TICK = PLAN.slot_length
EXCHANGES = (Exchange.BINANCE, Exchange.BITGET, Exchange.BINGX)


class WorldSource:
    """The world's bindings as the dispatcher reads them (one shard, binding id order)."""

    shards = 1

    def __init__(self, world: World) -> None:
        self.world = world

    def iter_exchange(self, exchange: ExchangeName, shard: int) -> Iterator[tuple[str, str]]:
        for (tenant, binding_id), binding in sorted(self.world.bindings.items.items()):
            if binding.exchange == exchange:
                yield tenant, binding_id


@dataclass
class Day:
    world: World
    ticks: FakeTicks
    queue: FakeTaskQueue = field(default_factory=FakeTaskQueue)
    outcomes: list[tuple[datetime, TickOutcome]] = field(default_factory=list)
    checked: Counter[str] = field(default_factory=Counter)  # binding id -> checks
    first_checked: dict[str, datetime] = field(default_factory=dict)

    def now(self) -> datetime:
        return self.world.clock.datetime()

    def tick(self, run_id: str | None = None) -> TickOutcome:
        """One scheduled tick at the clock's time, then every task it sent checked by a worker."""
        sent = len(self.queue.sent)
        outcome = dispatch_tick(
            run_id or f"tick-{self.now():%Y%m%dT%H%M%S}",
            WorldSource(self.world),
            self.queue,
            self.world.deps,
            exchanges=EXCHANGES,
            sleep=self.world.sleep,
            jitter=lambda: 0.5,
        )
        tasks = self.queue.sent[sent:]
        for start in range(0, len(tasks), 10):
            run_batch(self.world, *tasks[start : start + 10])
        for task in tasks:
            self.checked[task.binding_id] += 1
            self.first_checked.setdefault(task.binding_id, self.now())
        self.outcomes.append((self.now(), outcome))
        return outcome

    def run(self, until: datetime, *, skip: frozenset[datetime] = frozenset()) -> None:
        """A tick every 5 minutes after the clock's time up to `until`, except those at the times in `skip`."""
        while self.now() + TICK <= until:
            self.world.clock.now += TICK.total_seconds()
            if self.now() not in skip:
                self.tick()

    def tasks_per_tick(self) -> list[int]:
        return [o.state.tasks_total for _, o in self.outcomes if o.state is not None]


def at(hour: int, minute: int = 0, *, day: int = 0) -> datetime:
    return MIDNIGHT + timedelta(days=day, hours=hour, minutes=minute)


def rolling_world(bindings: int = 600, *, window_minutes: int = 30) -> Day:
    world = build_world()
    ticks = FakeTicks()
    world.deps.rolling = RollingDeps(
        ticks=ticks,
        plan=PLAN,
        incident_window=timedelta(minutes=window_minutes),
        summary_at=dt_time(6, 0),
    )
    for index in range(bindings):
        world.bind(EXCHANGES[index % 3], f"bnd_{index:05d}")
    world.clock.now = MIDNIGHT.timestamp()
    ticks.stored_watermark = MIDNIGHT  # the last tick before this day ran at midnight
    return Day(world, ticks)


def test_a_day_of_ticks_checks_every_binding_exactly_once_with_a_flat_load():
    day = rolling_world(600)
    day.run(at(0, day=1))  # 288 ticks: 00:05 .. 24:00
    assert len(day.outcomes) == 288
    assert set(day.checked) == {b for _, b in day.world.bindings.items}
    assert set(day.checked.values()) == {1}
    # The even share is N / 288 = 2.1 a tick; the load is Binomial(N, 1/288): at most the mean + 5 sigma.
    per_tick = day.tasks_per_tick()
    mean = 600 / 288
    assert max(per_tick) <= mean + 5 * math.sqrt(mean * (1 - 1 / 288))
    # each binding checked by the tick of its slot: within one tick of the slot's start
    for binding_id, when in day.first_checked.items():
        start = PLAN.slot_start(PLAN.slot_of(binding_id), MIDNIGHT)
        assert timedelta(0) <= when - (start if start > MIDNIGHT else start + timedelta(days=1)) < TICK
    assert sum(len(c.calls) for c in day.world.adapters.values()) == 600  # each exchange asked once per key


def test_each_tick_run_is_finalised_without_a_summary_and_one_summary_a_day_covers_the_24_hours_before_it():
    day = rolling_world(600)
    day.run(at(0, day=1))
    summaries = [a for a in day.world.alerts.published if a.body["type"] == "audit_summary"]
    [summary] = summaries  # one a day, at 06:00: never one per tick
    body = summary.body
    assert (body["run_id"], body["mode"], body["ticks"], body["ticks_unfinished"]) == (
        "day-2026-11-21",
        "rolling",
        71,
        0,
    )
    assert (body["started_at"], body["finished_at"]) == ("2026-11-20T06:00:00Z", "2026-11-21T06:00:00Z")
    # the ticks of 00:05 .. 05:55 (this test's day began at midnight; 06:00's has only just been dispatched)
    expected = sum(1 for _, b in day.world.bindings.items if 1 <= PLAN.slot_of(b) <= 71)
    assert body["counts"]["total"] == body["counts"]["healthy"] == expected
    assert sum(row["total"] for row in body["by_exchange"].values()) == expected
    assert [o.summary is not None for t, o in day.outcomes].count(True) == 1
    assert next(t for t, o in day.outcomes if o.summary is not None) == at(6, 0)
    # every tick's run is finished (those with nothing due by the dispatcher), with its own summary stored
    finished = day.world.runs.finished
    assert len(finished) == 288
    assert sum(1 for _, o in day.outcomes if o.finalized is not None) == day.tasks_per_tick().count(0) > 0
    assert all(s["type"] == "audit_summary" for s in finished.values())


def test_a_missed_tick_is_caught_up_by_the_next_one():
    day = rolling_world(600)
    missed = frozenset({at(18, 5), at(18, 10), at(18, 15)})
    day.run(at(0, day=1), skip=missed)
    assert len(day.outcomes) == 288 - 3
    catch_up = next(o for t, o in day.outcomes if t == at(18, 20))
    slots = range(PLAN.slot_at(at(18, 5)), PLAN.slot_at(at(18, 20)) + 1)  # 217 .. 220
    assert catch_up.state is not None
    assert catch_up.state.tasks_total == sum(1 for _, b in day.world.bindings.items if PLAN.slot_of(b) in slots)
    assert set(day.checked.values()) == {1}
    assert len(day.checked) == 600


def test_a_binding_created_after_its_slot_passed_is_first_checked_within_24_hours():
    day = rolling_world(60)
    day.run(at(12, 0))
    # a binding whose slot started at 11:00 today, created at 12:00
    late = next(f"late-{i}" for i in range(10_000) if PLAN.slot_of(f"late-{i}") == PLAN.slot_at(at(11, 0)))
    day.world.bind(Exchange.BITGET, late)
    day.run(at(12, 0, day=1))
    assert day.first_checked[late] == at(11, 0, day=1)
    assert day.first_checked[late] - at(12, 0) < timedelta(days=1)
    assert day.checked[late] == 1


def test_two_deliveries_of_one_tick_dispatch_it_once():
    day = rolling_world(600)
    day.world.clock.now = at(10, 0).timestamp()
    first = day.tick("tick-a")
    second = day.tick("tick-b")  # the scheduler delivered the event twice
    assert first.state is not None
    assert first.state.tasks_total > 0
    assert second == TickOutcome(None)
    assert len(day.ticks.log) == 1


def test_a_tick_held_by_a_live_dispatcher_is_not_taken_over():
    day = rolling_world(600)
    day.world.clock.now = at(10, 0).timestamp()
    rolling = day.world.deps.rolling
    assert rolling is not None
    assert day.ticks.claim("tick-stuck", MIDNIGHT, now=at(9, 55), lease_seconds=rolling.claim_lease_seconds)
    assert day.tick() == TickOutcome(None)  # 5 minutes later: its lease (900 s) is still live
    day.world.clock.now = at(10, 15).timestamp()  # the lease has expired: the dispatcher died
    taken = day.tick()
    assert taken.state is not None
    assert day.ticks.stored_watermark == at(10, 15)
    # everything since midnight is dispatched once: the dead dispatcher sent nothing
    assert taken.state.tasks_total == sum(
        1 for _, b in day.world.bindings.items if 1 <= PLAN.slot_of(b) <= PLAN.slot_at(at(10, 15))
    )


def test_a_dispatch_that_fails_keeps_the_watermark_and_the_next_tick_dispatches_those_slots_again():
    day = rolling_world(600)
    day.run(at(9, 0))
    day.queue.fail("send")
    day.world.clock.now = at(9, 5).timestamp()
    with pytest.raises(DispatchFailed):
        day.tick()
    assert day.ticks.stored_watermark == at(9, 0)
    assert day.ticks.claim_run is None  # released: the next tick need not wait for the lease
    day.queue.heal()
    day.world.clock.now = at(9, 10).timestamp()
    again = day.tick()
    assert again.state is not None
    assert again.state.tasks_total == sum(
        1 for _, b in day.world.bindings.items if PLAN.slot_of(b) in (PLAN.slot_at(at(9, 5)), PLAN.slot_at(at(9, 10)))
    )


def test_an_outage_raises_one_incident_over_the_window_and_folds_the_alerts_it_explains():
    # Given 600 bindings (200 on Bitget) and Bitget rejecting our IP from 10:00 to 11:00, When the ticks run,
    # Then one incident is raised once the window holds 3 failures making half of Bitget's checks, no
    # Bitget status alert is published while it is open, and it closes a quiet window after the outage.
    day = rolling_world(600, window_minutes=30)
    day.run(at(10, 0))
    healthy = day.world.adapters[Exchange.BITGET].results
    day.world.answer(Exchange.BITGET, result(Exchange.BITGET, C.IP_NOT_WHITELISTED))
    published_at: list[tuple[datetime, str, str]] = []
    while day.now() < at(11, 0):
        seen = len(day.world.alerts.published)
        day.run(day.now() + TICK)
        published_at += [
            (day.now(), a.body["type"], a.body.get("exchange", "")) for a in day.world.alerts.published[seen:]
        ]
    day.world.answer(Exchange.BITGET, *healthy)
    day.run(at(12, 0))
    incidents = [a for a in day.world.alerts.published if a.body["type"] == "incident"]
    [incident] = incidents
    assert (incident.body["exchange"], incident.body["code"]) == ("bitget", "ip_not_whitelisted")
    assert incident.body["window_minutes"] == 30
    assert incident.body["count"] >= 3
    assert incident.body["count"] / incident.body["total"] >= 0.5
    opened = next(t for t, kind, _ in published_at if kind == "incident")
    after = [kind for t, kind, exchange in published_at if t > opened and exchange == "bitget"]
    assert "binding_status_changed" not in after
    before = [kind for t, kind, exchange in published_at if t <= opened and kind == "binding_status_changed"]
    assert 1 <= len(before) <= incident.body["count"]  # the first of the burst went out before the rule held
    assert day.ticks.incidents == {}  # closed after a quiet window
    assert [i.code for i in day.ticks.opened] == ["ip_not_whitelisted"]


def test_a_finaliser_that_loses_the_race_to_open_an_incident_does_not_raise_it():
    # Given another finaliser storing the same incident just before this one (the store's conditional
    # put decides), Then this one publishes no incident, and no later tick raises it again while it is open.
    day = rolling_world(600)
    ticks = day.ticks
    day.run(at(10, 0))
    day.world.answer(Exchange.BINGX, result(Exchange.BINGX, C.EXCHANGE_UNAVAILABLE))
    store = ticks.open_incident
    raced = []

    def other_finaliser_first(incident):  # type: ignore[no-untyped-def]
        if not raced:
            raced.append(store(incident))  # the other finaliser's put
        return store(incident)

    ticks.open_incident = other_finaliser_first  # type: ignore[method-assign]
    day.run(at(11, 0))
    assert raced == [True]
    assert [a.body["type"] for a in day.world.alerts.published].count("incident") == 0
    assert list(ticks.incidents) == [("bingx", "exchange_unavailable")]


def test_the_daily_summary_falls_in_exactly_one_tick_window():
    six = dt_time(6, 0)
    assert summary_due(at(5, 55), at(6, 0), six) == at(6, 0)
    assert summary_due(at(6, 0), at(6, 5), six) is None
    assert summary_due(at(5, 0), at(7, 0), six) == at(6, 0)  # a late tick
    assert summary_due(at(6, 5, day=-1), at(6, 0), six) == at(6, 0)  # a day's catch-up
    assert summary_due(at(7, 0, day=-1), at(5, 0), six) is None
    assert summary_due(at(5, 0, day=-1), at(5, 0), six) == at(6, 0, day=-1)


def test_a_tick_needs_the_rolling_mode_and_a_tick_run():
    world = build_world()
    with pytest.raises(ValueError, match="rolling"):
        dispatch_tick("tick-1", WorldSource(world), FakeTaskQueue(), world.deps, exchanges=EXCHANGES)
    day = rolling_world(3)
    with pytest.raises(ValueError, match="tick-"):
        dispatch_tick("nightly-1", WorldSource(day.world), FakeTaskQueue(), day.world.deps, exchanges=EXCHANGES)
