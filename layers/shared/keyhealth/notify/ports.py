"""What the notify context needs from the outside: somewhere to publish alerts (the SNS topic),
a poster for Slack's incoming webhook, and a durable place for what Slack did not take."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from keyhealth.domain.credentials import Secret
from keyhealth.notify.model import Alert


class AlertPublisher(Protocol):
    def publish(self, alert: Alert) -> None: ...


@dataclass(frozen=True)
class Delivery:
    delivered: bool
    attempts: int
    reason: str  # delivered | refused | retries_exhausted | deadline
    status_code: int | None = None  # Slack's last answer (None: no answer, see error)
    error: str | None = None  # Slack's error text, or the transport failure's kind (ConnectTimeout...)
    waits: tuple[float, ...] = field(default=())

    @property
    def webhook_gone(self) -> bool:
        """Slack says the webhook was revoked or its channel removed: the secret may have been rotated."""
        return self.status_code in (403, 404, 410)


class WebhookPoster(Protocol):
    def post(self, url: Secret, payload: dict[str, Any], *, deadline: float = ...) -> Delivery: ...


class DeadLetters(Protocol):
    def send(self, letter: dict[str, Any], *, reason: str, message_type: str) -> None:
        """Store the letter durably, or raise."""
