"""The rolling audit's pure core: slots from binding ids, which slots a tick dispatches, how a
store selects the due bindings, and incidents over a sliding window. A simulated day of ticks on a
fake clock: nothing sleeps."""

from __future__ import annotations

import bisect
import math
import random
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone

import pytest

from keyhealth.audit import model as audit_model
from keyhealth.audit.rolling import (
    DAY,
    POSITIONS,
    DueSlots,
    RollingPlan,
    SlotRange,
    day_position,
    judge_window,
    select_due,
    slot_of,
    sum_counters,
)
from keyhealth.domain.ids import is_binding_id, new_binding_id
from tests.support.clock import FakeClock

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
PLAN = RollingPlan(tick_minutes=5)
SPD = PLAN.slots_per_day  # 288
TICK = PLAN.slot_length
MIDNIGHT = datetime(2026, 11, 21, tzinfo=UTC)
EXCHANGES = ("binance", "bitget", "bingx")
TENANT = "123456789012:role/platform"


def at(hh: int, mm: int, ss: int = 0, *, day: int = 0) -> datetime:
    return MIDNIGHT + timedelta(days=day, hours=hh, minutes=mm, seconds=ss)


def ulid_like(rng: random.Random, created: datetime) -> str:
    """A binding id as `new_binding_id` makes them (time part, then 80 random bits), from a seeded generator."""
    value = (int(created.timestamp() * 1000) << 80) | rng.getrandbits(80)
    chars = []
    for _ in range(26):
        value, digit = divmod(value, 32)
        chars.append(CROCKFORD[digit])
    return "bnd_" + "".join(reversed(chars))


def synthetic_ids(count: int, seed: int = 12) -> list[str]:
    """`count` ids created over the two years before the simulated day."""
    rng = random.Random(seed)
    ids = [ulid_like(rng, MIDNIGHT - timedelta(seconds=rng.uniform(0, 2 * 365 * 86400))) for _ in range(count)]
    assert len(set(ids)) == count
    assert all(map(is_binding_id, ids))
    return ids


def binomial_bound(n: int, p: float, sigmas: float = 5.0) -> tuple[float, float, float]:
    """(mean, sigma, mean + sigmas * sigma) of a Binomial(n, p): one slot's share of n hashed ids."""
    mean = n * p
    sigma = math.sqrt(n * p * (1 - p))
    return mean, sigma, mean + sigmas * sigma


# ------------------------------------------------------------------------------ the store
@dataclass
class Stored:
    tenant: str
    binding_id: str
    exchange: str
    created_at: datetime


@dataclass
class FakeStore:
    """The bindings table as the dispatcher sees it: ByExchange (exchange, shard; binding id order) for the
    filter, and the proposed ByDayPosition index (exchange, shard; day position order) queried by range.
    A binding is visible from its creation on."""

    shards: int = 16
    items: dict[str, Stored] = field(default_factory=dict)
    by_position: dict[tuple[str, int], list[tuple[int, str]]] = field(default_factory=dict)
    position_reads: int = 0  # items the index queries returned

    def add(self, binding_id: str, exchange: str, created_at: datetime) -> None:
        self.items[binding_id] = Stored(TENANT, binding_id, exchange, created_at)
        partition = self.by_position.setdefault((exchange, self.shard_of(binding_id)), [])
        bisect.insort(partition, (day_position(binding_id), binding_id))

    def shard_of(self, binding_id: str) -> int:
        return zlib.crc32(binding_id.encode()) % self.shards  # as the DynamoDB adapter does

    def visible(self, binding_id: str, now: datetime) -> bool:
        return self.items[binding_id].created_at <= now

    def iter_exchange(self, exchange: str, shard: int, now: datetime) -> Iterator[tuple[str, str]]:
        for binding_id in sorted(self.items):
            item = self.items[binding_id]
            if item.exchange == exchange and self.shard_of(binding_id) == shard and self.visible(binding_id, now):
                yield item.tenant, binding_id

    def iter_day_positions(
        self, exchange: str, shard: int, lo: int, hi: int, now: datetime
    ) -> Iterator[tuple[str, str]]:
        partition = self.by_position.get((exchange, shard), [])
        start, stop = bisect.bisect_left(partition, (lo, "")), bisect.bisect_left(partition, (hi, ""))
        for _, binding_id in partition[start:stop]:
            self.position_reads += 1
            if self.visible(binding_id, now):
                yield self.items[binding_id].tenant, binding_id

    def select_by_index(self, due: DueSlots, now: datetime) -> list[str]:
        return [
            binding_id
            for exchange in EXCHANGES
            for shard in range(self.shards)
            for lo, hi in due.position_ranges()
            for _, binding_id in self.iter_day_positions(exchange, shard, lo, hi, now)
        ]

    def select_by_filter(self, due: DueSlots, now: datetime) -> list[str]:
        return [
            binding_id
            for exchange in EXCHANGES
            for shard in range(self.shards)
            for _, binding_id in select_due(self.iter_exchange(exchange, shard, now), due)
        ]


