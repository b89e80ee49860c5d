"""Alert bodies become Slack Block Kit payloads that Slack accepts, say what to do, and stay in its limits."""

import json

import pytest

from keyhealth.domain.model import FindingCode, Status
from keyhealth.exchanges.registry import SPECS
from keyhealth.notify.model import from_body
from keyhealth.notify.slack import BLOCK_LIMIT, HEADER_LIMIT, MAX_FINDINGS, SECTION_LIMIT, blocks_for, render
from tests.support.slack import (
    all_text,
    audit_summary_body,
    block_kit_problems,
    expiring_body,
    incident_body,
    planned_ip_missing_alert,
    status_change,
    unreachable_body,
)

C = FindingCode

EXCHANGE_NAMES = {spec.name: spec.display_name for spec in SPECS}


def _blocks(payload, kind):
    return [b for b in payload["blocks"] if b["type"] == kind]


def _sections(payload):
    return [b["text"]["text"] for b in _blocks(payload, "section") if "text" in b]


def _fields(payload):
    return [f["text"] for b in _blocks(payload, "section") for f in b.get("fields", [])]


def _header(payload):
    return _blocks(payload, "header")[0]["text"]["text"]


BODIES = {
    "failing": status_change(Status.HEALTHY, C.IP_NOT_WHITELISTED, C.WITHDRAW_ENABLED).body,
    "degraded": status_change(Status.HEALTHY, C.NO_IP_RESTRICTION).body,
    "healthy again": status_change(Status.FAILING).body,
    "unknown": status_change(Status.HEALTHY, C.TIMEOUT).body,
    "audit summary": audit_summary_body(),
    "quiet audit summary": audit_summary_body(newly_failing=0, incidents=0),
    "incident": incident_body(),
    "unreachable": unreachable_body(),
    "expiring": expiring_body(),
    "planned IP missing": planned_ip_missing_alert().body,
    "unknown type": {"type": "key_rotated_by_exchange", "binding_id": "bnd_1", "exchange": "bitget", "n": 1},
    "no type": {"hello": "world"},
    "known type, odd shape": {"type": "binding_status_changed", "findings": "oops", "status": None},
    "summary, odd shape": {"type": "audit_summary", "counts": "x", "by_exchange": [1], "incidents": "no"},
    "incident, empty": {"type": "incident"},
    "empty": {},
}


@pytest.mark.parametrize("name", BODIES)
def test_every_message_type_renders_valid_block_kit(name):
    # When
    payload = blocks_for(BODIES[name], None, exchange_names=EXCHANGE_NAMES)
    # Then
    assert block_kit_problems(payload) == []
    assert payload["blocks"][0]["type"] == "header"
    assert payload["blocks"][-1]["type"] == "context"


def test_status_change_says_what_happened_and_what_to_do():
    # Given the alert the API publishes when a key starts failing
    alert = status_change(Status.HEALTHY, C.IP_NOT_WHITELISTED, C.WITHDRAW_ENABLED)
    # When
    payload = blocks_for(alert.body, alert.subject, exchange_names=EXCHANGE_NAMES)
    # Then
    assert payload["text"] == alert.subject.replace(">", "&gt;")
    assert _header(payload) == ":red_circle: Binance key vmPU...A4Ge of user u-42: healthy → failing"
    happened = _sections(payload)[0]
    assert "is now *failing*" in happened
    assert "*What to do (the key's owner):* Add 203.0.113.10 to the key's IP whitelist on Binance" in happened
    assert "1 other finding below has its own fix" in happened
    fields = _fields(payload)
    assert "*Exchange*\nBinance" in fields
    assert "*Binding*\n`bnd_01JSLACKTEST`" in fields
    assert "*User*\n`u-42`" in fields
    assert "*Status change*\nhealthy → *failing*" in fields
    findings = _sections(payload)[1:]
    assert findings[0].startswith(":red_circle: `ip_not_whitelisted` (error, for the key's owner)")
    assert "*Fix:* Edit the key on Binance (Account, API Management) and untick" in findings[1]
    assert _blocks(payload, "context")[-1]["elements"][0]["text"] == "Checked 2026-11-21T02:00:00Z"


def test_healthy_again_needs_nothing():
    payload = blocks_for(status_change(Status.FAILING).body, None, exchange_names=EXCHANGE_NAMES)
    assert "is *healthy* again" in _sections(payload)[0]
    assert "*What to do:* nothing" in _sections(payload)[0]


