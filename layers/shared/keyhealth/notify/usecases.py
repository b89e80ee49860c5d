"""Relays one alert-topic message to Slack; what Slack does not take goes to a dead-letter queue.

The use case behind the Slack notifier function. Its collaborators come in as parameters (the webhook
poster, the dead letters), so tests pass fakes; nothing here imports boto3 or httpx.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from keyhealth.domain.credentials import Secret
from keyhealth.domain.model import format_time, utc_now
from keyhealth.notify.model import AlertMessage, from_body
from keyhealth.notify.ports import DeadLetters, Delivery, WebhookPoster
from keyhealth.notify.slack import render


@dataclass(frozen=True)
class TopicMessage:
    """One SNS message as the topic delivered it: kept verbatim so a dead letter loses nothing."""

    message: str
    subject: str | None = None
    attributes: dict[str, str] = field(default_factory=dict)
    message_id: str | None = None
    topic_arn: str | None = None
    timestamp: str | None = None

    @classmethod
    def from_sns_record(cls, record: dict[str, Any]) -> TopicMessage:
        sns = record.get("Sns") or {}
        attributes = {
            str(name): str(value.get("Value")) if isinstance(value, dict) else str(value)
            for name, value in (sns.get("MessageAttributes") or {}).items()
        }
        return cls(
            message=str(sns.get("Message") or ""),
            subject=sns.get("Subject") or None,
            attributes=attributes,
            message_id=sns.get("MessageId"),
            topic_arn=sns.get("TopicArn"),
            timestamp=sns.get("Timestamp"),
        )

    def body(self) -> dict[str, Any]:
        """The JSON body; a message that is not a JSON object is still shown, as text."""
        try:
            body = json.loads(self.message)
        except ValueError:
            body = None
        if isinstance(body, dict):
            return body
        return {"type": self.attributes.get("type") or "unknown", "message": self.message}

    def alert(self) -> AlertMessage:
        """The typed message; one this version cannot read is an `UnknownAlert`, shown as it came."""
        return from_body(self.body())


class Undelivered(Exception):
    """Slack did not take a message and there is no dead-letter queue to keep it: the invocation must fail."""

    def __init__(self, delivery: Delivery) -> None:
        super().__init__(f"Slack did not take the message ({delivery.reason}, status {delivery.status_code})")
        self.delivery = delivery


def dead_letter(message: TopicMessage, delivery: Delivery) -> dict[str, Any]:
    """Everything needed to understand the failure and to re-publish the message as it was."""
    return {
        "reason": delivery.reason,
        "status_code": delivery.status_code,
        "error": delivery.error,
        "attempts": delivery.attempts,
        "failed_at": format_time(utc_now()),
        "sns": {
            "message_id": message.message_id,
            "topic_arn": message.topic_arn,
            "timestamp": message.timestamp,
            "subject": message.subject,
            "message": message.message,
            "message_attributes": message.attributes,
        },
    }


def relay(
    message: TopicMessage,
    *,
    url: Secret,
    webhook: WebhookPoster,
    dead_letters: DeadLetters | None,
    deadline: float,
    exchange_names: Mapping[str, str] | None = None,
) -> Delivery:
    """Post the message's Block Kit rendering; dead-letter it if Slack refuses it or retries run out."""
    payload = render(message.alert(), message.subject, exchange_names=exchange_names)
    delivery = webhook.post(url, payload, deadline=deadline)
    if delivery.delivered:
        return delivery
    if dead_letters is None:
        raise Undelivered(delivery)
    dead_letters.send(
        dead_letter(message, delivery),
        reason=delivery.reason,
        message_type=message.attributes.get("type") or str(message.body().get("type") or "unknown"),
    )
    return delivery