def store_of(ids: list[str], seed: int = 7, created_at: datetime = MIDNIGHT - DAY) -> FakeStore:
    """The bindings `ids`, spread over the exchanges 6:3:1."""
    rng = random.Random(seed)
    store = FakeStore()
    for binding_id in ids:
        store.add(binding_id, rng.choices(EXCHANGES, weights=(6, 3, 1))[0], created_at)
    return store


@dataclass
class Tick:
    at: datetime
    due: DueSlots
    dispatched: list[str]


@dataclass
class Dispatcher:
    """The rolling dispatcher's loop, minus AWS: read the watermark, select the due bindings through the
    index, store the new watermark once dispatch is done."""

    store: FakeStore
    clock: FakeClock
    plan: RollingPlan = PLAN
    watermark: datetime | None = None
    ticks: list[Tick] = field(default_factory=list)

    def tick(self) -> Tick:
        now = self.clock.datetime()
        due = self.plan.due(self.watermark, now)
        tick = Tick(now, due, self.store.select_by_index(due, now))
        self.watermark = due.watermark
        self.ticks.append(tick)
        return tick

    def run(self, until: datetime, *, skip: frozenset[int] = frozenset()) -> None:
        """A tick every slot length from the clock's time up to `until`; ticks numbered in `skip` (0: the
        first) do not run."""
        start = self.clock.datetime()
        for number in range(int((until - start) / self.plan.slot_length)):
            self.clock.now = (start + (number + 1) * self.plan.slot_length).timestamp()
            if number not in skip:
                self.tick()

    def dispatches(self) -> Counter[str]:
        return Counter(binding_id for tick in self.ticks for binding_id in tick.dispatched)


def dispatcher(store: FakeStore, start: datetime) -> Dispatcher:
    """A dispatcher whose last completed tick was at `start`, its clock there."""
    return Dispatcher(store, FakeClock(start.timestamp()), watermark=start)


# ---------------------------------------------------------------------------------- slots
def test_a_slot_is_stable_from_release_to_release():
    # Given two ids one apart, When their positions are computed, Then they are the pinned ones (far apart):
    # a change to the hash would move every binding to another time of day, and double or skip its check.
    assert day_position("bnd_01JD0000000000000000000000") == 1_148_527_193
    assert day_position("bnd_01JD0000000000000000000001") == 3_764_231_347
    assert [slot_of("bnd_01JD0000000000000000000000", n) for n in (1, 24, 288, 1440)] == [0, 6, 77, 385]
    assert all(0 <= slot_of(b, n) < n for b in synthetic_ids(500) for n in (1, 24, 288, 1440))
    with pytest.raises(ValueError, match="at least 1"):
        slot_of("bnd_01JD0000000000000000000000", 0)


def test_slots_are_uniform_even_for_ids_made_in_one_millisecond():
    # Given 10,000 ids made in one millisecond (monotonic ULIDs: consecutive values, one time part),
    # When their slots are counted, Then each slot holds its binomial share: the hash is of the whole id.
    ids = [new_binding_id(now=MIDNIGHT.timestamp()) for _ in range(10_000)]
    assert len(set(ids)) == 10_000
    assert len({b[:14] for b in ids}) == 1
    per_slot = Counter(slot_of(b, SPD) for b in ids)
    mean, sigma, high = binomial_bound(len(ids), 1 / SPD)
    assert len(per_slot) == SPD
    assert mean - 5 * sigma <= min(per_slot.values())
    assert max(per_slot.values()) <= high