def test_long_finding_lists_are_cut_with_and_n_more():
    # Given a body with 25 findings
    body = status_change(Status.HEALTHY, C.IP_NOT_WHITELISTED).body
    body["findings"] = [dict(body["findings"][0], code=f"code_{i:02d}") for i in range(25)]
    # When
    payload = blocks_for(body, None, exchange_names=EXCHANGE_NAMES)
    # Then
    assert block_kit_problems(payload) == []
    assert len(_sections(payload)) == 1 + MAX_FINDINGS
    more = _blocks(payload, "context")[0]["elements"][0]["text"]
    assert more.startswith("and 15 more findings: code_10, code_11")


def test_errors_come_before_warnings_and_info():
    body = status_change(Status.HEALTHY, C.WHITESPACE_TRIMMED, C.WITHDRAW_ENABLED, C.INVALID_SECRET).body
    codes = [s.split("`")[1] for s in _sections(blocks_for(body, None, exchange_names=EXCHANGE_NAMES))[1:]]
    assert codes == ["invalid_secret", "withdraw_enabled", "whitespace_trimmed"]


def test_header_and_sections_stay_within_slack_limits():
    # Given a 128-character user id and an exchange message of 5000 characters
    alert = status_change(Status.HEALTHY, C.KEY_REJECTED, user_id="u" * 128, exchange_message="x" * 5000)
    # When
    payload = blocks_for(alert.body, alert.subject, exchange_names=EXCHANGE_NAMES)
    # Then
    assert len(_header(payload)) == HEADER_LIMIT
    assert _header(payload).endswith("…")
    assert all(len(text) <= SECTION_LIMIT for text in _sections(payload))
    assert block_kit_problems(payload) == []


def test_text_from_the_exchange_cannot_ping_or_link():
    # Given an exchange error text with Slack control sequences
    alert = status_change(
        Status.HEALTHY, C.KEY_REJECTED, exchange_message="<!channel> see <https://evil.test|here> & co"
    )
    # When
    text = all_text(blocks_for(alert.body, alert.subject, exchange_names=EXCHANGE_NAMES))
    # Then
    assert "<!channel>" not in text
    assert "<https://" not in text
    assert "&lt;!channel&gt; see &lt;https://evil.test|here&gt; &amp; co" in text


def test_only_the_body_is_rendered():
    # The binding's secret id is on the domain object but not in the body: it must not appear.
    alert = status_change(Status.HEALTHY, C.INVALID_API_KEY)
    text = all_text(blocks_for(alert.body, alert.subject, exchange_names=EXCHANGE_NAMES))
    assert "secretsmanager" not in text
    assert "grid bot" not in text  # the label is not in the body either


def test_audit_summary_points_at_incidents_first():
    # Given a run with 30 newly failing keys and 7 incidents
    payload = blocks_for(audit_summary_body(newly_failing=30, incidents=7), None, exchange_names=EXCHANGE_NAMES)
    # Then
    assert block_kit_problems(payload) == []
    assert _header(payload) == ":rotating_light: keyhealth audit: 8 failing, 10 degraded of 120 keys"
    summary = _sections(payload)[0]
    assert "checked 120 keys in 90.0s (1.33 checks/s): 100 healthy, 10 degraded, 8 failing, 2 unknown" in summary
    assert "Look at the incidents first" in summary
    assert "*Binance*\n85 healthy, 8 degraded, 6 failing, 1 unknown" in _fields(payload)
    incidents = [s for s in _sections(payload) if s.startswith(":rotating_light: *Incident on Binance*")]
    assert len(incidents) == 5
    assert any(e["text"] == "and 2 more incidents" for b in _blocks(payload, "context") for e in b["elements"])
    newly = next(s for s in _sections(payload) if s.startswith("*Newly failing (30)*"))
    assert "• Binance `bnd_0000` of user `user-0`: `ip_not_whitelisted`" in newly
    assert newly.endswith("…and 10 more keys")


def test_huge_audit_summary_stays_within_limits():
    body = audit_summary_body(newly_failing=5000, incidents=0)
    body["by_exchange"] = {f"exchange-{i}": body["counts"] for i in range(600)}
    payload = blocks_for(body, None, exchange_names=EXCHANGE_NAMES)
    assert block_kit_problems(payload) == []
    assert len(payload["blocks"]) == BLOCK_LIMIT
    assert payload["blocks"][-1]["elements"][0]["text"].startswith("and ")
    assert len(json.dumps(payload)) < 200_000


def test_quiet_audit_asks_for_nothing():
    payload = blocks_for(audit_summary_body(newly_failing=0, incidents=0), None, exchange_names=EXCHANGE_NAMES)
    assert _header(payload).startswith(":large_green_circle:")
    assert "*What to do:* Nothing" in _sections(payload)[0]


