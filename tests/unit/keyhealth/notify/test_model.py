"""The typed alert messages: the JSON bodies they publish (the SNS contract), their parsers, which read
older and partial messages and never raise, and the alerts built from domain objects."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from keyhealth.audit.model import Incident as AuditIncident
from keyhealth.audit.model import summarise
from keyhealth.domain.model import FindingCode, Status
from keyhealth.notify import model
from keyhealth.notify.model import (
    DEFAULT_INCIDENT_REMEDY,
    INCIDENT_REMEDIES,
    AuditSummary,
    Incident,
    PlannedIpMissing,
    StatusChanged,
    TradingExpiring,
    UnknownAlert,
    Unreachable,
    from_body,
)
from tests.support.slack import (
    audit_summary_body,
    expiring_alert,
    expiring_body,
    incident_body,
    planned_ip_missing_alert,
    status_change,
    unreachable_alert,
    unreachable_body,
)

C = FindingCode
DETECTED = datetime(2026, 11, 21, 2, 10, tzinfo=UTC)


def audit_incident(code: str = "ip_not_whitelisted", exchange: str = "binance") -> dict:
    """An incident body as the audit publishes it (keyhealth.audit.usecases.finalize_run)."""
    return {**AuditIncident("run_01JAUDIT", exchange, code, 87, 100, DETECTED).to_dict(), "exchange_name": "Binance"}


def audit_summary() -> dict:
    """A summary body as the audit publishes it."""
    counters = {
        "checked.binance": 10,
        "status.binance.failing": 6,
        "status.binance.healthy": 4,
        "newly_failing.binance.ip_not_whitelisted": 6,
        "checked.bitget": 2,
        "status.bitget.healthy": 2,
    }
    incidents = [AuditIncident("run_01JAUDIT", "binance", "ip_not_whitelisted", 6, 10, DETECTED)]
    summary = summarise("run_01JAUDIT", counters, [], incidents, DETECTED, DETECTED + timedelta(seconds=33))
    return {**summary, "newly_failing_count": 6, "exchange_names": {"binance": "Binance", "bitget": "Bitget"}}


PUBLISHED = {
    "binding_status_changed": lambda: status_change(Status.HEALTHY, C.IP_NOT_WHITELISTED, C.WITHDRAW_ENABLED),
    "binding_unreachable": unreachable_alert,
    "trading_permission_expiring": expiring_alert,
    "planned_ip_missing": planned_ip_missing_alert,
    "incident": lambda: model.incident(audit_incident()),
    "audit_summary": lambda: model.audit_summary(audit_summary()),
}
KINDS = {
    "binding_status_changed": StatusChanged,
    "binding_unreachable": Unreachable,
    "trading_permission_expiring": TradingExpiring,
    "planned_ip_missing": PlannedIpMissing,
    "incident": Incident,
    "audit_summary": AuditSummary,
}


# --- the bodies on the topic ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", PUBLISHED)
def test_every_published_body_survives_to_body_from_body_to_body(kind):
    # Given a body as published, through SNS's JSON
    body = json.loads(json.loads(PUBLISHED[kind]().sns_message())["default"])
    # When
    message = from_body(body)
    # Then
    assert type(message) is KINDS[kind]
    assert message.to_body() == body
    assert json.dumps(message.to_body()) == json.dumps(body)  # the keys in the same order too
    assert type(message).from_body(message.to_body()) == message


def test_an_unknown_body_survives_to_body_from_body_to_body():
    body = {"type": "key_rotated_by_exchange", "binding_id": "bnd_1", "exchange": "bitget", "n": [1, 2]}
    message = from_body(body)
    assert message == UnknownAlert(body)
    assert from_body(message.to_body()).to_body() == body


def test_the_status_change_body_keeps_the_published_contract():
    body = status_change(Status.HEALTHY, C.IP_NOT_WHITELISTED).body
    assert list(body) == [
        "type",
        "binding_id",
        "tenant",
        "user_id",
        "exchange",
        "exchange_name",
        "api_key_masked",
        "previous_status",
        "status",
        "findings",
        "checked_at",
    ]
    assert list(body["findings"][0]) == [
        "code",
        "severity",
        "audience",
        "message",
        "remedy",
        "exchange_code",
        "exchange_message",
    ]
    assert (body["previous_status"], body["status"], body["checked_at"]) == (
        "healthy",
        "failing",
        "2026-11-21T02:00:00Z",
    )


def test_the_unreachable_and_expiring_bodies_keep_the_published_contract():
    # `status` (the last known one, which the email names) is the one key added to the unreachable alert
    assert list(unreachable_alert().body) == [
        "type",
        "binding_id",
        "tenant",
        "user_id",
        "exchange",
        "exchange_name",
        "api_key_masked",
        "unknown_streak",
        "findings",
        "checked_at",
        "status",
    ]
    expiring = expiring_alert(days_left=7).body
    assert list(expiring)[-2:] == ["expires_at", "days_left"]
    assert (expiring["expires_at"], expiring["days_left"]) == ("2026-11-28T02:00:00Z", 7)


def test_an_incident_is_published_as_the_audit_built_it_plus_its_remedy():
    body = audit_incident()
    alert = model.incident(body)
    assert alert.body == {**body, "remedy": INCIDENT_REMEDIES["ip_not_whitelisted"]}
    assert "remedy" not in body  # the audit's own dict is left as it was


def test_a_summary_is_published_as_the_audit_built_it_its_incidents_with_their_remedy():
    body = audit_summary()
    stored = json.loads(json.dumps(body))
    alert = model.audit_summary(body)
    assert body == stored  # the run store keeps the audit's own dict: it is not changed
    expected = {**stored, "incidents": [{**i, "remedy": INCIDENT_REMEDIES[i["code"]]} for i in stored["incidents"]]}
    assert alert.body == expected


# --- older and partial messages --------------------------------------------------------------------------


def test_an_older_incident_gets_its_remedy_from_the_one_table():
    assert from_body(incident_body()).remedy == INCIDENT_REMEDIES["ip_not_whitelisted"]
    assert from_body(incident_body(code="account_restricted")).remedy == DEFAULT_INCIDENT_REMEDY
    assert from_body({"type": "incident"}).remedy == DEFAULT_INCIDENT_REMEDY


def test_a_remedy_the_message_carries_wins():
    assert from_body(incident_body(remedy="Call the exchange.")).remedy == "Call the exchange."


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        (unreachable_body(), Unreachable),
        (expiring_body(), TradingExpiring),
        (audit_summary_body(), AuditSummary),
        ({"type": "binding_status_changed"}, StatusChanged),
        ({"type": "audit_summary", "counts": {"total": 3}}, AuditSummary),
        ({"type": "incident", "exchange_name": 7}, Incident),  # a name of the wrong kind is a hint, ignored
    ],
    ids=["unreachable, no name", "expiring, no name", "summary, no names", "bare", "summary, few counts", "name"],
)
def test_older_and_partial_messages_are_read_as_their_type(body, kind):
    message = from_body(body)
    assert type(message) is kind
    assert getattr(message, "exchange_name", None) is None


@pytest.mark.parametrize(
    "body",
    [
        {"type": "binding_status_changed", "findings": "oops"},
        {"type": "binding_status_changed", "findings": [1]},
        {"type": "binding_status_changed", "findings": [{"exchange_code": [1]}]},
        {"type": "incident", "count": {"oops": 1}, "share": "most"},
        {"type": "incident", "share": True},
        {"type": "audit_summary", "counts": "x", "by_exchange": [1], "incidents": "no"},
        {"type": "audit_summary", "newly_failing": [{"codes": "ip_not_whitelisted"}]},
        {"type": "trading_permission_expiring", "days_left": "5"},
    ],
)
def test_a_known_type_in_an_unexpected_shape_is_kept_as_it_came(body):
    message = from_body(body)
    assert isinstance(message, UnknownAlert)
    assert message.body == body
    assert message.type == body["type"]
    assert message.problem


@pytest.mark.parametrize("body", [{}, {"hello": "world"}, {"type": None}, {"type": ["incident"]}])
def test_a_body_without_a_known_type_is_unknown(body):
    message = from_body(body)
    assert isinstance(message, UnknownAlert)
    assert message.problem is None
    assert message.type in ("alert", "['incident']")


def test_a_parser_refuses_a_body_of_another_type():
    with pytest.raises(model.MalformedAlert):
        Incident.from_body(expiring_body())


# --- alerts built from domain objects --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "attributes"),
    [
        (
            lambda: status_change(Status.HEALTHY, C.IP_NOT_WHITELISTED),
            {"type": "binding_status_changed", "severity": "critical", "exchange": "binance", "status": "failing"},
        ),
        (
            lambda: status_change(Status.HEALTHY, C.NO_IP_RESTRICTION),
            {"type": "binding_status_changed", "severity": "warning", "exchange": "binance", "status": "degraded"},
        ),
        (
            lambda: status_change(Status.FAILING),
            {"type": "binding_status_changed", "severity": "info", "exchange": "binance", "status": "healthy"},
        ),
        (
            unreachable_alert,
            {"type": "binding_unreachable", "severity": "warning", "exchange": "bingx", "status": "healthy"},
        ),
        (
            expiring_alert,
            {"type": "trading_permission_expiring", "severity": "warning", "exchange": "binance", "status": "degraded"},
        ),
        (
            planned_ip_missing_alert,
            {"type": "planned_ip_missing", "severity": "warning", "exchange": "bitget", "status": "degraded"},
        ),
        (
            lambda: model.incident(audit_incident()),
            {"type": "incident", "severity": "critical", "exchange": "binance", "status": "failing"},
        ),
        (
            lambda: model.audit_summary(audit_summary()),
            {"type": "audit_summary", "severity": "critical", "exchange": "all", "status": "summary"},
        ),
        (
            lambda: model.audit_summary({**audit_summary(), "incidents": []}),
            {"type": "audit_summary", "severity": "warning", "exchange": "all", "status": "summary"},
        ),
        (
            lambda: model.audit_summary({**audit_summary(), "incidents": [], "newly_failing_count": 0}),
            {"type": "audit_summary", "severity": "info", "exchange": "all", "status": "summary"},
        ),
    ],
)
def test_attributes_name_type_severity_exchange_and_status_for_subscription_filters(build, attributes):
    assert build().attributes == attributes


def test_the_sns_message_is_json_by_default_and_text_for_email():
    alert = status_change(Status.HEALTHY, C.IP_NOT_WHITELISTED)
    message = json.loads(alert.sns_message())
    assert json.loads(message["default"]) == alert.body
    assert message["email"] == alert.text


def test_an_alert_survives_being_held_as_its_four_fields():
    # The audit holds alerts until its run ends as subject, body, text and attributes (audit.model.HeldAlert).
    alert = unreachable_alert()
    assert model.Alert(alert.subject, alert.body, alert.text, alert.attributes) == alert
