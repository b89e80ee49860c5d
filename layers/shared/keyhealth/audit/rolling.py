"""The rolling audit's pure core: which bindings a tick dispatches, and incidents over a sliding window.

In rolling mode (`AuditMode=rolling`) every binding has a **slot** in the UTC day, derived from its id
(`slot_of`); a schedule every `tick_minutes` dispatches the slots that are due (`RollingPlan.due`), so each
binding is checked once every 24 hours and each exchange's load is flat over the day. No AWS, no I/O: the
dispatcher, its stores and its schedule build on this.

**Slots.** A day has `1440 / tick_minutes` slots (5 minutes: 288); slot `k` starts `k * tick_minutes` minutes
after midnight UTC. A binding's slot comes from its **day position**, the first 32 bits of a keyed BLAKE2b of
the whole binding id: uniform and stable across processes and releases, whatever the id looks like. (A binding
id is `bnd_` + a ULID whose first 10 characters are its creation time and whose ids made in one millisecond
differ in their last bits only: neither part is uniform, the hash of the whole id is.) The slot is
`position * slots_per_day >> 32`, so one slot is a contiguous range of positions, for any tick interval: a
store that keeps the position can select a slot range without knowing the interval, and changing the
interval moves no stored data. The hash is keyed apart from the shard (`crc32 % 16`) and from any other
spread by id, so every shard holds every slot evenly.

**Which slots are due.** A tick at `now` dispatches every slot whose start lies in `(watermark, now]`,
wrapping over midnight (at most two ranges), the window capped at one day: a watermark older than 24 hours
dispatches every slot exactly once, never twice. Each occurrence of a slot (a slot on a given day) lies in
exactly one tick's window, so a late or missed tick is caught up by the next one, and two ticks never
dispatch the same occurrence. Ticks need not be aligned to slot starts (a `rate(5 minutes)` schedule works
as well as `cron(*/5 ...)`): a slot is dispatched by the first tick at or after its start.

**The watermark** is what the dispatcher stores (one item, e.g. `pk=ROLLING`, `sk=WATERMARK`): the `now` of
the last tick whose dispatch completed (`DueSlots.watermark`, an ISO-8601 UTC time). A tick claims its
window first (a conditional write: the stored watermark is still the one it read, and no claim is live, as
a lease like the finaliser's), dispatches, then stores the new watermark and drops the claim. So two
invocations of one tick (the scheduler delivers at least once) never both dispatch it; a dispatcher that
dies leaves the watermark where it was, its claim expires, and the next tick dispatches its slots again
(a binding checked twice, never one skipped); a dispatch that fails (`DispatchFailed`) does not advance it.
The first tick ever (no watermark stored) dispatches only the slot it falls in; bindings whose slots
passed earlier that day come round within 24 hours (the nightly run before the switch checked them).
After an outage longer than a day the catch-up checks every binding once, and each is checked again at
its slot later that day: one check more, none lost.

**A binding created mid-day** is enumerated by the first tick whose window holds a start of its slot at or
after its creation (`RollingPlan.next_start`): that start is less than 24 hours away, so the audit first
checks it within 24 hours (plus that tick's lateness, and the index's propagation delay if it was created
in the very instant its slot was read). Bind itself checks the key live, so it is never unchecked meanwhile.

**Time is UTC only.** Slots are computed from UTC instants (epoch arithmetic): there is no DST, every day
has the same slots. Naive datetimes are refused; aware ones in another zone are converted.

**Selecting the due bindings from the store.** Two ways, both from this module:

- *Filter* (`select_due`): read every (exchange, shard) partition through `BindingSource.iter_exchange`, as
  the nightly dispatcher does, and keep the ids whose slot is due: one hash per id, no schema change. It
  reads the whole index on every tick: at 1,000,000 bindings ~130 Query calls and ~15,000 read units per
  tick, 288 times a day (~4.3 M read units, ~1 USD a day, and a dispatcher busy reading 1 M ids every 5
  minutes). Good for the in-memory fakes, small stacks and the migration below, not for scale.
- *Index* (the design for the deployed stack): a third GSI of the bindings table, `ByDayPosition`, partition
  key `gsi3pk = R#<exchange>#<shard:02d>` (the same 16 shards per exchange, read in parallel as today),
  sort key `gsi3sk = P#<day position, 8 hex digits>#<binding_id>`, projecting `tenant, binding_id` like
  ByExchange. A tick maps each due slot range to a position range (`DueSlots.position_ranges`, half-open
  `[lo, hi)`) and queries `gsi3sk BETWEEN 'P#<lo:08x>' AND 'P#<hi-1:08x>#~'` per partition: it reads only
  the due bindings (N / 288 per tick: ~3,500 of 1 M per exchange), whatever the tick interval. The item
  writer sets both attributes on every save (`day_position`); existing items get them from a one-off
  backfill, during which the dispatcher filters instead. The port this needs is one more method beside
  `BindingSource.iter_exchange` (audit/ports.py): `iter_day_positions(exchange, shard, lo, hi)`, the
  (tenant, binding_id) of that shard whose position is in `[lo, hi)`. A tick takes a few thousand ids per
  partition, so a reader retrying a failed page read skips by the set of ids it has taken (no order needed).
  The nightly mode keeps the ByExchange index and its binding id order.

**Incidents** (`judge_window`): a run of a rolling audit is one tick's slot, a few dozen bindings, too few
for today's rule (at least `INCIDENT_MIN_COUNT` bindings and `INCIDENT_MIN_SHARE` of an exchange's checks
failing with the same code: audit/model.py `detect_incidents`). The same rule is applied to the counters of
the ticks of the last W minutes (`sum_counters`) instead of one run's: it opens one incident per (exchange,
code), keeps it open while the rule held at some judgement of the last window, and closes it after a whole
window in which it never held. The open incidents live in the store between ticks (`TickStore`); each tick's
finaliser judges the window and folds the per-binding alerts an open incident explains (`explains`), as
`release` does for a run.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from hashlib import blake2b

from keyhealth.audit.model import detect_incidents
from keyhealth.domain.exchange import ExchangeName

MINUTES_PER_DAY = 1440
DAY = timedelta(days=1)
POSITION_BITS = 32
POSITIONS = 1 << POSITION_BITS  # day positions are 0 .. POSITIONS - 1
#: Keys the hash apart from every other spread by id (shards, egress IPs): each is independent of the slot.
_PERSON = b"keyhealth.slot"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)  # a UTC midnight: slot n of all time is slot n % slots_per_day of its day


# --------------------------------------------------------------------------------- slots
def day_position(binding_id: str) -> int:
    """Where a binding falls in the day, in [0, POSITIONS): a keyed BLAKE2b of the whole id, stable and uniform."""
    digest = blake2b(binding_id.encode(), digest_size=POSITION_BITS // 8, person=_PERSON).digest()
    return int.from_bytes(digest, "big")


def slot_of(binding_id: str, slots_per_day: int) -> int:
    """The binding's slot in a day of `slots_per_day` slots, in [0, slots_per_day)."""
    if slots_per_day < 1:
        raise ValueError(f"slots_per_day must be at least 1, not {slots_per_day}")
    return (day_position(binding_id) * slots_per_day) >> POSITION_BITS


