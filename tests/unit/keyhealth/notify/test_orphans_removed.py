"""The orphan sweep's alert (`orphans_removed`): its body survives the topic, its email and its Slack message
say what was removed, what failed and what to do, and stay within Slack's limits."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from keyhealth.notify import email
from keyhealth.notify import model as alerts
from keyhealth.notify.model import MAX_ORPHAN_IDS, OrphansRemoved, UnknownAlert, from_body
from keyhealth.notify.slack import blocks_for, render
from tests.support.slack import all_text, block_kit_problems

SWEPT = datetime(2026, 11, 21, 3, 30, tzinfo=UTC)
IDS = [f"bnd_01JD2Q9Z8X4W5V6T7S8R9P0N{n:02d}" for n in range(3)]


def alert(removed=IDS[:2], failed=IDS[2:], **options):
    return alerts.orphans_removed(
        binding_ids=removed,
        failed_binding_ids=failed,
        checked=options.pop("checked", 40),
        secret_prefix="keyhealth/prod/",
        recovery_days=7,
        swept_at=SWEPT,
        **options,
    )


def test_the_body_survives_to_body_from_body_to_body():
    published = alert()
    body = json.loads(json.loads(published.sns_message())["default"])
    message = from_body(body)
    assert type(message) is OrphansRemoved
    assert message.to_body() == body
    assert type(message).from_body(body) == message
    assert body == {
        "type": "orphans_removed",
        "count": 2,
        "failed": 1,
        "checked": 40,
        "binding_ids": IDS[:2],
        "failed_binding_ids": IDS[2:],
        "secret_prefix": "keyhealth/prod/",
        "recovery_days": 7,
        "swept_at": "2026-11-21T03:30:00Z",
        "complete": True,
    }
    assert published.attributes == {
        "type": "orphans_removed",
        "severity": "warning",
        "exchange": "all",
        "status": "sweep",
    }


def test_the_alert_counts_every_id_and_lists_the_first_ones():
    many = [f"bnd_{n:026d}" for n in range(MAX_ORPHAN_IDS + 7)]
    body = alert(removed=many, failed=many).body
    assert (body["count"], body["failed"]) == (len(many), len(many))
    assert body["binding_ids"] == many[:MAX_ORPHAN_IDS]
    assert body["failed_binding_ids"] == many[:MAX_ORPHAN_IDS]


@pytest.mark.parametrize(
    "body",
    [
        {"type": "orphans_removed", "count": "two"},
        {"type": "orphans_removed", "binding_ids": "bnd_1"},
        {"type": "orphans_removed", "binding_ids": [1, 2]},
        {"type": "orphans_removed", "complete": "yes"},
    ],
)
def test_a_body_of_the_wrong_shape_is_kept_as_it_came(body):
    message = from_body(body)
    assert isinstance(message, UnknownAlert)
    assert message.to_body() == body
    assert block_kit_problems(blocks_for(body)) == []


def test_an_older_or_partial_body_still_renders():
    body = {"type": "orphans_removed"}
    message = from_body(body)
    assert message == OrphansRemoved()
    assert email.subject(message) == "keyhealth: orphan sweep removed ? stored credentials"
    assert block_kit_problems(render(message)) == []


def test_the_email_says_what_was_removed_how_to_undo_it_and_what_failed():
    published = alert()
    assert published.subject == "keyhealth: orphan sweep removed 2 stored credentials, 1 failed"
    text = published.text
    assert "checked 40 stored credentials" in text
    assert "restore-secret --secret-id keyhealth/prod/<binding id>" in text
    assert "after 7 days" in text
    assert "orphan secret left after a failed bind" in text
    for binding_id in IDS:
        assert f"- {binding_id}" in text
    assert "1 could not be checked or removed" in text
    assert "What to do:" in text
    assert "failed part-way" not in text


def test_the_email_of_a_sweep_that_broke_off_says_so():
    assert "failed part-way" in alert(failed=[], complete=False).text


def test_the_slack_message_is_valid_and_says_the_same():
    published = alert()
    payload = blocks_for(published.body, published.subject)
    assert block_kit_problems(payload) == []
    assert payload["text"] == published.subject
    header = payload["blocks"][0]["text"]["text"]
    assert header.startswith(":broom: Orphan sweep: 2 stored credentials")
    assert header.endswith(", 1 not done")
    text = all_text(payload)
    for binding_id in IDS:
        assert binding_id in text
    assert "restore-secret" in text
    assert "*What to do:*" in text
    assert payload["blocks"][-1]["type"] == "context"


def test_a_huge_sweep_stays_within_slacks_limits_and_says_how_many_more():
    many = [f"bnd_{n:026d}" for n in range(500)]
    payload = render(from_body(alert(removed=many, failed=many).body))
    assert block_kit_problems(payload) == []
    assert "and 480 more" in all_text(payload)


def test_values_in_the_slack_message_are_escaped():
    body = {**alert().body, "binding_ids": ["<!channel>"], "secret_prefix": "<https://evil.test|x>/"}
    text = all_text(blocks_for(body))
    assert "<!channel>" not in text
    assert "<https://evil.test" not in text
