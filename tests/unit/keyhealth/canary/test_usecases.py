"""The egress canary's use case over fakes: one incident when an outage of an egress IP starts, none while
it lasts, one when it ends; a canary that loses the race to store its result raises nothing."""

from __future__ import annotations

from keyhealth.canary.usecases import by_egress_ip, run_canary
from keyhealth.domain.exchange import Probe
from keyhealth.exchanges.registry import Exchange
from tests.support.clock import FakeClock
from tests.support.fakes import FakeAlerts, FakeCanaryStore, FakeChecker

IP = "203.0.113.10"


def world() -> tuple[dict[Exchange, FakeChecker], FakeCanaryStore, FakeAlerts, FakeClock]:
    return {e: FakeChecker(e) for e in Exchange}, FakeCanaryStore(), FakeAlerts(), FakeClock()


def blocked(exchange: Exchange, code: str = "egress_blocked") -> Probe:
    return Probe(exchange, False, 12.0, code=code)


def test_an_outage_raises_one_incident_while_it_lasts_and_one_when_it_ends():
    checkers, store, alerts, clock = world()
    checkers[Exchange.BINANCE].probes = [blocked(Exchange.BINANCE)]
    recorded = []
    for _ in range(3):
        run_canary(IP, checkers, store, alerts, clock.datetime, record=recorded.append)
        clock.now += 300
    [incident] = alerts.published
    assert incident.attributes == {
        "type": "incident",
        "severity": "critical",
        "exchange": "binance",
        "status": "failing",
    }
    body = incident.body
    assert (body["exchange"], body["code"], body["egress_ip"], body["recovered_at"]) == (
        "binance",
        "egress_blocked",
        IP,
        None,
    )
    assert body["detected_at"] == "2023-11-14T22:13:20Z"  # the first probe that found it down
    assert incident.subject == f"keyhealth: INCIDENT binance egress_blocked from egress IP {IP}"
    assert len(recorded) == 9  # three exchanges, three runs: every probe is a metric
    checkers[Exchange.BINANCE].probes = []  # it answers again
    run_canary(IP, checkers, store, alerts, clock.datetime)
    recovered = alerts.published[1]
    assert recovered.attributes["severity"] == "info"
    assert recovered.body["recovered_at"] == "2023-11-14T22:28:20Z"
    assert recovered.subject == f"keyhealth: RECOVERED binance egress_blocked from egress IP {IP}"
    run_canary(IP, checkers, store, alerts, clock.datetime)
    assert len(alerts.published) == 2


def test_a_timeout_is_an_outage_but_a_5xx_or_a_429_is_the_exchanges_state_not_the_ips():
    checkers, store, alerts, clock = world()
    checkers[Exchange.BITGET].probes = [blocked(Exchange.BITGET, "timeout")]
    checkers[Exchange.BINGX].probes = [blocked(Exchange.BINGX, "exchange_unavailable")]
    checkers[Exchange.BINANCE].probes = [blocked(Exchange.BINANCE, "rate_limited")]
    states = run_canary(IP, checkers, store, alerts, clock.datetime)
    assert [a.body["exchange"] for a in alerts.published] == ["bitget"]
    assert {s.exchange: (s.ok, s.down) for s in states} == {
        "binance": (False, False),
        "bingx": (False, False),
        "bitget": (False, True),
    }
    shown = by_egress_ip(states)
    assert shown[IP]["bitget"]["down_since"] == "2023-11-14T22:13:20Z"
    assert shown[IP]["bingx"] == {
        "ok": False,
        "code": "exchange_unavailable",
        "latency_ms": 12.0,
        "clock_offset_ms": None,
        "checked_at": "2023-11-14T22:13:20Z",
        "down_since": None,
    }


def test_each_egress_ip_is_its_own_outage():
    checkers, store, alerts, clock = world()
    checkers[Exchange.BINANCE].probes = [blocked(Exchange.BINANCE)]
    run_canary(IP, checkers, store, alerts, clock.datetime)
    checkers[Exchange.BINANCE].probes = []
    run_canary("203.0.113.11", checkers, store, alerts, clock.datetime)
    assert [a.body["egress_ip"] for a in alerts.published] == [IP]  # the other IP's probe is up: no alert
    assert store.states[IP, "binance"].down
    assert not store.states["203.0.113.11", "binance"].down


def test_a_canary_that_loses_the_race_to_store_its_result_raises_nothing():
    checkers, store, alerts, clock = world()
    checkers[Exchange.BINANCE].probes = [blocked(Exchange.BINANCE)]

    def another_canary_first() -> None:  # the schedule's next run stored its result between our read and save
        run_canary(IP, {Exchange.BINANCE: checkers[Exchange.BINANCE]}, store, alerts, clock.datetime)

    store.before["save"] = another_canary_first
    run_canary(IP, {Exchange.BINANCE: checkers[Exchange.BINANCE]}, store, alerts, clock.datetime)
    assert len(alerts.published) == 1  # the other one's