def _position_floor(slot: int, slots_per_day: int) -> int:
    """The first day position of `slot` (slot_of(p) >= slot  <=>  p >= this)."""
    return -(-slot * POSITIONS // slots_per_day)


@dataclass(frozen=True)
class SlotRange:
    """Slots `start` .. `stop - 1` of one day (half-open, never empty, never wrapping)."""

    start: int
    stop: int

    def __post_init__(self) -> None:
        if not 0 <= self.start < self.stop:
            raise ValueError(f"not a slot range: [{self.start}, {self.stop})")

    def __len__(self) -> int:
        return self.stop - self.start

    def __contains__(self, slot: object) -> bool:
        return isinstance(slot, int) and self.start <= slot < self.stop

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.start, self.stop))


def _utc(when: datetime, name: str) -> datetime:
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError(f"{name} must be an aware datetime (UTC): got naive {when.isoformat()}")
    return when.astimezone(UTC)


@dataclass(frozen=True)
class DueSlots:
    """What one tick dispatches: every slot whose start lies in (`after`, `through`]."""

    slots_per_day: int
    after: datetime  # exclusive: the watermark, capped at one day before `through`
    through: datetime  # inclusive: the tick's `now`
    #: In time order, two when the window crosses midnight UTC; a whole day is the one range [0, slots_per_day).
    ranges: tuple[SlotRange, ...]
    watermark: datetime  # what to store once this dispatch has completed

    @property
    def count(self) -> int:
        """How many slots are due."""
        return sum(len(r) for r in self.ranges)

    def __contains__(self, slot: object) -> bool:
        return any(slot in r for r in self.ranges)

    def includes(self, binding_id: str) -> bool:
        """True when the binding's slot is due."""
        return slot_of(binding_id, self.slots_per_day) in self

    def position_ranges(self) -> tuple[tuple[int, int], ...]:
        """The due slots as half-open ranges of day positions `[lo, hi)`: what a store indexed by
        day position queries (`ByDayPosition`, see the module docstring)."""
        return tuple(
            (_position_floor(r.start, self.slots_per_day), _position_floor(r.stop, self.slots_per_day))
            for r in self.ranges
        )

    def occurrences(self) -> Iterator[tuple[datetime, int]]:
        """(start, slot) of each due slot, in time order: a slot on a given day is one occurrence."""
        length = DAY / self.slots_per_day
        first = (self.after - _EPOCH) // length + 1
        for n in range(first, first + self.count):
            yield _EPOCH + n * length, n % self.slots_per_day


