"""The nightly audit end to end: a mixed population on the three simulators, moto behind,
the real dispatcher and worker handlers, and what reaches the SNS topic."""

from __future__ import annotations

import json

from functions.read import app as read_function
from keyhealth.exchanges.registry import Exchange
from simulators import bitget
from simulators.base import Fault
from tests.support.api import created, get_event


def stored(stack, binding_id: str) -> dict:
    return stack.invoke(read_function, get_event(binding_id)).json


def by_type(alerts: list[dict]) -> dict[str, list[dict]]:
    grouped: dict[str, list[dict]] = {}
    for alert in alerts:
        grouped.setdefault(alert["body"]["type"], []).append(alert)
    return grouped


def population(stack) -> dict[str, dict]:
    """Bind keys of every exchange and status that can be bound, then break some on the exchange."""
    ex = stack.exchanges
    bindings = {
        "binance-healthy": created(stack, ex.key("binance", "healthy"), scopes=["spot"]),
        "binance-to-fail": created(stack, ex.key("binance", "healthy-ed25519"), scopes=["spot"]),
        "binance-expiring": created(stack, ex.key("binance", "trading-expiring")),
        "bitget-healthy": created(stack, ex.key("bitget", "healthy")),
        "bitget-to-heal": created(stack, ex.key("bitget", "withdraw-enabled")),
        "bingx-healthy": created(stack, ex.key("bingx", "healthy spot and futures")),
        "bingx-degraded": created(stack, ex.key("bingx", "no IP binding, trading")),
    }
    assert stack.alerts() == []  # binding publishes nothing
    return bindings


def test_a_full_audit_records_exactly_the_expected_transitions(audit):
    stack = audit.stack
    bindings = population(stack)
    sims = stack.exchanges.simulators
    # On the exchanges, meanwhile: one key loses our IP, one user unticks withdrawals.
    sims["binance"].keys[stack.exchanges.key("binance", "healthy-ed25519").api_key].ip_whitelist = ("203.0.113.9",)
    sims["bitget"].keys[stack.exchanges.key("bitget", "withdraw-enabled").api_key].authorities = bitget.FULL_TRADE

    audit.run("run-1")

    statuses = {name: stored(stack, b["binding_id"])["status"] for name, b in bindings.items()}
    assert statuses == {
        "binance-healthy": "healthy",
        "binance-to-fail": "failing",
        "binance-expiring": "degraded",
        "bitget-healthy": "healthy",
        "bitget-to-heal": "healthy",
        "bingx-healthy": "healthy",
        "bingx-degraded": "degraded",
    }
    for binding in bindings.values():
        assert stored(stack, binding["binding_id"])["last_checked_at"] >= binding["last_checked_at"]

    alerts = by_type(stack.alerts())
    assert sorted(alerts) == ["audit_summary", "binding_status_changed", "trading_permission_expiring"]
    changes = {a["body"]["binding_id"]: a for a in alerts["binding_status_changed"]}
    assert set(changes) == {bindings["binance-to-fail"]["binding_id"], bindings["bitget-to-heal"]["binding_id"]}
    failing = changes[bindings["binance-to-fail"]["binding_id"]]
    assert failing["attributes"] == {
        "type": "binding_status_changed",
        "severity": "critical",
        "exchange": "binance",
        "status": "failing",
    }
    assert failing["subject"].endswith("healthy -> failing (key_rejected)")
    healed = changes[bindings["bitget-to-heal"]["binding_id"]]
    assert (healed["body"]["previous_status"], healed["body"]["status"]) == ("degraded", "healthy")
    assert healed["attributes"]["severity"] == "info"

    [reminder] = alerts["trading_permission_expiring"]
    assert reminder["body"]["binding_id"] == bindings["binance-expiring"]["binding_id"]
    assert reminder["body"]["days_left"] == 10  # the demo key was created 20 of its 30 days ago

    [summary] = alerts["audit_summary"]
    body = summary["body"]
    assert body["run_id"] == "run-1"
    assert body["counts"] == {"total": 7, "healthy": 4, "degraded": 2, "failing": 1, "unknown": 0}
    assert body["by_exchange"]["binance"] == {"total": 3, "healthy": 1, "degraded": 1, "failing": 1, "unknown": 0}
    assert body["newly_failing_count"] == 1
    assert body["newly_failing"][0]["binding_id"] == bindings["binance-to-fail"]["binding_id"]
    assert body["newly_failing"][0]["codes"] == ["key_rejected"]
    assert body["incidents"] == []
    assert body["checks_per_second"] > 0
    assert summary["attributes"]["type"] == "audit_summary"
    assert summary["subject"].startswith("keyhealth: audit run-1: 7 checked")
    assert audit.summary("run-1") == body


