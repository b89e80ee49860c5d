"""What the webhook use cases need from the outside: the event feed and webhook store (DynamoDB),
the delivery queue (SQS), the signing-secret cipher (KMS) and an SSRF-safe HTTP sender.
Implementations live in keyhealth.adapters, fakes in tests/support; keyhealth.wiring chooses."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from keyhealth.domain.credentials import Secret
from keyhealth.webhooks.model import Delivery, Event, EventDraft, Webhook


@dataclass(frozen=True)
class SendOutcome:
    """What one POST to a platform's webhook URL came to.

    `error` is short and safe to store and show (`GET /webhook`'s `last_error`): it never holds the URL's
    path or query (a platform may put a token there), the request body or the answer's body.
    """

    status_code: int | None  # the receiver's HTTP status; None: no answer (refused, timeout, connection...)
    error: str | None = None  # None when delivered; else e.g. "http 500", "timeout", "refused: 10.0.0.1 is private"
    elapsed_seconds: float = 0.0

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


class WebhookSender(Protocol):
    def vet(self, url: str) -> None:
        """Refuse (`WebhookUrlRefused`) a URL that may not be called: its syntax or scheme, or an address it
        resolves to that is not public. PUT /webhook calls it; `post` does the same again."""

    def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> SendOutcome:
        """POST `body` once: resolved and vetted again (DNS rebinding), pinned to the vetted address, no
        redirect followed, at most 1 KiB of the answer read, within the deadline. Never raises for
        anything the receiver or the network does: the outcome says what happened."""


class EventFeed(Protocol):
    """Each tenant's events, kept EVENT_RETENTION, in id order."""

    def append(self, event: Event, *, dedupe_key: str | None = None) -> Event:
        """Store `event`; with a `dedupe_key` already used (a finaliser that took over a run publishes its
        alerts again), store nothing and return the event stored then, so that it keeps its id."""

    def get(self, tenant: str, event_id: str) -> Event | None: ...

    def page(self, tenant: str, *, after: str | None, limit: int) -> tuple[list[Event], bool]:
        """Up to `limit` events after `after` (None: the oldest kept), oldest first, and whether more follow."""


class WebhookStore(Protocol):
    def get(self, tenant: str) -> Webhook | None: ...

    def create(self, webhook: Webhook) -> bool:
        """Store a new webhook; False (nothing written) if the tenant has one."""

    def update_target(self, tenant: str, *, url: str, events: tuple[str, ...], updated_at: datetime) -> Webhook | None:
        """Change where events go, keeping the secret and health; None if the tenant has no webhook."""

    def rotate_secret(
        self, tenant: str, *, secret_ciphertext: bytes, replaces: bytes, previous_expires_at: datetime, at: datetime
    ) -> bool:
        """Make `secret_ciphertext` current and `replaces` (the current one, as read) the previous one;
        False if the webhook went or its secret changed meanwhile."""

    def delete(self, tenant: str) -> bool: ...

    def record_delivered(self, tenant: str, at: datetime) -> None:
        """Delivery works: clears failing_since and last_error (nothing if the webhook went)."""

    def record_failure(self, tenant: str, at: datetime, error: str) -> None:
        """Keeps the first failure's time in failing_since and the latest error."""

    def record_dead_letter(self, tenant: str, at: datetime, error: str) -> None: ...


class DeliveryQueue(Protocol):
    def enqueue(self, delivery: Delivery) -> None: ...

    def postpone(self, receipt_handle: str, seconds: int) -> None:
        """Make a received delivery visible again in `seconds` (its next attempt)."""


class SecretCipher(Protocol):
    """Signing secrets are stored as ciphertext bound to their tenant (KMS encryption context)."""

    def encrypt(self, tenant: str, secret: Secret) -> bytes: ...

    def decrypt(self, tenant: str, ciphertext: bytes) -> Secret: ...


class EventPublisher(Protocol):
    """What binding management and the audit tell tenants through (keyhealth.webhooks.usecases.FeedPublisher)."""

    def publish(self, draft: EventDraft, *, dedupe_key: str | None = None) -> Event | None:
        """Store the event in the tenant's feed and queue it for the tenant's webhook if it wants it (the
        event as stored; None: told nobody); raises `StorageAdapterError` if it could not be stored or queued."""


class NoEvents:
    """A publisher that tells nobody (tests and tools that do not exercise webhooks)."""

    def publish(self, draft: EventDraft, *, dedupe_key: str | None = None) -> Event | None:
        return None