def test_a_tick_interval_must_divide_the_day():
    for minutes in (0, 7, 1441, -5):
        with pytest.raises(ValueError, match="divide a day"):
            RollingPlan(minutes)
    assert [RollingPlan(m).slots_per_day for m in (1, 5, 15, 60, 1440)] == [1440, 288, 96, 24, 1]


def test_times_are_utc_only():
    with pytest.raises(ValueError, match="aware"):
        PLAN.due(None, datetime(2026, 11, 21, 12, 0))
    paris = timezone(timedelta(hours=2))  # a DST offset is only another way to write the same instant
    local = PLAN.due(at(11, 52).astimezone(paris), at(12, 7).astimezone(paris))
    assert (local.ranges, local.through) == (PLAN.due(at(11, 52), at(12, 7)).ranges, at(12, 7))
    assert PLAN.slot_at(at(12, 7).astimezone(paris)) == 12 * 12 + 1


# ------------------------------------------------------------------------------ due slots
def test_a_tick_dispatches_the_slots_started_since_the_watermark():
    due = PLAN.due(at(10, 0), at(10, 5))
    assert (due.ranges, due.watermark) == ((SlotRange(121, 122),), at(10, 5))
    assert list(due.occurrences()) == [(at(10, 5), 121)]
    # A tick a little late, and the next one on time: 10:05's slot is not dispatched twice.
    assert PLAN.due(at(10, 0), at(10, 5, 40)).ranges == (SlotRange(121, 122),)
    assert PLAN.due(at(10, 5, 40), at(10, 10)).ranges == (SlotRange(122, 123),)
    # Ticks not aligned on slots (a rate() schedule): each slot once, by the first tick after its start.
    assert PLAN.due(at(10, 2, 30), at(10, 7, 30)).ranges == (SlotRange(121, 122),)


def test_the_window_wraps_over_midnight():
    due = PLAN.due(at(23, 52), at(0, 7, day=1))
    assert due.ranges == (SlotRange(287, 288), SlotRange(0, 2))
    assert list(due.occurrences()) == [(at(23, 55), 287), (at(0, 0, day=1), 0), (at(0, 5, day=1), 1)]
    assert (287 in due, 0 in due, 1 in due, 2 in due, 286 in due) == (True, True, True, False, False)


def test_the_first_tick_ever_dispatches_the_slot_it_falls_in():
    assert PLAN.due(None, at(10, 7)).ranges == (SlotRange(121, 122),)
    assert PLAN.due(None, at(10, 5)).ranges == (SlotRange(121, 122),)


def test_a_watermark_older_than_a_day_dispatches_every_slot_once():
    for watermark in (at(10, 3, day=-1), at(10, 7, day=-1), at(0, 0, day=-30)):
        due = PLAN.due(watermark, at(10, 7))
        assert (due.ranges, due.count, due.watermark) == ((SlotRange(0, SPD),), SPD, at(10, 7))
        assert sorted(slot for _, slot in due.occurrences()) == list(range(SPD))
        assert [start for start, _ in due.occurrences()][-1] == at(10, 5)


def test_a_watermark_in_the_future_dispatches_nothing_and_is_kept():
    due = PLAN.due(at(10, 30), at(10, 7))  # the clock was stepped back
    assert (due.ranges, due.count, due.watermark) == ((), 0, at(10, 30))


def test_ticks_at_random_times_never_dispatch_an_occurrence_twice_nor_lose_one():
    # Given ticks at random intervals (late, early, hours apart, now and then more than a day), When each
    # tick dispatches from the previous one's watermark, Then each dispatches exactly the slot starts of
    # (watermark, now] (of its last day when the gap is longer), and no occurrence is dispatched twice.
    rng = random.Random(3)
    watermark, now, seen = at(0, 0), at(0, 0), Counter[tuple[datetime, int]]()
    for _ in range(2_000):
        now += timedelta(seconds=rng.choice((rng.uniform(0, 600), rng.uniform(0, 4 * 3600), 30 * 3600.0)))
        due = PLAN.due(watermark, now)
        expected = list(slot_starts(max(watermark, now - DAY), now))
        assert [start for start, _ in due.occurrences()] == expected
        assert due.count == len(expected) <= SPD
        assert all(PLAN.slot_at(start) == slot and slot in due for start, slot in due.occurrences())
        seen.update(due.occurrences())
        watermark = due.watermark
    assert max(seen.values()) == 1