def test_incident_names_cause_share_and_the_platforms_fix():
    payload = blocks_for(incident_body(), None, exchange_names=EXCHANGE_NAMES)
    assert _header(payload) == ":rotating_light: Incident: 87 of 100 Binance keys failing with ip_not_whitelisted"
    text = _sections(payload)[0]
    assert "(87%)" in text
    assert "*Likely cause:* The egress IP changed" in text
    assert "*What to do:* Check that the egress IPs" in text
    assert "*Affected*\n87 of 100 keys (87%)" in _fields(payload)


def test_incident_with_an_unlisted_code_still_says_what_to_do():
    text = _sections(blocks_for(incident_body(code="account_restricted"), None, exchange_names=EXCHANGE_NAMES))[0]
    assert "*What to do:* Check the exchange's status page" in text


def test_a_key_not_ready_for_a_planned_ip_says_which_ip_to_add_and_by_when():
    payload = blocks_for(planned_ip_missing_alert().body, None, exchange_names=EXCHANGE_NAMES)
    text = json.dumps(payload)
    assert payload["text"] == "Bitget key vmPU...A4Ge of user u-42: not ready for a planned egress IP"
    assert "203.0.113.20 (from 2027-01-15)" in text
    assert "Before 2027-01-15, add 203.0.113.20 to the key's IP whitelist on Bitget" in text


def test_unreachable_binding_is_the_platforms_to_fix():
    payload = blocks_for(unreachable_body(), None, exchange_names=EXCHANGE_NAMES)
    assert _header(payload) == ":grey_question: BingX key abcd...wxyz of user u-7: unreachable for 3 audits"
    assert "in 3 audits in a row" in _sections(payload)[0]
    assert "*What to do (ops):*" in _sections(payload)[0]
    assert any("`egress_blocked`" in s for s in _sections(payload)[1:])


@pytest.mark.parametrize(("days", "said"), [(5, "in 5 days"), (1, "in 1 day")])
def test_expiring_trading_rights_say_when(days, said):
    payload = blocks_for(expiring_body(days_left=days), None, exchange_names=EXCHANGE_NAMES)
    assert _header(payload).endswith(f"trading rights expire {said}")
    assert "2026-11-26T00:00:00Z" in _sections(payload)[0]
    assert "renews the trading permission" in _sections(payload)[0]


def test_an_unknown_type_is_shown_as_it_came():
    # Given a type this notifier was written before
    body = {"type": "key_rotated_by_exchange", "binding_id": "bnd_1", "exchange": "bitget", "detail": "<b>"}
    # When
    payload = blocks_for(body, "keyhealth: something new", exchange_names=EXCHANGE_NAMES)
    # Then nothing is dropped
    assert payload["text"] == "keyhealth: something new"
    assert _header(payload) == ":bell: keyhealth: key_rotated_by_exchange"
    assert "*Exchange*\nBitget" in _fields(payload)
    details = _sections(payload)[-1]
    assert details.startswith("```")
    assert details.endswith("```")
    assert '"detail": "&lt;b&gt;"' in details


def test_a_known_type_with_an_unexpected_shape_falls_back_to_the_generic_layout():
    payload = blocks_for(
        {"type": "incident", "count": {"oops": 1}, "share": "most"}, None, exchange_names=EXCHANGE_NAMES
    )
    assert block_kit_problems(payload) == []


def test_incident_says_the_remedy_it_carries():
    # Given an incident whose remedy the publisher chose (newer than this notifier's table)
    body = incident_body(remedy="Call the exchange's account manager <now>.")
    # When
    text = _sections(blocks_for(body, None, exchange_names=EXCHANGE_NAMES))[0]
    # Then
    assert "*What to do:* Call the exchange's account manager &lt;now&gt;." in text


def test_a_typed_message_renders_as_its_body_does():
    body = status_change(Status.HEALTHY, C.IP_NOT_WHITELISTED).body
    assert render(from_body(body), "s", exchange_names=EXCHANGE_NAMES) == blocks_for(
        body, "s", exchange_names=EXCHANGE_NAMES
    )


def test_the_generic_layout_shows_the_body_without_the_notifiers_names():
    body = {"type": "key_rotated_by_exchange", "exchange": "bitget"}
    details = _sections(blocks_for(body, None, exchange_names=EXCHANGE_NAMES))[-1]
    assert "exchange_names" not in details
    assert "*Exchange*\nBitget" in _fields(blocks_for(body, None, exchange_names=EXCHANGE_NAMES))
