"""The rolling audit end to end (AUDIT_MODE=rolling): the real dispatcher handler fired by the
schedule once per tick, the real worker draining the queues, moto behind and the three simulators;
the clock is skipped from tick to tick, nothing sleeps. Ticks are an hour apart here (24 a day) so
that a whole day runs in seconds; the unit tests run the 5-minute day."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from typing import Any

import pytest

from functions.audit_dispatcher import app as dispatcher
from keyhealth import wiring
from keyhealth.audit.rolling import RollingPlan
from simulators.base import Fault
from tests.integration.audit.conftest import Audit
from tests.integration.audit.test_audit import by_type, population
from tests.support.api import created
from tests.support.aws import TABLE
from tests.support.events import LambdaContext

HOUR = 3600.0
SCHEDULED = {"version": "0", "source": "aws.scheduler", "detail-type": "Scheduled Event", "detail": {}}


@pytest.fixture
def rolling(audit: Audit) -> Audit:
    """The audit harness with AUDIT_MODE=rolling, a tick an hour, incidents judged over the whole day (a
    handful of bindings at random slots: a shorter window would hold too few checks to judge)."""
    current = wiring.container()
    settings = replace(
        current.settings,
        audit_mode="rolling",
        audit_tick_minutes=60,
        audit_incident_window_minutes=1440,
        audit_summary_hour=6,
    )
    container = wiring.Container(replace(current.environment, settings=settings))
    container.audit.sleep, container.audit.jitter = audit.deps.sleep, audit.deps.jitter
    wiring.use(container)
    return replace(audit, deps=container.audit)


def tick(audit: Audit) -> dict[str, Any]:
    """The schedule fires: the dispatcher runs one tick, then the workers drain what it sent."""
    answer = dispatcher.lambda_handler(SCHEDULED, LambdaContext())
    audit.drain()
    return answer


def checks_per_binding(audit: Audit) -> Counter[str]:
    """How many tick runs recorded each binding (their DONE markers)."""
    return Counter(
        item["sk"]["S"].removeprefix("DONE#")
        for item in audit.stack.table_items(TABLE)
        if item["pk"]["S"].startswith("RUN#tick-") and item["sk"]["S"].startswith("DONE#")
    )


def test_a_day_of_ticks_checks_every_binding_once_catches_up_a_missed_tick_and_sends_one_summary(rolling):
    stack = rolling.stack
    bindings = population(stack)
    plan = RollingPlan(60)
    answers = [tick(rolling)]  # the first tick ever: the slot it falls in
    catch_up: dict[str, Any] = {}
    for hour in range(1, 24):
        rolling.clock.skip(HOUR)
        if hour == 10:
            continue  # the schedule missed this one
        answers.append(tick(rolling))
        if hour == 11:  # the tick after the missed one: its slot and the missed one's
            now = stack.container.environment.now()
            catch_up = {"answer": answers[-1], "slots": {plan.slot_at(now), (plan.slot_at(now) - 1) % 24}}
    assert len(answers) == 23
    assert all(a["run_id"].startswith("tick-") for a in answers)
    checked = checks_per_binding(rolling)
    assert set(checked) == {b["binding_id"] for b in bindings.values()}
    assert set(checked.values()) == {1}
    expected = sum(1 for b in bindings.values() if plan.slot_of(b["binding_id"]) in catch_up["slots"])
    assert catch_up["answer"]["tasks"] == expected
    alerts = by_type(stack.alerts())
    [summary] = alerts["audit_summary"]  # one a day, never one per tick
    assert summary["body"]["mode"] == "rolling"
    assert summary["body"]["run_id"].startswith("day-")
    assert sorted(alerts) in (["audit_summary", "trading_permission_expiring"], ["audit_summary"])
    # a second delivery of the last tick's schedule event dispatches nothing
    assert dispatcher.lambda_handler(SCHEDULED, LambdaContext()) == {"run_id": None, "tasks": 0}


def test_an_exchange_outage_over_the_window_raises_one_incident_and_no_false_failing(rolling):
    stack = rolling.stack
    bindings = population(stack)
    for label in ("uta-healthy", "no-ip-restriction", "legacy-trade"):
        bindings[f"bitget-{label}"] = created(stack, stack.exchanges.key("bitget", label))
    stack.exchanges.simulators["bitget"].fault = Fault.UNAVAILABLE
    # A whole day of ticks: 5 Bitget checks spread over it, all unknown; once 3 have failed, the window holds.
    tick(rolling)
    for _ in range(23):
        rolling.clock.skip(HOUR)
        tick(rolling)
    alerts = by_type(stack.alerts())
    assert "binding_status_changed" not in alerts
    [incident] = alerts["incident"]  # raised once, however many ticks found it still holding
    assert (incident["body"]["exchange"], incident["body"]["code"]) == ("bitget", "exchange_unavailable")
    assert incident["body"]["window_minutes"] == 1440
    assert incident["body"]["count"] >= 3
    assert incident["body"]["run_id"].startswith("tick-")
    rolling_items = {i["sk"]["S"].split("#")[0] for i in stack.table_items(TABLE) if i["pk"]["S"] == "ROLLING"}
    assert rolling_items == {"WATERMARK", "TICK", "INCIDENT", "OPENED", "SUMMARY"}
    [summary] = alerts["audit_summary"]
    assert summary["body"]["mode"] == "rolling"
