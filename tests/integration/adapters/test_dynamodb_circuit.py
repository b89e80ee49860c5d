"""DynamoCircuit on moto: the per-exchange circuit every worker reads, tripped by throttling
and blocks, read through a short cache."""

from __future__ import annotations

from typing import Any

import pytest

from keyhealth.adapters.dynamodb_circuit import DynamoCircuit
from keyhealth.exchanges.registry import Exchange
from tests.support.aws import TABLE, Recording
from tests.support.clock import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(60.0 * 29_000_000 + 10.0)


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


def test_a_circuit_closed_before_it_ever_opened_reads_as_closed(dynamodb):
    # Given a worker that saw strikes in a cached state closes a circuit whose item is gone
    # (UpdateItem then creates an item holding only `strikes`)
    circuit = circuit_of(dynamodb, FakeClock(), cache_seconds=0.0)
    circuit.close("bitget")
    # When another worker reads it, Then it is closed, not a crash
    assert circuit.state("bitget").open_until == 0.0


def test_a_ban_of_one_egress_ip_leaves_the_others_circuits_closed(dynamodb, clock):
    banned = DynamoCircuit(dynamodb, TABLE, clock=clock, cache_seconds=0.0, egress_ip="127.0.0.2")
    other = DynamoCircuit(dynamodb, TABLE, clock=clock, cache_seconds=0.0, egress_ip="127.0.0.3")
    banned.trip(Exchange.BINANCE, 600.0, "egress_blocked")
    assert banned.state(Exchange.BINANCE).remaining(clock.now) == 600.0
    assert other.state(Exchange.BINANCE).remaining(clock.now) == 0.0  # that IP's tasks wait; the others go on
