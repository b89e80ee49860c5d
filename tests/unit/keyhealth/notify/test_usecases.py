"""The relay use case with fakes for its ports: what Slack takes is posted once, what it does not take is
dead-lettered verbatim, and without a dead-letter queue the invocation fails."""

from __future__ import annotations

import json
from typing import Any

import pytest

from keyhealth.domain.credentials import Secret
from keyhealth.domain.model import FindingCode, Status
from keyhealth.notify.model import StatusChanged, UnknownAlert
from keyhealth.notify.ports import Delivery
from keyhealth.notify.usecases import TopicMessage, Undelivered, relay
from tests.support.slack import block_kit_problems, status_change

URL = Secret("https://hooks.slack.com/services/T000/B000/secretsecretsecret")
ALERT = status_change(Status.HEALTHY, FindingCode.IP_NOT_WHITELISTED)


class FakeWebhook:
    def __init__(self, delivery: Delivery) -> None:
        self.delivery = delivery
        self.posted: list[dict[str, Any]] = []

    def post(self, url: Secret, payload: dict[str, Any], *, deadline: float = 0.0) -> Delivery:
        assert url == URL
        self.posted.append(payload)
        return self.delivery


class FakeDeadLetters:
    def __init__(self) -> None:
        self.letters: list[tuple[dict[str, Any], str, str]] = []

    def send(self, letter: dict[str, Any], *, reason: str, message_type: str) -> None:
        self.letters.append((letter, reason, message_type))


def record(message: str, *, subject: str | None = "keyhealth: subject", kind: str | None = None) -> dict[str, Any]:
    attributes = {"type": {"Type": "String", "Value": kind}} if kind else {}
    return {
        "EventSource": "aws:sns",
        "Sns": {
            "MessageId": "m-1",
            "TopicArn": "arn:aws:sns:eu-west-1:123456789012:keyhealth-alerts",
            "Subject": subject,
            "Message": message,
            "Timestamp": "2026-11-21T02:00:01.000Z",
            "MessageAttributes": attributes,
        },
    }


def test_a_topic_message_reads_as_its_typed_alert():
    message = TopicMessage.from_sns_record(record(json.dumps(ALERT.body), kind="binding_status_changed"))
    assert isinstance(message.alert(), StatusChanged)
    assert message.alert().to_body() == ALERT.body
    assert message.attributes == {"type": "binding_status_changed"}


def test_a_message_that_is_not_json_is_still_shown_as_text():
    message = TopicMessage.from_sns_record(record("disk full", kind="alarm"))
    alert = message.alert()
    assert isinstance(alert, UnknownAlert)
    assert alert.body == {"type": "alarm", "message": "disk full"}


def test_a_delivered_message_is_posted_once_and_not_dead_lettered():
    webhook, dead_letters = FakeWebhook(Delivery(True, 1, "delivered", 200)), FakeDeadLetters()
    message = TopicMessage.from_sns_record(record(json.dumps(ALERT.body)))
    delivery = relay(message, url=URL, webhook=webhook, dead_letters=dead_letters, deadline=10.0)
    assert delivery.delivered
    [payload] = webhook.posted
    assert block_kit_problems(payload) == []
    assert payload["text"] == "keyhealth: subject"
    assert dead_letters.letters == []


@pytest.mark.parametrize(
    ("message", "kind", "expected_type"),
    [
        (json.dumps(ALERT.body), "binding_status_changed", "binding_status_changed"),
        (json.dumps({"type": "incident", "count": "many"}), None, "incident"),  # malformed: generic layout
        ("not json", None, "unknown"),
    ],
)
def test_what_slack_refuses_is_dead_lettered_as_it_came(message, kind, expected_type):
    webhook, dead_letters = FakeWebhook(Delivery(False, 1, "refused", 400, "invalid_blocks")), FakeDeadLetters()
    topic_message = TopicMessage.from_sns_record(record(message, kind=kind))
    delivery = relay(topic_message, url=URL, webhook=webhook, dead_letters=dead_letters, deadline=10.0)
    assert not delivery.delivered
    assert block_kit_problems(webhook.posted[0]) == []
    [(letter, reason, message_type)] = dead_letters.letters
    assert (reason, message_type) == ("refused", expected_type)
    assert (letter["reason"], letter["status_code"], letter["error"], letter["attempts"]) == (
        "refused",
        400,
        "invalid_blocks",
        1,
    )
    assert letter["sns"]["message"] == message
    assert letter["sns"]["message_id"] == "m-1"


def test_without_a_dead_letter_queue_an_undelivered_message_raises():
    webhook = FakeWebhook(Delivery(False, 5, "retries_exhausted", 503))
    message = TopicMessage.from_sns_record(record(json.dumps(ALERT.body)))
    with pytest.raises(Undelivered) as raised:
        relay(message, url=URL, webhook=webhook, dead_letters=None, deadline=10.0)
    assert raised.value.delivery.reason == "retries_exhausted"
