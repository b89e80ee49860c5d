"""The email of each alert (subject and text), rendered from the typed messages; an incident's email and
its Slack message give the same remedy."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from keyhealth.audit.model import Incident as AuditIncident
from keyhealth.domain.model import FindingCode, Status
from keyhealth.exchanges.registry import SPECS
from keyhealth.notify import email, model
from keyhealth.notify.model import INCIDENT_REMEDIES, SUBJECT_LIMIT, from_body
from keyhealth.notify.slack import blocks_for
from tests.support.slack import (
    audit_summary_body,
    expiring_alert,
    incident_body,
    planned_ip_missing_alert,
    status_change,
    unreachable_alert,
    unreachable_body,
)

C = FindingCode
EXCHANGE_NAMES = {spec.name: spec.display_name for spec in SPECS}
DETECTED = datetime(2026, 11, 21, 2, 10, tzinfo=UTC)


def published_incident(code: str, exchange: str = "binance") -> model.Alert:
    """The incident alert the audit publishes (keyhealth.audit.usecases.finalize_run)."""
    incident = AuditIncident("run_01JAUDIT", exchange, code, 87, 100, DETECTED)
    return model.incident({**incident.to_dict(), "exchange_name": EXCHANGE_NAMES[exchange]})


def slack_sections(alert: model.Alert) -> list[str]:
    """The Slack notifier's sections for the alert, from the JSON body SNS delivers."""
    body = json.loads(json.loads(alert.sns_message())["default"])
    payload = blocks_for(body, alert.subject, exchange_names=EXCHANGE_NAMES)
    return [b["text"]["text"] for b in payload["blocks"] if b["type"] == "section" and "text" in b]


def said_after(prefix: str, text: str) -> str:
    [line] = [line for line in text.splitlines() if line.startswith(prefix)]
    return line.removeprefix(prefix)


# --- one remedy -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [*INCIDENT_REMEDIES, "account_restricted", "invalid_api_key"])
def test_an_incidents_email_and_slack_message_give_the_same_remedy(code):
    # Given the incident the audit publishes
    alert = published_incident(code)
    # When email and Slack render it
    in_email = said_after("What to do: ", alert.text)
    in_slack = said_after("*What to do:* ", slack_sections(alert)[0])
    # Then both say the remedy the incident carries
    assert in_email == in_slack == alert.body["remedy"]
    assert in_email == model.incident_remedy(code)


def test_a_summarys_incidents_in_slack_give_the_remedy_of_their_own_alert():
    alert = model.audit_summary({**audit_summary_body(newly_failing=0, incidents=1), "newly_failing_count": 0})
    [incident] = [s for s in slack_sections(alert) if s.startswith(":rotating_light: *Incident on")]
    assert said_after("*What to do:* ", incident) == model.incident(incident_body()).body["remedy"]


# --- the texts ------------------------------------------------------------------------------------------


def test_a_status_change_email_lists_every_finding_with_its_fix():
    alert = status_change(Status.HEALTHY, C.IP_NOT_WHITELISTED, C.WITHDRAW_ENABLED)
    assert alert.subject == (
        "keyhealth: binance binding bnd_01JSLACKTEST healthy -> failing (ip_not_whitelisted, withdraw_enab..."
    )
    assert len(alert.subject) == SUBJECT_LIMIT
    assert alert.text == "\n".join(
        [
            "The Binance key vmPU...A4Ge of user u-42 went from healthy to failing.",
            "",
            "- ip_not_whitelisted (error): This key is restricted to certain IPs and 203.0.113.10 is not among them.",
            "  Fix: Add 203.0.113.10 to the key's IP whitelist on Binance: Account, API Management, Edit "
            "restrictions, 'Restrict access to trusted IPs only'.",
            "- withdraw_enabled (warning): This key can withdraw funds; the platform never needs that.",
            "  Fix: Edit the key on Binance (Account, API Management) and untick 'Enable Withdrawals'.",
            "",
            "Binding: bnd_01JSLACKTEST  Tenant: 111111111111:role/platform-backend  Checked: 2026-11-21T02:00:00Z",
        ]
    )


def test_a_healthy_again_subject_names_no_codes():
    assert status_change(Status.FAILING).subject == "keyhealth: binance binding bnd_01JSLACKTEST failing -> healthy"