@dataclass(frozen=True)
class RollingPlan:
    """The rolling schedule: a tick every `tick_minutes` (a divisor of 1440), one slot per tick."""

    tick_minutes: int

    def __post_init__(self) -> None:
        if not 1 <= self.tick_minutes <= MINUTES_PER_DAY or MINUTES_PER_DAY % self.tick_minutes:
            raise ValueError(f"tick_minutes must divide a day (1440 minutes): {self.tick_minutes} does not")

    @property
    def slots_per_day(self) -> int:
        return MINUTES_PER_DAY // self.tick_minutes

    @property
    def slot_length(self) -> timedelta:
        return timedelta(minutes=self.tick_minutes)

    def slot_of(self, binding_id: str) -> int:
        return slot_of(binding_id, self.slots_per_day)

    def slot_at(self, when: datetime) -> int:
        """The slot whose period holds `when`."""
        return (_utc(when, "when") - _EPOCH) // self.slot_length % self.slots_per_day

    def slot_start(self, slot: int, day: datetime) -> datetime:
        """When `slot` starts on the UTC day of `day`."""
        if not 0 <= slot < self.slots_per_day:
            raise ValueError(f"slot {slot} is not in [0, {self.slots_per_day})")
        midnight = _utc(day, "day").replace(hour=0, minute=0, second=0, microsecond=0)
        return midnight + slot * self.slot_length

    def next_start(self, binding_id: str, at: datetime) -> datetime:
        """The first start of the binding's slot at or after `at`: less than 24 hours later. A binding
        created at `at` is dispatched by the first tick at or after this (the first audit check of a
        binding created mid-day, after its slot had passed today, is its slot tomorrow)."""
        start = self.slot_start(self.slot_of(binding_id), at)
        at = _utc(at, "at")
        return start if start >= at else start + DAY

    def due(self, watermark: datetime | None, now: datetime) -> DueSlots:
        """The slots a tick at `now` dispatches: those starting in (watermark, now], at most one day of them.

        `watermark` is the `now` of the last tick whose dispatch completed (None: the first tick ever, which
        dispatches the slot `now` falls in). A watermark in the future (a clock stepped back) dispatches
        nothing and is kept.
        """
        now = _utc(now, "now")
        length = self.slot_length
        after = now - length if watermark is None else _utc(watermark, "watermark")
        new_watermark = max(after, now)
        after = min(max(after, now - DAY), now)
        first = (after - _EPOCH) // length + 1  # slot number (since the epoch) of the first start after `after`
        last = (now - _EPOCH) // length  # ... of the last start at or before `now`
        spd = self.slots_per_day
        ranges: list[SlotRange] = []
        n = first
        while n <= last:  # split [first, last] at each midnight: at most once, the window is at most a day
            day_end = (n // spd + 1) * spd
            stop = min(last + 1, day_end)
            ranges.append(SlotRange(n % spd, (stop - 1) % spd + 1))
            n = stop
        if len(ranges) == 2 and ranges[0].start == ranges[1].stop:  # the whole day: one range, from midnight
            ranges = [SlotRange(0, spd)]
        return DueSlots(spd, after, now, tuple(ranges), new_watermark)


def select_due(bindings: Iterable[tuple[str, str]], due: DueSlots) -> Iterator[tuple[str, str]]:
    """The (tenant, binding_id) pairs of `bindings` whose slot is due: the filter over a full
    enumeration (`BindingSource.iter_exchange`), lazily, page by page."""
    return ((tenant, binding_id) for tenant, binding_id in bindings if due.includes(binding_id))


# ----------------------------------------------------------------------------- incidents
@dataclass(frozen=True)
class WindowIncident:
    """Correlated failures of one exchange with one code over the last window (today's rule), open
    from `opened_at` until a whole window passes without the rule holding (`held_at` is its last hold)."""

    exchange: ExchangeName
    code: str
    count: int  # failures with `code` in the window when it opened
    total: int  # the exchange's checks in the window then
    opened_at: datetime
    held_at: datetime

    @property
    def key(self) -> tuple[ExchangeName, str]:
        return self.exchange, self.code

    @property
    def share(self) -> float:
        return round(self.count / self.total, 3) if self.total else 0.0


@dataclass(frozen=True)
class WindowChanges:
    opened: tuple[WindowIncident, ...] = ()  # raise one incident for each
    held: tuple[WindowIncident, ...] = ()  # open before, the rule holds now: `held_at` moved to now
    closed: tuple[WindowIncident, ...] = ()  # quiet for a whole window: a new burst will be a new incident
    still_open: tuple[WindowIncident, ...] = ()  # every incident open after this judgement (opened included)

    def explains(self, exchange: ExchangeName, code: str) -> bool:
        """True while an open incident covers (exchange, code): fold that binding's alert into it."""
        return any(i.key == (exchange, code) for i in self.still_open)


def sum_counters(runs: Iterable[Mapping[str, int]]) -> dict[str, int]:
    """The counters of several runs (the ticks of one window) as one run's."""
    total: Counter[str] = Counter()
    for counters in runs:
        total.update(counters)
    return dict(total)


def judge_window(
    counters: Mapping[str, int],
    open_incidents: Iterable[WindowIncident],
    now: datetime,
    window: timedelta,
) -> WindowChanges:
    """Today's fold rule (audit/model.py `detect_incidents`) over the counters of the ticks of the last
    `window` (`sum_counters`), against the incidents open so far (what the store keeps between ticks).

    An incident opens when the rule holds and none is open for that (exchange, code); it stays open,
    never raised again, while the rule holds at some judgement of the last window, and closes after a
    whole window in which it never held. Pure: the caller stores `opened`, `held` and `closed`.
    """
    if window <= timedelta(0):
        raise ValueError(f"the window must be positive, not {window}")
    now = _utc(now, "now")
    holding = {(i.exchange, i.code): i for i in detect_incidents("window", dict(counters), now)}
    before = {i.key: i for i in open_incidents}
    opened = tuple(
        WindowIncident(i.exchange, i.code, i.count, i.total, now, now)
        for key, i in sorted(holding.items())
        if key not in before
    )
    held = tuple(replace(before[key], held_at=now) for key in sorted(holding) if key in before)
    closed = tuple(before[key] for key in sorted(before) if key not in holding and now - before[key].held_at >= window)
    kept = {i.key: i for i in (*(before[k] for k in before if k not in holding), *held, *opened)}
    for incident in closed:
        kept.pop(incident.key, None)
    return WindowChanges(opened, held, closed, tuple(kept[key] for key in sorted(kept)))