def test_a_rerun_with_nothing_changed_publishes_only_the_summary(audit):
    stack = audit.stack
    population(stack)
    audit.run("run-1")
    seen = len(stack.alerts())  # alerts() lists every message published so far
    audit.run("run-2")
    alerts = stack.alerts()[seen:]
    assert [a["body"]["type"] for a in alerts] == ["audit_summary"]
    assert alerts[0]["body"]["counts"]["total"] == 7


def test_an_exchange_outage_gives_no_false_failing_and_one_incident(audit):
    stack = audit.stack
    bindings = population(stack)
    for label in ("uta-healthy", "no-ip-restriction"):  # an incident needs at least 3 bindings
        bindings[f"bitget-{label}"] = created(stack, stack.exchanges.key("bitget", label))
    stack.exchanges.simulators["bitget"].fault = Fault.UNAVAILABLE
    audit.run("outage")

    for name, binding in bindings.items():
        if name.startswith("bitget"):
            record = stored(stack, binding["binding_id"])
            assert record["status"] == binding["status"]  # kept
            assert record["last_report"]["status"] == "unknown"
    alerts = by_type(stack.alerts())
    assert "binding_status_changed" not in alerts
    [incident] = alerts["incident"]
    assert incident["body"]["exchange"] == "bitget"
    assert incident["body"]["code"] == "exchange_unavailable"
    assert (incident["body"]["count"], incident["body"]["total"]) == (4, 4)
    assert incident["attributes"]["severity"] == "critical"
    [summary] = alerts["audit_summary"]
    assert summary["body"]["counts"]["unknown"] == 4
    assert [i["code"] for i in summary["body"]["incidents"]] == ["exchange_unavailable"]


def test_three_unknowns_in_a_row_raise_one_unreachable_alert(audit, monkeypatch):
    stack = audit.stack
    key = stack.exchanges.key("bingx", "healthy spot and futures")
    binding = created(stack, key)
    created(stack, stack.exchanges.key("bingx", "withdraw enabled"))
    created(stack, stack.exchanges.key("bingx", "no IP binding, trading"))
    sim = stack.exchanges.simulators["bingx"]
    answer = type(sim).__call__

    def drop_one_key(self, request):
        # Only this key's requests lose their connection: one binding unreachable, no incident.
        return None if request.header("X-BX-APIKEY") == key.api_key else answer(self, request)

    monkeypatch.setattr(type(sim), "__call__", drop_one_key)
    for run in ("u1", "u2", "u3", "u4"):
        audit.run(run)

    alerts = by_type(stack.alerts())
    [unreachable] = alerts["binding_unreachable"]  # on the third, not again on the fourth
    assert unreachable["body"]["binding_id"] == binding["binding_id"]
    assert unreachable["body"]["unknown_streak"] == 3
    assert unreachable["attributes"]["severity"] == "warning"
    assert stored(stack, binding["binding_id"])["status"] == "healthy"
    assert "binding_status_changed" not in alerts
    assert "incident" not in alerts


def test_the_audit_spends_from_the_shared_budget_and_never_asks_a_throttled_exchange(audit):
    stack = audit.stack
    population(stack)
    created(stack, stack.exchanges.key("bingx", "withdraw enabled"))  # 3 BingX bindings
    # Another process saw a 418 ban on BingX minutes ago: the circuit is open for 10 minutes.
    audit.deps.circuit.trip(Exchange.BINGX, 600, "egress_blocked")
    before = stack.exchanges.simulators["bingx"].stats["requests"]
    audit.run("banned")
    assert stack.exchanges.simulators["bingx"].stats["requests"] == before
    alerts = by_type(stack.alerts())
    [incident] = alerts["incident"]
    assert (incident["body"]["exchange"], incident["body"]["code"]) == ("bingx", "egress_blocked")
    summary = alerts["audit_summary"][0]["body"]
    assert summary["by_exchange"]["binance"]["unknown"] == 0  # the others were not slowed
    _, used = audit.deps.budget.used(Exchange.BINANCE, "sapi:/sapi/v1/account/apiRestrictions")
    # The three Binance checks came out of one lease of 10 reserved in the shared window.
    assert used == 10
    assert json.dumps(summary)  # serialisable


def test_an_audit_with_no_bindings_still_reports_and_emits_its_metrics(audit, capsys):
    audit.run("empty")
    [summary] = audit.stack.alerts()
    assert summary["body"]["type"] == "audit_summary"
    assert summary["body"]["counts"]["total"] == 0
    emitted = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{"_aws"')]
    assert any("AuditRunsFinished" in metric for metric in emitted)
