"""Tenant events, webhooks and their signature (docs/webhooks.md): pure, no I/O.

An event is what a tenant's platform is told about one of its bindings. It is built from the binding alert
ops get (the same facts, so the two never disagree) or from an unbind, stored once in the tenant's feed as
the exact JSON bytes that are signed and POSTed, and delivered at least once: a redelivery carries the same
id. Nothing here ever holds a credential: alerts carry the masked api key only.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets as random_secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from keyhealth.domain.credentials import Secret
from keyhealth.domain.ids import new_ulid
from keyhealth.domain.model import format_time

STATUS_CHANGED = "binding.status_changed"
TRADING_PERMISSION_EXPIRING = "binding.trading_permission_expiring"
UNREACHABLE = "binding.unreachable"
DELETED = "binding.deleted"
PLANNED_IP_MISSING = "binding.planned_ip_missing"
PING = "ping"
#: What a webhook can subscribe to (`events`); `ping` (POST /webhook/test) is always delivered.
SUBSCRIBABLE = (STATUS_CHANGED, TRADING_PERMISSION_EXPIRING, UNREACHABLE, DELETED, PLANNED_IP_MISSING)
EVENT_TYPES = (*SUBSCRIBABLE, PING)

#: The alert type (keyhealth.notify.model) a tenant event is made from. `credentials_unreadable` has none: an
#: undecryptable credential is the platform operator's KMS problem, not something its user can fix.
_EVENT_OF_ALERT = {
    "binding_status_changed": STATUS_CHANGED,
    "trading_permission_expiring": TRADING_PERMISSION_EXPIRING,
    "binding_unreachable": UNREACHABLE,
    "planned_ip_missing": PLANNED_IP_MISSING,
}
_BINDING_FIELDS = ("binding_id", "user_id", "exchange", "exchange_name", "api_key_masked")
_FINDING_FIELDS = ("code", "severity", "audience", "message", "remedy")
#: Per event type, what it carries besides its binding (an alert body's fields of the same names).
_FIELDS = {
    STATUS_CHANGED: ("previous_status", "status", "findings", "checked_at"),
    TRADING_PERMISSION_EXPIRING: ("expires_at", "days_left", "status"),
    UNREACHABLE: ("status", "unknown_streak", "findings", "checked_at"),
    PLANNED_IP_MISSING: ("status", "findings", "checked_at"),
}

EVENT_ID = re.compile(r"^evt_[0-9A-HJKMNP-TV-Z]{26}$")
EVENT_RETENTION = timedelta(days=30)  # how long GET /events keeps an event
SECRET_PREFIX = "whsec_"  # noqa: S105 - the prefix of a signing secret, not a secret
PREVIOUS_SECRET_GRACE = timedelta(hours=24)  # a rotated-out secret keeps signing (a second v1=) this long
SIGNATURE_HEADER = "Keyhealth-Signature"
EVENT_ID_HEADER = "Keyhealth-Event-Id"
EVENT_TYPE_HEADER = "Keyhealth-Event-Type"


def new_event_id(now: float) -> str:
    """`evt_` + a monotonic ULID: ids sort by creation, the feed's order."""
    return "evt_" + new_ulid(now)


def is_event_id(text: str) -> bool:
    return bool(EVENT_ID.match(text))


def new_signing_secret() -> Secret:
    return Secret(SECRET_PREFIX + random_secrets.token_urlsafe(32))


@dataclass(frozen=True)
class EventDraft:
    """An event before it has an id: who it is for, its type, and what it says."""

    tenant: str
    type: str
    data: dict[str, Any]


@dataclass(frozen=True)
class Event:
    """An event as stored in the feed and delivered: `body` is the JSON text, signed and sent as is."""

    id: str
    tenant: str
    type: str
    created_at: datetime
    body: str

    @classmethod
    def of(cls, draft: EventDraft, *, event_id: str, created_at: datetime) -> Event:
        payload = {"id": event_id, "type": draft.type, "created_at": format_time(created_at), **draft.data}
        return cls(event_id, draft.tenant, draft.type, created_at, json.dumps(payload, separators=(",", ":")))

    def payload(self) -> dict[str, Any]:
        return dict(json.loads(self.body))


def draft_from_alert(body: Mapping[str, Any]) -> EventDraft | None:
    """The tenant event a binding alert's body (keyhealth.notify.model) makes; None for alerts a tenant does
    not get (incidents, summaries, sweeps, undecryptable credentials) or a body without a tenant."""
    kind = _EVENT_OF_ALERT.get(str(body.get("type")))
    tenant = body.get("tenant")
    if kind is None or not isinstance(tenant, str) or not tenant:
        return None
    data = {name: body.get(name) for name in _BINDING_FIELDS}
    for name in _FIELDS[kind]:
        value = body.get(name)
        if name == "findings":
            value = [{k: f.get(k) for k in _FINDING_FIELDS} for f in value or () if isinstance(f, Mapping)]
        data[name] = value
    return EventDraft(tenant, kind, data)


