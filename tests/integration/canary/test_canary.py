"""The egress canary end to end: the audit worker's canary event (its schedule's), the real exchange adapters
against the simulators from two egress addresses, the canary's store on moto, the alerts on the SNS topic and
GET /egress-ips. A simulator refusing one address (HTTP 451, as Binance does a restricted location) raises one
incident for that address and, once it answers again, one more."""

from __future__ import annotations

from dataclasses import replace

from functions.audit_worker import app as worker
from functions.read import app as read_function
from keyhealth import wiring
from keyhealth.adapters.http_transport import HttpxTransport, new_http_client
from tests.conftest import EGRESS_IP, SECOND_EGRESS_IP
from tests.support.events import LambdaContext, api_event

CANARY = {"source": "keyhealth.canary", "scheduled_time": "2026-12-03T09:00:00Z"}


def canary_from(stack, egress_ip: str, client) -> dict:
    """The canary event, delivered to the worker pinned to `egress_ip` (its container, its source address)."""
    current = wiring.container()
    settings = replace(current.settings, egress_ips=(EGRESS_IP, SECOND_EGRESS_IP), audit_egress_ip=egress_ip)
    pinned = wiring.Container(
        replace(current.environment, settings=settings, exchange_transport=HttpxTransport(client))
    )
    with wiring.scoped(pinned):
        return worker.lambda_handler(CANARY, LambdaContext())


def test_a_451_from_one_egress_address_raises_one_incident_and_its_recovery_one_more(stack, egress_client):
    binance = stack.exchanges.simulators["binance"]
    with new_http_client(source_address=SECOND_EGRESS_IP, connect_timeout=1.0, read_timeout=1.0) as second:
        binance.blocked_peers[EGRESS_IP] = 451
        for _ in range(3):  # the schedule fires three times during the outage
            assert canary_from(stack, EGRESS_IP, egress_client)["down"] == ["binance"]
            assert canary_from(stack, SECOND_EGRESS_IP, second)["down"] == []
        [incident] = stack.alerts()
        assert incident["attributes"] == {
            "type": "incident",
            "severity": "critical",
            "exchange": "binance",
            "status": "failing",
        }
        assert (incident["body"]["egress_ip"], incident["body"]["code"]) == (EGRESS_IP, "egress_blocked")
        assert incident["subject"] == f"keyhealth: INCIDENT binance egress_blocked from egress IP {EGRESS_IP}"
        assert binance.stats[f"blocked:{EGRESS_IP}"] == 3

        shown = stack.invoke(read_function, api_event("GET", "/egress-ips")).json["canary"]
        assert set(shown) == {EGRESS_IP, SECOND_EGRESS_IP}
        assert shown[EGRESS_IP]["binance"]["ok"] is False
        assert shown[EGRESS_IP]["binance"]["code"] == "egress_blocked"
        assert shown[EGRESS_IP]["binance"]["down_since"] is not None
        assert shown[SECOND_EGRESS_IP]["binance"]["ok"] is True
        assert all(shown[ip][e]["ok"] for ip in shown for e in ("bitget", "bingx"))
        assert isinstance(shown[SECOND_EGRESS_IP]["binance"]["clock_offset_ms"], int)

        del binance.blocked_peers[EGRESS_IP]  # the exchange answers that address again
        canary_from(stack, EGRESS_IP, egress_client)
        canary_from(stack, EGRESS_IP, egress_client)
    alerts = stack.alerts()
    assert len(alerts) == 2
    recovered = alerts[1]
    assert recovered["attributes"]["severity"] == "info"
    assert recovered["body"]["recovered_at"] is not None
    assert recovered["subject"] == f"keyhealth: RECOVERED binance egress_blocked from egress IP {EGRESS_IP}"


def test_a_403_or_a_418_from_an_address_is_an_outage_too(stack, egress_client):
    for status in (403, 418):
        stack.exchanges.simulators["bitget"].blocked_peers[EGRESS_IP] = status
        assert canary_from(stack, EGRESS_IP, egress_client)["down"] == ["bitget"]
        del stack.exchanges.simulators["bitget"].blocked_peers[EGRESS_IP]
        assert canary_from(stack, EGRESS_IP, egress_client)["down"] == []
    assert [a["body"]["recovered_at"] is None for a in stack.alerts()] == [True, False, True, False]