def slot_starts(after: datetime, through: datetime) -> Iterator[datetime]:
    """Every slot start in (after, through], by walking the clock."""
    start = MIDNIGHT - 400 * DAY
    while start <= through:
        if start > after:
            yield start
        start += TICK


def test_next_start_is_less_than_a_day_away():
    binding_id = synthetic_ids(1)[0]
    slot = PLAN.slot_of(binding_id)
    start = PLAN.slot_start(slot, MIDNIGHT)
    assert PLAN.next_start(binding_id, start) == start
    assert PLAN.next_start(binding_id, start - timedelta(seconds=1)) == start
    assert PLAN.next_start(binding_id, start + timedelta(seconds=1)) == start + DAY
    with pytest.raises(ValueError, match="slot"):
        PLAN.slot_start(SPD, MIDNIGHT)


# --------------------------------------------------------------- selecting from the store
def due_of(plan: RollingPlan, slots: SlotRange) -> DueSlots:
    return DueSlots(plan.slots_per_day, MIDNIGHT, MIDNIGHT, (slots,), MIDNIGHT)


def test_position_ranges_are_exactly_the_slots_positions_for_any_interval():
    # Given the stored day position, When a tick of any interval maps its due slots to position ranges,
    # Then a position is in a range exactly when its slot is due: one stored attribute serves every interval.
    positions = [day_position(b) for b in synthetic_ids(2_000)] + [0, POSITIONS - 1]
    for plan in (PLAN, RollingPlan(15), RollingPlan(1), RollingPlan(1440)):
        spd = plan.slots_per_day
        bounds = [due_of(plan, SlotRange(s, s + 1)).position_ranges()[0][0] for s in range(spd)]
        assert bounds[0] == 0
        assert bounds == sorted(bounds)
        for slot, lo in enumerate(bounds):
            assert (lo * spd) >> 32 == slot
            assert slot == 0 or ((lo - 1) * spd) >> 32 == slot - 1
        due = plan.due(at(23, 0), at(0, 30, day=1))
        for p in positions:
            assert any(lo <= p < hi for lo, hi in due.position_ranges()) == ((p * spd) >> 32 in due)
    assert PLAN.due(at(0, 0, day=-2), at(0, 0)).position_ranges() == ((0, POSITIONS),)


def test_the_filter_and_the_index_select_the_same_bindings_and_the_index_reads_only_those():
    store = store_of(synthetic_ids(3_000))
    for watermark, now in ((at(10, 0), at(10, 5)), (at(23, 40), at(0, 20, day=1)), (at(0, 0, day=-3), at(9, 0))):
        due = PLAN.due(watermark, now)
        store.position_reads = 0
        by_index = store.select_by_index(due, now)
        assert sorted(by_index) == sorted(store.select_by_filter(due, now))
        assert store.position_reads == len(by_index) == sum(due.includes(b) for b in store.items)


# ---------------------------------------------------------------------- a simulated day
N = 10_000


@pytest.fixture(scope="module")
def day() -> Dispatcher:
    """10,000 bindings; a tick every 5 minutes for 24 hours from 13:00 (so the day crosses midnight),
    each 0-90 s late, from the watermark of the 13:00 tick."""
    store = store_of(synthetic_ids(N))
    run = dispatcher(store, at(13, 0))
    rng = random.Random(5)
    for number in range(1, SPD + 1):
        run.clock.now = (at(13, 0) + number * TICK).timestamp() + rng.uniform(0, 90)
        run.tick()
    return run


def test_a_day_dispatches_every_binding_exactly_once(day):
    assert len(day.ticks) == SPD
    assert day.clock.datetime() - at(13, 0) < DAY + TICK
    dispatches = day.dispatches()
    assert set(dispatches) == set(day.store.items)
    assert set(dispatches.values()) == {1}
    # ... each by the first tick after its slot started
    for tick in day.ticks:
        for binding_id in tick.dispatched:
            start = next(s for s, slot in tick.due.occurrences() if slot == PLAN.slot_of(binding_id))
            assert timedelta(0) <= tick.at - start < timedelta(seconds=91)