def test_an_unreachable_email_says_it_is_the_platforms_side():
    alert = unreachable_alert()
    assert alert.subject == "keyhealth: bingx binding bnd_01JSLACKTEST unchecked 3 audits in a row"
    assert alert.text == "\n".join(
        [
            "keyhealth could not check the BingX key vmPU...A4Ge of user u-42 in the last 3 audits; its last known "
            "status is healthy.",
            "",
            "- egress_blocked: BingX refuses requests from the platform's egress IP 203.0.113.10.",
            "",
            "What to do: this is the platform's side (network, exchange outage, egress IP); see the findings.",
            "",
            "Binding: bnd_01JSLACKTEST  Tenant: 111111111111:role/platform-backend",
        ]
    )


def test_an_expiring_email_says_when_and_why():
    alert = expiring_alert(days_left=5)
    assert alert.subject == "keyhealth: binance binding bnd_01JSLACKTEST trading rights lapse in 5 days"
    assert alert.text == "\n".join(
        [
            "The Binance key vmPU...A4Ge of user u-42 loses its trading permission on 2026-11-26T02:00:00Z "
            "(5 days), because it has no IP restriction.",
            "",
            "What to do: ask the user to restrict the key to the platform's egress IPs; restricted keys do not lapse.",
            "",
            "Binding: bnd_01JSLACKTEST  Tenant: 111111111111:role/platform-backend",
        ]
    )


def test_a_planned_ip_email_says_which_ip_to_add_and_by_when():
    alert = planned_ip_missing_alert()
    assert alert.subject == "keyhealth: bitget binding bnd_01JSLACKTEST is not ready for a planned egress IP"
    assert "- The platform will also send requests from 203.0.113.20 (from 2027-01-15)" in alert.text
    assert "  Fix: Before 2027-01-15, add 203.0.113.20 to the key's IP whitelist on Bitget (API Management" in (
        alert.text
    )
    assert alert.text.endswith("Binding: bnd_01JSLACKTEST  Tenant: 111111111111:role/platform-backend")


def test_an_incident_email_names_count_share_cause_and_remedy():
    alert = published_incident("ip_not_whitelisted")
    assert alert.subject == "keyhealth: INCIDENT binance ip_not_whitelisted: 87 of 100 bindings"
    assert alert.text == "\n".join(
        [
            "87 of 100 binance bindings checked in audit run_01JAUDIT (87%) came back ip_not_whitelisted.",
            "Likely cause: the platform's egress IP changed, or users whitelisted another address.",
            "",
            f"What to do: {INCIDENT_REMEDIES['ip_not_whitelisted']}",
            "Individual alerts for these bindings were folded into this one.",
        ]
    )


def test_a_summary_email_counts_by_exchange_and_lists_incidents():
    alert = model.audit_summary({**audit_summary_body(newly_failing=3, incidents=1), "newly_failing_count": 3})
    assert alert.subject == "keyhealth: audit run_01JAUDIT: 120 checked, 8 failing, 3 newly failing"
    assert alert.text == "\n".join(
        [
            "Audit run_01JAUDIT checked 120 bindings in 90.0 s (1.33 checks/s): 100 healthy, 10 degraded, "
            "8 failing, 2 unknown.",
            "Newly failing: 3. Incidents: 1.",
            "",
            "- binance: 100 checked, 85 healthy, 8 degraded, 6 failing, 1 unknown",
            "- bitget: 20 checked, 15 healthy, 2 degraded, 2 failing, 1 unknown",
            "- INCIDENT binance ip_not_whitelisted: 80 bindings (The egress IP changed, or Binance stopped "
            "accepting it.)",
        ]
    )


# --- older, partial and unknown messages ----------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        unreachable_body(),
        {"type": "binding_status_changed"},
        {"type": "incident"},
        {"type": "audit_summary"},
        {"type": "trading_permission_expiring"},
        {"type": "brand_new", "x": 1},
    ],
)
def test_any_message_has_a_subject_and_a_text(body):
    message = from_body(body)
    assert 0 < len(email.subject(message)) <= SUBJECT_LIMIT
    assert email.text(message)


def test_an_older_message_without_the_exchanges_name_names_its_id():
    assert email.text(from_body(unreachable_body())).startswith("keyhealth could not check the bingx key abcd...wxyz")


def test_an_unknown_message_is_shown_as_it_came():
    message = from_body({"type": "brand_new", "detail": "something"})
    assert email.subject(message) == "keyhealth: brand_new"
    assert '"detail": "something"' in email.text(message)
