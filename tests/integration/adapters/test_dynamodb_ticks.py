"""DynamoTickStore on moto: the rolling audit's watermark and its claim (a lease over the watermark
read), the tick log the sliding window and the daily summary read, the open incidents and the daily
summary claim."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from keyhealth.adapters.dynamodb_ticks import DynamoTickStore
from keyhealth.audit.ports import Tick
from keyhealth.audit.rolling import WindowIncident
from keyhealth.domain.errors import StorageAdapterError
from tests.support.aws import TABLE

NOON = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
LEASE = 900.0


@pytest.fixture
def ticks(dynamodb) -> DynamoTickStore:
    return DynamoTickStore(dynamodb, TABLE)


def test_the_first_tick_claims_an_empty_store_and_stores_its_watermark(ticks):
    assert ticks.watermark() is None
    assert ticks.claim("tick-1", None, now=NOON, lease_seconds=LEASE)
    ticks.advance("tick-1", NOON)
    assert ticks.watermark() == NOON
    assert ticks.ticks(NOON - timedelta(hours=1), NOON) == [Tick("tick-1", NOON)]


def test_a_claim_needs_the_watermark_read_and_no_live_lease(ticks):
    assert ticks.claim("tick-1", None, now=NOON, lease_seconds=LEASE)
    ticks.advance("tick-1", NOON)
    later = NOON + timedelta(minutes=5)
    assert not ticks.claim("tick-stale", None, now=later, lease_seconds=LEASE)  # read before tick-1 advanced
    assert ticks.claim("tick-2", NOON, now=later, lease_seconds=LEASE)
    assert not ticks.claim("tick-2b", NOON, now=later, lease_seconds=LEASE)  # the same tick delivered twice
    # tick-2's dispatcher dies; its lease expires; the next tick takes over and advances
    takeover = later + timedelta(seconds=LEASE)
    assert ticks.claim("tick-3", NOON, now=takeover, lease_seconds=LEASE)
    ticks.advance("tick-3", takeover)
    with pytest.raises(StorageAdapterError, match="taken over"):
        ticks.advance("tick-2", later)  # the dead dispatcher, back to life, cannot move the watermark
    assert ticks.watermark() == takeover
    assert [t.run_id for t in ticks.ticks(NOON - timedelta(seconds=1), takeover)] == ["tick-1", "tick-2", "tick-3"]


def test_a_released_claim_keeps_the_watermark_and_frees_the_next_tick(ticks):
    assert ticks.claim("tick-1", None, now=NOON, lease_seconds=LEASE)
    ticks.release("tick-1")
    assert ticks.watermark() is None
    assert ticks.claim("tick-2", None, now=NOON + timedelta(minutes=5), lease_seconds=LEASE)
    ticks.release("tick-1")  # not the holder: changes nothing
    assert not ticks.claim("tick-3", None, now=NOON + timedelta(minutes=6), lease_seconds=LEASE)


def test_ticks_are_read_by_claim_time_half_open(ticks):
    for minute in range(0, 60, 5):
        when = NOON + timedelta(minutes=minute)
        assert ticks.claim(f"tick-{minute:02d}", None, now=when, lease_seconds=0.0)
    found = ticks.ticks(NOON + timedelta(minutes=10), NOON + timedelta(minutes=30))
    assert [t.run_id for t in found] == ["tick-15", "tick-20", "tick-25", "tick-30"]
    assert found[0].started_at == NOON + timedelta(minutes=15)


def incident(code: str = "ip_not_whitelisted", held_at: datetime = NOON) -> WindowIncident:
    return WindowIncident("bitget", code, 3, 4, NOON, held_at)


def test_an_incident_opens_once_is_held_later_only_and_closes_unless_held_since(ticks):
    assert ticks.open_incident(incident())
    assert not ticks.open_incident(incident())  # another finaliser's, a moment later
    assert ticks.open_incidents() == [incident()]
    ticks.hold_incident(incident(held_at=NOON + timedelta(minutes=10)))
    ticks.hold_incident(incident(held_at=NOON + timedelta(minutes=5)))  # a slower finaliser: never back in time
    assert ticks.open_incidents() == [incident(held_at=NOON + timedelta(minutes=10))]
    ticks.close_incident(incident())  # judged on a stale hold: it held again since, so it stays open
    assert len(ticks.open_incidents()) == 1
    ticks.close_incident(incident(held_at=NOON + timedelta(minutes=10)))
    assert ticks.open_incidents() == []
    # the daily summary still sees it was opened
    assert ticks.incidents_opened(NOON - timedelta(days=1), NOON + timedelta(hours=1)) == [incident()]
    assert ticks.incidents_opened(NOON, NOON + timedelta(hours=1)) == []  # (since, until]


def test_a_days_summary_is_claimed_once(ticks):
    assert ticks.claim_summary("2026-11-21")
    assert not ticks.claim_summary("2026-11-21")
    assert ticks.claim_summary("2026-11-22")