def test_a_day_spreads_the_load_evenly_over_the_ticks(day):
    # The even share is N / ticks per day; with a hash a tick's load is Binomial(N, 1/288): the bound asserted
    # is its mean + 5 sigma, per exchange too (each exchange's load is flat, not only the sum).
    # Measured (seeded): 10,000 bindings, even share 34.7, sigma 5.88, bound 64.1, max 51 (+47%, +2.8 sigma).
    per_tick = [len(t.dispatched) for t in day.ticks]
    mean, sigma, high = binomial_bound(N, 1 / SPD)
    assert max(per_tick) <= high
    print(f"\nper tick: even share {mean:.1f}, sigma {sigma:.2f}, bound {high:.1f}, measured max {max(per_tick)}")
    for exchange in EXCHANGES:
        bindings = [b for b, item in day.store.items.items() if item.exchange == exchange]
        loads = [sum(day.store.items[b].exchange == exchange for b in t.dispatched) for t in day.ticks]
        mean, sigma, high = binomial_bound(len(bindings), 1 / SPD)
        assert sum(loads) == len(bindings)
        assert max(loads) <= high
        print(f"{exchange}: {len(bindings)} bindings, even share {mean:.1f}, bound {high:.1f}, max {max(loads)}")


def test_bindings_created_mid_day_are_dispatched_within_24_hours():
    # Given bindings created throughout the day (one just after its slot's tick had run), When ticks run on
    # time for two days, Then each is first dispatched within 24 hours of its creation, then once a day.
    rng = random.Random(9)
    store = store_of(synthetic_ids(2_000))
    created = {b: at(0, 0) + timedelta(seconds=rng.uniform(0, 86_400)) for b in synthetic_ids(300, seed=99)}
    worst = synthetic_ids(1, seed=100)[0]
    created[worst] = PLAN.slot_start(PLAN.slot_of(worst), MIDNIGHT) + timedelta(seconds=1)  # its tick just ran
    for binding_id, created_at in created.items():
        store.add(binding_id, "bitget", created_at)
    run = dispatcher(store, at(0, 0))
    run.run(at(0, 0, day=2))
    first: dict[str, datetime] = {}
    for tick in run.ticks:
        for binding_id in tick.dispatched:
            first.setdefault(binding_id, tick.at)
    delays = {b: first[b] - created_at for b, created_at in created.items()}
    assert max(delays.values()) < DAY
    assert delays[worst] == DAY - timedelta(seconds=1)
    assert all(first[b] == PLAN.next_start(b, created_at) for b, created_at in created.items())
    assert set(run.dispatches().values()) == {1, 2}  # twice in two days, or once for those born after their slot


def test_missed_ticks_are_caught_up_by_the_next_one():
    # Given a day of ticks of which the 3 after 18:00 do not run, Then the next tick dispatches the 4 slots,
    # and over the day every binding is dispatched exactly once.
    store = store_of(synthetic_ids(N))
    run = dispatcher(store, at(13, 0))
    run.run(at(13, 0, day=1), skip=frozenset({60, 61, 62}))  # the ticks of 18:05, 18:10, 18:15
    assert len(run.ticks) == SPD - 3
    catch_up = next(t for t in run.ticks if t.at == at(18, 20))
    assert catch_up.due.ranges == (SlotRange(217, 221),)
    assert len(catch_up.dispatched) == sum(PLAN.slot_of(b) in range(217, 221) for b in store.items)
    dispatches = run.dispatches()
    assert set(dispatches) == set(store.items)
    assert set(dispatches.values()) == {1}


def test_a_dispatcher_down_for_two_days_dispatches_each_binding_once_then_resumes():
    store = store_of(synthetic_ids(N))
    run = dispatcher(store, at(13, 0, day=-2))
    run.clock.now = at(13, 0, 20).timestamp()
    catch_up = run.tick()
    assert catch_up.due.count == SPD
    assert sorted(catch_up.dispatched) == sorted(store.items)
    run.run(at(13, 30))
    assert [t.due.ranges for t in run.ticks[1:]] == [(SlotRange(s, s + 1),) for s in range(157, 162)]  # 13:05:20..


# ------------------------------------------------------------------------- sliding window
WINDOW = timedelta(minutes=30)