def binding_deleted(
    *, tenant: str, binding_id: str, user_id: str, exchange: str, api_key_masked: str, deleted_at: datetime
) -> EventDraft:
    return EventDraft(
        tenant,
        DELETED,
        {
            "binding_id": binding_id,
            "user_id": user_id,
            "exchange": exchange,
            "api_key_masked": api_key_masked,
            "deleted_at": format_time(deleted_at),
        },
    )


def ping(tenant: str) -> EventDraft:
    return EventDraft(tenant, PING, {"message": "A test event sent by POST /webhook/test."})


# ------------------------------------------------------------------------------ webhooks
@dataclass(frozen=True)
class Webhook:
    """A tenant's webhook: where its events go and with which secret they are signed (as ciphertext only:
    the deliverer decrypts it), and how delivery has been going."""

    tenant: str
    url: str
    events: tuple[str, ...]
    created_at: datetime
    updated_at: datetime
    secret_ciphertext: bytes
    previous_secret_ciphertext: bytes | None = None
    previous_secret_expires_at: datetime | None = None
    failing_since: datetime | None = None
    last_error: str | None = None
    last_delivered_at: datetime | None = None
    dead_lettered: int = 0
    last_dead_lettered_at: datetime | None = None

    def wants(self, event_type: str) -> bool:
        return event_type == PING or event_type in self.events

    def previous_secret_valid(self, now: datetime) -> bool:
        return (
            self.previous_secret_ciphertext is not None
            and self.previous_secret_expires_at is not None
            and now < self.previous_secret_expires_at
        )

    def to_public_dict(self) -> dict[str, Any]:
        """GET /webhook's answer: never a secret, with how delivery has been going."""
        return {
            "url": self.url,
            "events": list(self.events),
            "created_at": format_time(self.created_at),
            "updated_at": format_time(self.updated_at),
            "failing_since": format_time(self.failing_since),
            "last_error": self.last_error,
            "last_delivered_at": format_time(self.last_delivered_at),
            "dead_lettered": self.dead_lettered,
            "last_dead_lettered_at": format_time(self.last_dead_lettered_at),
            "previous_secret_expires_at": format_time(self.previous_secret_expires_at),
        }


def signature_header(secrets: Sequence[Secret], timestamp: int, body: bytes) -> str:
    """`t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`, one v1 per secret (the current one
    first; during a rotation's grace the previous one too), as Stripe signs its webhooks."""
    signed = f"{timestamp}.".encode() + body
    parts = [f"t={timestamp}"]
    for secret in secrets:
        parts.append("v1=" + hmac.new(secret.reveal().encode(), signed, hashlib.sha256).hexdigest())
    return ",".join(parts)


def delivery_headers(event: Event, secrets: Sequence[Secret], timestamp: int) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        EVENT_ID_HEADER: event.id,
        EVENT_TYPE_HEADER: event.type,
        SIGNATURE_HEADER: signature_header(secrets, timestamp, event.body.encode()),
    }


# ------------------------------------------------------------------------------ delivery
RETRY_WINDOW = timedelta(hours=24)  # a delivery is retried this long after it was first queued, then dead-lettered
FIRST_RETRY_SECONDS = 30
LONGEST_RETRY_SECONDS = 3 * 3600  # well under SQS's 12-hour visibility limit


@dataclass(frozen=True)
class Delivery:
    """One event on its way to a tenant's webhook: the queue message (ids only, never the payload)."""

    tenant: str
    event_id: str
    queued_at: datetime

    def to_message(self) -> dict[str, Any]:
        return {"tenant": self.tenant, "event_id": self.event_id, "queued_at": format_time(self.queued_at)}


def retry_delay(attempt: int, jitter: float, *, queued_at: datetime, now: datetime) -> int | None:
    """Seconds until the next attempt after failed attempt `attempt` (1, 2, ...): exponential from
    FIRST_RETRY_SECONDS up to LONGEST_RETRY_SECONDS, with "equal jitter" (half fixed, half random: retries
    from one outage spread out but never come sooner than half the step). None when the retry window is
    over; the last attempt is made at the window's end."""
    left = (queued_at + RETRY_WINDOW - now).total_seconds()
    if left <= 0:
        return None
    step = min(LONGEST_RETRY_SECONDS, FIRST_RETRY_SECONDS * 2 ** max(0, attempt - 1))
    delay = step / 2 + step / 2 * min(max(jitter, 0.0), 1.0)
    return max(1, int(min(delay, left)))


@dataclass
class DeliveryCounts:
    """What one deliverer batch came to (logged and measured)."""

    delivered: int = 0
    retrying: int = 0
    dead_lettered: int = 0
    dropped: int = 0
    failed_ids: list[str] = field(default_factory=list)  # SQS message ids left on the queue
