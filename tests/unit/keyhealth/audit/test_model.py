"""The audit's decisions as pure functions: which alerts one check deserves, which failures
form one incident, and what the run's summary says."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from keyhealth.audit import model as audit_model
from keyhealth.audit.model import (
    NEWLY_FAILING_LISTED,
    UNREACHABLE_AFTER,
    AuditTask,
    HeldAlert,
    Incident,
    detect_incidents,
    main_code,
    release,
    summarise,
)
from keyhealth.bindings.model import Binding
from keyhealth.domain.credentials import KeyType
from keyhealth.domain.findings import make_finding
from keyhealth.domain.model import FindingCode, Report, Scope, Status
from keyhealth.exchanges.registry import Exchange, spec

C = FindingCode


def assess(before: Binding, report: Report, now: datetime) -> audit_model.Assessment:
    """The audit's assessment, with the exchange's display name as the use case passes it."""
    return audit_model.assess(before, report, now, exchange_name=spec(before.exchange).display_name)


NOW = datetime(2026, 11, 21, 2, 0, 0, tzinfo=UTC)
EXPIRES = datetime(2026, 12, 31, 12, 0, 0, tzinfo=UTC)


def binding(
    status: Status = Status.HEALTHY,
    *,
    exchange: Exchange = Exchange.BINANCE,
    binding_id: str = "bnd_1",
    unknown_streak: int = 0,
) -> Binding:
    return Binding(
        binding_id=binding_id,
        tenant="123456789012:role/platform",
        user_id="u-42",
        exchange=exchange,
        label="grid bot",
        key_type=KeyType.HMAC,
        api_key_masked="vmPU...A4Ge",
        api_key_hash="0" * 64,
        scopes=(Scope.SPOT,),
        status=status,
        created_at=NOW - timedelta(days=60),
        updated_at=NOW - timedelta(days=1),
        secret_id="arn:aws:secretsmanager:eu-west-1:123456789012:secret:keyhealth/bnd_1",
        unknown_streak=unknown_streak,
    )


def report(
    *codes: FindingCode,
    exchange: Exchange = Exchange.BINANCE,
    at: datetime = NOW,
    expires: datetime | None = None,
) -> Report:
    return Report(
        checked_at=at,
        egress_ip="203.0.113.10",
        trading_expires_at=expires,
        findings=tuple(
            make_finding(code, spec(exchange).ui, egress_ips=["203.0.113.10"], expires_at=expires) for code in codes
        ),
    )


# --------------------------------------------------------------------------- transitions
def test_healthy_to_failing_holds_one_critical_alert_marked_newly_failing():
    result = assess(binding(Status.HEALTHY), report(C.IP_NOT_WHITELISTED), NOW)

    assert result.binding.status is Status.FAILING
    [held] = result.held
    assert (held.kind, held.code, held.newly_failing) == ("binding_status_changed", "ip_not_whitelisted", True)
    assert held.alert.attributes == {
        "type": "binding_status_changed",
        "severity": "critical",
        "exchange": "binance",
        "status": "failing",
    }
    assert (held.alert.body["previous_status"], held.alert.body["status"]) == ("healthy", "failing")
    assert held.alert.subject.endswith("healthy -> failing (ip_not_whitelisted)")
    assert dict(result.counters) == {
        "checked.binance": 1,
        "status.binance.failing": 1,
        "newly_failing.binance.ip_not_whitelisted": 1,
    }


def test_degraded_to_failing_is_newly_failing_too():
    result = assess(binding(Status.DEGRADED), report(C.INVALID_API_KEY), NOW)
    [held] = result.held
    assert held.newly_failing
    assert result.counters["newly_failing.binance.invalid_api_key"] == 1


@pytest.mark.parametrize(
    ("before", "codes", "after", "severity"),
    [
        (Status.FAILING, (), Status.HEALTHY, "info"),
        (Status.DEGRADED, (), Status.HEALTHY, "info"),
        (Status.FAILING, (C.WITHDRAW_ENABLED,), Status.DEGRADED, "warning"),
        (Status.HEALTHY, (C.NO_IP_RESTRICTION,), Status.DEGRADED, "warning"),
    ],
)
def test_other_status_changes_hold_one_alert_that_is_not_newly_failing(before, codes, after, severity):
    result = assess(binding(before), report(*codes), NOW)

    assert result.binding.status is after
    [held] = result.held
    assert held.kind == "binding_status_changed"
    assert not held.newly_failing
    assert held.alert.attributes["severity"] == severity
    assert (held.alert.body["previous_status"], held.alert.body["status"]) == (before.value, after.value)
    assert not any(key.startswith("newly_failing.") for key in result.counters)
    assert result.counters[f"status.binance.{after.value}"] == 1


@pytest.mark.parametrize(
    ("before", "codes"),
    [
        (Status.HEALTHY, ()),
        (Status.DEGRADED, (C.WITHDRAW_ENABLED,)),
        (Status.FAILING, (C.INVALID_SECRET,)),
    ],
)
def test_an_unchanged_status_holds_no_alert(before, codes):
    result = assess(binding(before, unknown_streak=0), report(*codes), NOW)
    assert result.binding.status is before
    assert result.held == []
    assert dict(result.counters) == {"checked.binance": 1, f"status.binance.{before.value}": 1}


def test_failing_for_another_reason_is_not_a_change():
    before = binding(Status.FAILING)
    result = assess(before, report(C.INVALID_API_KEY), NOW)
    assert result.held == []
    assert not any(key.startswith("newly_failing.") for key in result.counters)


@pytest.mark.parametrize("before", [Status.HEALTHY, Status.DEGRADED, Status.FAILING])
def test_a_transient_result_keeps_the_status_and_counts_one_more_unknown(before):
    result = assess(binding(before, unknown_streak=1), report(C.TIMEOUT), NOW)

    assert result.binding.status is before
    assert result.binding.unknown_streak == 2
    assert result.binding.last_report.status is Status.UNKNOWN
    assert result.held == []
    assert dict(result.counters) == {
        "checked.binance": 1,
        "status.binance.unknown": 1,
        "transient.binance.timeout": 1,
    }


def test_the_third_unknown_in_a_row_raises_exactly_one_unreachable_alert():
    current = binding(Status.HEALTHY, exchange=Exchange.BINGX)
    kinds = []
    for _ in range(UNREACHABLE_AFTER + 2):
        result = assess(current, report(C.EXCHANGE_UNAVAILABLE, exchange=Exchange.BINGX), NOW)
        kinds.append([h.kind for h in result.held])
        current = result.binding

    assert kinds == [[], [], ["binding_unreachable"], [], []]
    assert current.unknown_streak == 5
    assert current.status is Status.HEALTHY


def test_the_unreachable_alert_names_its_cause_and_streak():
    result = assess(binding(unknown_streak=2), report(C.EGRESS_BLOCKED), NOW)
    [held] = result.held
    assert (held.kind, held.code, held.newly_failing) == ("binding_unreachable", "egress_blocked", False)
    assert held.alert.body["unknown_streak"] == 3
    assert held.alert.attributes["severity"] == "warning"


def test_a_fourth_unknown_raises_nothing():
    result = assess(binding(unknown_streak=3), report(C.TIMEOUT), NOW)
    assert result.binding.unknown_streak == 4
    assert result.held == []


def test_credentials_that_cannot_be_decrypted_raise_one_alert_keep_the_status_and_the_streak():
    current = binding(Status.HEALTHY, unknown_streak=UNREACHABLE_AFTER)  # already reported unreachable
    kinds = []
    for _ in range(3):
        result = assess(current, report(C.CREDENTIALS_UNREADABLE), NOW)
        kinds.append([h.kind for h in result.held])
        current = result.binding

    assert kinds == [["credentials_unreadable"], [], []]  # once, not at every audit; no binding_unreachable
    assert (current.status, current.unknown_streak) == (Status.HEALTHY, UNREACHABLE_AFTER)
    assert current.last_report is not None
    assert current.last_report.status is Status.UNKNOWN
    held = assess(binding(), report(C.CREDENTIALS_UNREADABLE), NOW).held[0]
    assert (held.code, held.alert.attributes["severity"], held.alert.body["status"]) == (
        "credentials_unreadable",
        "critical",
        "healthy",
    )
    assert "decrypt" in held.alert.text


def test_readable_again_then_unreadable_again_alerts_again():
    current = assess(binding(), report(C.CREDENTIALS_UNREADABLE), NOW).binding
    current = assess(current, report(), NOW).binding
    again = assess(current, report(C.CREDENTIALS_UNREADABLE), NOW)
    assert [h.kind for h in again.held] == ["credentials_unreadable"]


def test_a_key_lacking_a_planned_ip_raises_one_alert_per_binding_and_is_counted_at_every_check():
    current = binding(Status.DEGRADED, exchange=Exchange.BITGET)  # degraded already: no status change alert
    kinds, counted = [], []
    for codes in ((C.WITHDRAW_ENABLED, C.PLANNED_IP_MISSING), (C.WITHDRAW_ENABLED, C.PLANNED_IP_MISSING), ()):
        result = assess(current, report(*codes, exchange=Exchange.BITGET), NOW)
        kinds.append([h.kind for h in result.held])
        counted.append(result.counters["planned_ip_missing.bitget"])
        current = result.binding
    assert kinds == [["planned_ip_missing"], [], ["binding_status_changed"]]  # once; then healthy again
    assert counted == [1, 1, 0]
    first = assess(binding(exchange=Exchange.BITGET), report(C.PLANNED_IP_MISSING, exchange=Exchange.BITGET), NOW)
    planned = next(h for h in first.held if h.kind == "planned_ip_missing")
    assert [f["code"] for f in planned.alert.body["findings"]] == ["planned_ip_missing"]
    assert planned.alert.attributes == {
        "type": "planned_ip_missing",
        "severity": "warning",
        "exchange": "bitget",
        "status": "degraded",
    }


def test_the_summary_counts_per_exchange_the_keys_not_ready_for_a_planned_ip():
    counters = {"checked.bitget": 3, "planned_ip_missing.bitget": 2, "checked.bingx": 1, "planned_ip_missing.bingx": 1}
    summary = audit_model.summarise("run-1", counters, [], [], NOW, NOW + timedelta(seconds=1))
    assert summary["planned_ip_missing"] == {"bingx": 1, "bitget": 2}


def test_a_real_answer_resets_the_streak_so_the_count_starts_again():
    current = binding(unknown_streak=2)
    current = assess(current, report(), NOW).binding
    assert current.unknown_streak == 0
    for _ in range(2):
        current = assess(current, report(C.TIMEOUT), NOW).binding
    assert current.unknown_streak == 2  # two after the reset: not yet unreachable
    assert [h.kind for h in assess(current, report(C.TIMEOUT), NOW).held] == ["binding_unreachable"]


@pytest.mark.parametrize(
    ("codes", "expected"),
    [
        ((), "none"),
        ((C.WITHDRAW_ENABLED,), "withdraw_enabled"),
        ((C.WITHDRAW_ENABLED, C.TIMEOUT), "timeout"),
        ((C.WITHDRAW_ENABLED, C.TIMEOUT, C.KEY_REJECTED, C.INVALID_SECRET), "key_rejected"),
    ],
)
def test_main_code_prefers_errors_then_transients_then_warnings(codes, expected):
    assert main_code(report(*codes)) == expected


# ------------------------------------------------------------------------ expiry reminders
def expiring(days_left: float, *, expires: datetime = EXPIRES) -> tuple[Report, datetime]:
    now = expires - timedelta(days=days_left)
    return report(C.NO_IP_RESTRICTION, C.TRADING_PERMISSION_EXPIRING, at=now, expires=expires), now


def check_expiring(current: Binding, days_left: float, *, expires: datetime = EXPIRES):
    checked, now = expiring(days_left, expires=expires)
    result = assess(current, checked, now)
    reminders = [h for h in result.held if h.kind == "trading_permission_expiring"]
    return result.binding, reminders


def test_reminders_come_at_14_7_and_1_days_once_each():
    current = binding(Status.DEGRADED)
    sent = []
    for days_left in (20, 13.5, 13, 8, 6.9, 6, 2, 0.5, 0.2):
        current, reminders = check_expiring(current, days_left)
        sent.append([r.alert.body["days_left"] for r in reminders])

    assert sent == [[], [14], [], [], [7], [], [], [1], []]


def test_a_reminder_is_held_for_release_with_its_own_kind():
    _, [reminder] = check_expiring(binding(Status.DEGRADED), 13.5)
    assert (reminder.kind, reminder.code, reminder.newly_failing) == (
        "trading_permission_expiring",
        "trading_permission_expiring",
        False,
    )
    assert reminder.alert.body["expires_at"] == "2026-12-31T12:00:00Z"
    assert reminder.alert.attributes["type"] == "trading_permission_expiring"


def test_crossing_14_and_7_at_once_reminds_once():
    current, reminders = check_expiring(binding(Status.DEGRADED), 6.9)
    assert [r.alert.body["days_left"] for r in reminders] == [7]
    current, reminders = check_expiring(current, 6.5)
    assert reminders == []
    _, reminders = check_expiring(current, 0.9)
    assert [r.alert.body["days_left"] for r in reminders] == [1]


def test_a_new_expiry_date_restarts_the_schedule():
    current, _ = check_expiring(binding(Status.DEGRADED), 13.5)
    current, _ = check_expiring(current, 6.9)
    renewed = EXPIRES + timedelta(days=30)
    current, reminders = check_expiring(current, 10, expires=renewed)
    assert [r.alert.body["days_left"] for r in reminders] == [10]  # the 14-day reminder of the new date
    _, reminders = check_expiring(current, 6, expires=renewed)
    assert [r.alert.body["days_left"] for r in reminders] == [6]


def test_an_expired_date_reminds_of_nothing_and_keeps_the_state():
    current, _ = check_expiring(binding(Status.DEGRADED), 13.5)
    state = dict(current.extra)
    checked = report(C.TRADING_PERMISSION_EXPIRED, at=EXPIRES + timedelta(hours=1), expires=EXPIRES)
    result = assess(current, checked, EXPIRES + timedelta(hours=1))
    assert [h.kind for h in result.held] == ["binding_status_changed"]
    assert result.binding.extra == state


def test_reminder_state_survives_an_unrelated_extra_field():
    current = replace(binding(Status.DEGRADED), extra={"other": 1})
    current, _ = check_expiring(current, 13.5)
    assert current.extra["other"] == 1
    assert current.extra["expiry_reminders"]["sent"] == [14]


# ---------------------------------------------------------------------------- incidents
def incidents(counters: dict[str, int]) -> list[tuple[str, str, int, int]]:
    return [(i.exchange, i.code, i.count, i.total) for i in detect_incidents("run-1", counters, NOW)]


def test_two_of_two_is_too_few_for_an_incident():
    assert incidents({"checked.binance": 2, "newly_failing.binance.ip_not_whitelisted": 2}) == []


def test_three_of_six_is_an_incident():
    counters = {"checked.binance": 6, "newly_failing.binance.ip_not_whitelisted": 3}
    assert incidents(counters) == [("binance", "ip_not_whitelisted", 3, 6)]
    [incident] = detect_incidents("run-1", counters, NOW)
    assert incident.to_dict()["share"] == 0.5
    assert incident.to_dict()["type"] == "incident"


def test_three_of_seven_is_below_half_and_no_incident():
    assert incidents({"checked.binance": 7, "newly_failing.binance.ip_not_whitelisted": 3}) == []


def test_transient_and_newly_failing_results_are_counted_per_code():
    counters = {
        "checked.bitget": 8,
        "transient.bitget.timeout": 4,
        "newly_failing.bitget.ip_not_whitelisted": 4,
        # two codes of two each: together half, but neither is an incident alone
        "transient.bitget.exchange_unavailable": 2,
        "transient.bitget.clock_skew": 2,
    }
    assert incidents(counters) == [("bitget", "ip_not_whitelisted", 4, 8), ("bitget", "timeout", 4, 8)]


def test_newly_failing_and_transient_checks_of_one_code_add_up():
    counters = {"checked.bingx": 5, "newly_failing.bingx.egress_blocked": 1, "transient.bingx.egress_blocked": 2}
    assert incidents(counters) == [("bingx", "egress_blocked", 3, 5)]


def test_one_exchange_incident_leaves_the_others_alone():
    counters = {
        "checked.binance": 4,
        "newly_failing.binance.key_rejected": 4,
        "checked.bingx": 10,
        "newly_failing.bingx.key_rejected": 1,
        "checked.bitget": 100,
        "transient.bitget.timeout": 3,
    }
    assert incidents(counters) == [("binance", "key_rejected", 4, 4)]


def test_failures_of_an_exchange_with_no_checks_are_no_incident():
    assert incidents({"checked.binance": 3, "transient.bitget.timeout": 3}) == []


# ------------------------------------------------------------------------------ release
def held(exchange: Exchange, code: FindingCode, binding_id: str, *, streak: int = 0) -> HeldAlert:
    before = binding(Status.HEALTHY, exchange=exchange, binding_id=binding_id, unknown_streak=streak)
    [alert] = assess(before, report(code, exchange=exchange), NOW).held
    return alert


def incident(exchange: Exchange, code: str) -> Incident:
    return Incident("run-1", exchange, code, 3, 4, NOW)


def test_release_folds_only_alerts_of_the_incident_exchange_and_code():
    folded = held(Exchange.BINANCE, C.IP_NOT_WHITELISTED, "bnd_a")
    other_code = held(Exchange.BINANCE, C.INVALID_API_KEY, "bnd_b")
    other_exchange = held(Exchange.BITGET, C.IP_NOT_WHITELISTED, "bnd_c")
    unreachable = held(Exchange.BINANCE, C.TIMEOUT, "bnd_d", streak=2)
    assert unreachable.kind == "binding_unreachable"

    released = release(
        [folded, other_code, other_exchange, unreachable],
        [incident(Exchange.BINANCE, "ip_not_whitelisted"), incident(Exchange.BINANCE, "timeout")],
    )
    assert [h.binding_id for h in released] == ["bnd_b", "bnd_c"]


def test_release_without_incidents_keeps_everything():
    alerts = [held(Exchange.BINANCE, C.IP_NOT_WHITELISTED, f"bnd_{i}") for i in range(3)]
    assert release(alerts, []) == alerts


def test_release_never_folds_an_expiry_reminder():
    _, [reminder] = check_expiring(binding(Status.DEGRADED), 13.5)
    every_code = [incident(Exchange.BINANCE, reminder.code), incident(Exchange.BINANCE, "no_ip_restriction")]
    assert release([reminder], every_code) == [reminder]


# ------------------------------------------------------------------------------ summary
def test_summary_counts_per_exchange_and_in_total():
    counters = {
        "checked.binance": 5,
        "status.binance.healthy": 3,
        "status.binance.failing": 1,
        "status.binance.unknown": 1,
        "checked.bingx": 2,
        "status.bingx.degraded": 2,
        "transient.binance.timeout": 1,
    }
    started = NOW
    summary = summarise("run-1", counters, [], [], started, started + timedelta(seconds=2))

    assert summary["by_exchange"] == {
        "binance": {"total": 5, "healthy": 3, "degraded": 0, "failing": 1, "unknown": 1},
        "bingx": {"total": 2, "healthy": 0, "degraded": 2, "failing": 0, "unknown": 0},
    }
    assert summary["counts"] == {"total": 7, "healthy": 3, "degraded": 2, "failing": 1, "unknown": 1}
    assert summary["checks_per_second"] == 3.5
    assert summary["duration_seconds"] == 2.0
    assert (summary["started_at"], summary["finished_at"]) == ("2026-11-21T02:00:00Z", "2026-11-21T02:00:02Z")
    assert (summary["type"], summary["run_id"]) == ("audit_summary", "run-1")
    assert summary["incidents"] == []


def test_an_empty_run_summarises_to_zeros_without_dividing_by_zero():
    summary = summarise("run-0", {}, [], [], NOW, NOW)
    assert summary["counts"] == {"total": 0, "healthy": 0, "degraded": 0, "failing": 0, "unknown": 0}
    assert summary["by_exchange"] == {}
    assert summary["checks_per_second"] == 0


def test_summary_lists_newly_failing_bounded_with_an_exact_count():
    newly = [held(Exchange.BITGET, C.INVALID_PASSPHRASE, f"bnd_{i:03d}") for i in range(NEWLY_FAILING_LISTED + 50)]
    healed = assess(binding(Status.FAILING, binding_id="bnd_healed"), report(), NOW).held
    unreachable = [held(Exchange.BITGET, C.TIMEOUT, "bnd_unreachable", streak=2)]
    item = incident(Exchange.BITGET, "invalid_passphrase")

    summary = summarise("run-1", {"checked.bitget": 200}, [*newly, *healed, *unreachable], [item], NOW, NOW)

    assert summary["newly_failing_count"] == NEWLY_FAILING_LISTED + 50
    assert len(summary["newly_failing"]) == NEWLY_FAILING_LISTED
    assert summary["newly_failing"][0] == {
        "binding_id": "bnd_000",
        "tenant": "123456789012:role/platform",
        "user_id": "u-42",
        "exchange": "bitget",
        "codes": ["invalid_passphrase"],
    }
    assert summary["incidents"] == [item.to_dict()]


# ------------------------------------------------------------------------ serialisation
def test_a_task_and_a_held_alert_survive_their_serialisation():
    task = AuditTask("run-1", Exchange.BINGX, "123456789012:role/platform", "bnd_1")
    assert AuditTask.from_json(task.to_json()) == task
    alert = held(Exchange.BINANCE, C.IP_NOT_WHITELISTED, "bnd_1")
    assert HeldAlert.from_dict(alert.to_dict()) == alert


# ----------------------------------------------------------------------------- egress IPs
IPS = ("203.0.113.10", "203.0.113.11", "203.0.113.12")


def test_bindings_are_spread_evenly_over_the_egress_ips_and_stay_put_within_a_day():
    ids = [f"bnd_{i:06d}" for i in range(30_000)]
    counts = Counter(audit_model.egress_for(b, IPS, 20_000) for b in ids)
    assert set(counts) == set(IPS)
    assert max(counts.values()) - min(counts.values()) < 0.03 * 10_000  # 10,000 each, within 3%
    assert all(audit_model.egress_for(b, IPS, 20_000) == audit_model.egress_for(b, IPS, 20_000) for b in ids[:100])


def test_each_binding_is_checked_from_every_egress_ip_over_as_many_days():
    for binding_id in (f"bnd_{i:06d}" for i in range(500)):
        assert {audit_model.egress_for(binding_id, IPS, day) for day in range(20_000, 20_003)} == set(IPS)
    assert audit_model.egress_for("bnd_1", (), 20_000) is None
    assert audit_model.egress_for("bnd_1", IPS[:1], 20_000) == IPS[0]


def test_a_task_keeps_its_egress_ip_through_json_and_an_older_task_has_none():
    task = audit_model.AuditTask("run-1", "bitget", "t", "bnd_1", "203.0.113.11")
    assert audit_model.AuditTask.from_json(task.to_json()) == task
    older = '{"run_id": "run-1", "exchange": "bitget", "tenant": "t", "binding_id": "bnd_1"}'
    assert audit_model.AuditTask.from_json(older).egress_ip is None
    assert "egress_ip" not in audit_model.AuditTask("run-1", "bitget", "t", "bnd_1").to_json()