def counters(*checks: tuple[str, str | None]) -> dict[str, int]:
    """A window's counters, as the tick runs count them: (exchange, code failed with, or None)."""
    found: Counter[str] = Counter()
    for exchange, code in checks:
        found[f"checked.{exchange}"] += 1
        if code is not None:
            found[f"newly_failing.{exchange}.{code}"] += 1
    return dict(found)


def test_ticks_counters_add_up_to_one_windows():
    assert sum_counters([counters(("binance", "timeout")), counters(("binance", None)), {}]) == {
        "checked.binance": 2,
        "newly_failing.binance.timeout": 1,
    }


def test_an_incident_opens_once_stays_open_while_the_rule_holds_and_closes_after_a_quiet_window():
    burst = counters(*[("bitget", "ip_not_whitelisted")] * 3, ("bitget", None))
    changes = judge_window(burst, [], at(10, 0), WINDOW)
    [opened] = changes.opened
    assert (opened.exchange, opened.code, opened.count, opened.total, opened.share) == (
        "bitget",
        "ip_not_whitelisted",
        3,
        4,
        0.75,
    )
    assert (opened.opened_at, opened.held_at) == (at(10, 0), at(10, 0))
    assert changes.still_open == (opened,)
    assert changes.explains("bitget", "ip_not_whitelisted")
    assert not changes.explains("bitget", "timeout")
    assert not changes.explains("binance", "ip_not_whitelisted")
    # The outage goes on: judged again, it is held (its last hold moves on), never opened again.
    later = judge_window(burst, changes.still_open, at(10, 20), WINDOW)
    assert later.opened == ()
    assert [i.held_at for i in later.held] == [at(10, 20)]
    assert later.held[0].opened_at == at(10, 0)
    # It stops: quiet windows. Still open until a whole window has passed since the last hold ...
    quiet = counters(("bitget", None))
    open_now = later.still_open
    for minute in (5, 20, 29):
        judged = judge_window(quiet, open_now, at(10, 20) + timedelta(minutes=minute), WINDOW)
        assert judged.closed == ()
        assert judged.explains("bitget", "ip_not_whitelisted")
        open_now = judged.still_open
    closed = judge_window(quiet, open_now, at(10, 50), WINDOW)
    assert [(i.code, i.opened_at) for i in closed.closed] == [("ip_not_whitelisted", at(10, 0))]
    assert closed.still_open == ()
    assert not closed.explains("bitget", "ip_not_whitelisted")
    # A new burst after that is a new incident.
    assert [i.opened_at for i in judge_window(burst, closed.still_open, at(11, 0), WINDOW).opened] == [at(11, 0)]


def test_no_incident_below_the_count_or_the_share():
    assert judge_window(counters(*[("binance", "timeout")] * 2), [], at(10, 0), WINDOW).opened == ()
    few = counters(*[("binance", "timeout")] * 4, *[("binance", None)] * 6)  # 4 of 10
    assert judge_window(few, [], at(10, 0), WINDOW).opened == ()
    half = counters(*[("binance", "timeout")] * 6, *[("binance", None)] * 6)
    assert [(i.count, i.total) for i in judge_window(half, [], at(10, 0), WINDOW).opened] == [(6, 12)]


def test_the_window_decides_as_detect_incidents_does_for_a_run():
    # Given random checks within one window, When both the window and today's per-run rule judge them,
    # Then they find the same incidents with the same counts.
    rng = random.Random(11)
    codes = ("ip_not_whitelisted", "timeout", "key_rejected", None)
    for _ in range(200):
        checks = [
            (rng.choice(EXCHANGES), rng.choices(codes, weights=(3, 2, 1, rng.choice((1, 6))))[0])
            for _ in range(rng.randint(0, 12))
        ]
        window_counters = counters(*checks)
        expected = sorted(
            (i.exchange, i.code, i.count, i.total) for i in audit_model.detect_incidents("r", window_counters, MIDNIGHT)
        )
        opened = judge_window(window_counters, [], at(10, 0), WINDOW).opened
        assert sorted((i.exchange, i.code, i.count, i.total) for i in opened) == expected


def test_the_window_takes_aware_times_and_a_positive_length_only():
    with pytest.raises(ValueError, match="positive"):
        judge_window({}, [], at(10, 0), timedelta(0))
    with pytest.raises(ValueError, match="aware"):
        judge_window({}, [], datetime(2026, 11, 21, 10, 0), WINDOW)
