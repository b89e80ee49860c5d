"""The webhook use cases: set, show, rotate, test and delete a tenant's webhook; read its event feed;
publish events (binding management and the audit, through `FeedPublisher`); deliver them (the deliverer).

Delivery is at least once: an event is queued by id, signed when it is sent (so that a rotated secret signs
what is still on its way), and a failed attempt is retried with exponential back-off and jitter until the
retry window (24 hours) is over; then it is dead-lettered and the webhook shows it (`dead_lettered`,
`failing_since`, `last_error`). Every attempt of one event carries the same id: receivers dedupe by it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from keyhealth.domain.credentials import Secret
from keyhealth.domain.errors import ConcurrentUpdate, StorageAdapterError, WebhookNotFound, storage_step
from keyhealth.domain.model import parse_time
from keyhealth.notify.ports import DeadLetters
from keyhealth.webhooks.model import (
    PREVIOUS_SECRET_GRACE,
    Delivery,
    DeliveryCounts,
    Event,
    EventDraft,
    Webhook,
    delivery_headers,
    is_event_id,
    new_event_id,
    new_signing_secret,
    ping,
    retry_delay,
)
from keyhealth.webhooks.ports import DeliveryQueue, EventFeed, SecretCipher, WebhookSender, WebhookStore

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------ publishing
class FeedPublisher:
    """Stores each event in its tenant's feed, then queues it for the tenant's webhook if it wants it.

    The tenant's webhook is read at most once every `cache_seconds` per container: the audit's finaliser
    publishes thousands of events for a few tenants. A webhook just set (or deleted) is therefore seen by
    other containers within that time; the webhooks API's own container forgets at once (`forget`).
    """

    def __init__(
        self,
        feed: EventFeed,
        webhooks: WebhookStore,
        queue: DeliveryQueue,
        *,
        now: Callable[[], datetime],
        clock: Callable[[], float],
        monotonic: Callable[[], float],
        cache_seconds: float = 10.0,
    ) -> None:
        self._feed, self._webhooks, self._queue = feed, webhooks, queue
        self._now, self._clock, self._monotonic = now, clock, monotonic
        self._cache_seconds = cache_seconds
        self._cache: dict[str, tuple[float, Webhook | None]] = {}
        self._lock = threading.Lock()

    def publish(self, draft: EventDraft, *, dedupe_key: str | None = None) -> Event:
        now = self._now()
        event = Event.of(draft, event_id=new_event_id(self._clock()), created_at=now)
        stored = self._feed.append(event, dedupe_key=dedupe_key)
        webhook = self._webhook(draft.tenant)
        if webhook is not None and webhook.wants(stored.type):
            self._queue.enqueue(Delivery(stored.tenant, stored.id, now))
        return stored

    def forget(self, tenant: str) -> None:
        with self._lock:
            self._cache.pop(tenant, None)

    def _webhook(self, tenant: str) -> Webhook | None:
        now = self._monotonic()
        with self._lock:
            cached = self._cache.get(tenant)
        if cached is not None and now - cached[0] < self._cache_seconds:
            return cached[1]
        webhook = self._webhooks.get(tenant)
        with self._lock:
            self._cache[tenant] = (now, webhook)
        return webhook


# ------------------------------------------------------------------------------ the API's use cases
@dataclass
class WebhookDeps:
    """What the webhooks API and the deliverer call; built by keyhealth.wiring, faked in tests."""

    feed: EventFeed
    webhooks: WebhookStore
    queue: DeliveryQueue
    cipher: SecretCipher
    sender: WebhookSender
    publisher: FeedPublisher
    now: Callable[[], datetime]
    clock: Callable[[], float]  # seconds since the epoch: the signature's t=
    jitter: Callable[[], float]
    dead_letters: DeadLetters | None = None
    concurrency: int = 10  # deliveries in flight per deliverer batch


def set_webhook(tenant: str, url: str, events: tuple[str, ...], deps: WebhookDeps) -> tuple[Webhook, Secret | None]:
    """Create the tenant's webhook (its new signing secret returned, the only time it is shown) or change
    where an existing one's events go (None: its secret is kept). The URL is vetted first (SSRF)."""
    deps.sender.vet(url)  # WebhookUrlRefused: a 400, nothing stored
    now = deps.now()
    with storage_step("webhook_write"):
        updated = deps.webhooks.update_target(tenant, url=url, events=events, updated_at=now)
        if updated is not None:
            deps.publisher.forget(tenant)
            return updated, None
        secret = new_signing_secret()
        webhook = Webhook(
            tenant=tenant,
            url=url,
            events=events,
            created_at=now,
            updated_at=now,
            secret_ciphertext=deps.cipher.encrypt(tenant, secret),
        )
        if deps.webhooks.create(webhook):
            deps.publisher.forget(tenant)
            return webhook, secret
        # Another PUT created it meanwhile: this one changes its target, and its secret is that PUT's to show.
        updated = deps.webhooks.update_target(tenant, url=url, events=events, updated_at=now)
    if updated is None:
        raise ConcurrentUpdate("the webhook was deleted meanwhile: retry")
    deps.publisher.forget(tenant)
    return updated, None


def show_webhook(tenant: str, deps: WebhookDeps) -> Webhook:
    with storage_step("webhook_read"):
        webhook = deps.webhooks.get(tenant)
    if webhook is None:
        raise WebhookNotFound("no webhook is set: PUT /webhook first")
    return webhook


def delete_webhook(tenant: str, deps: WebhookDeps) -> None:
    """Events on their way are dropped at delivery (the webhook is gone); the feed keeps them."""
    with storage_step("webhook_delete"):
        deleted = deps.webhooks.delete(tenant)
    deps.publisher.forget(tenant)
    if not deleted:
        raise WebhookNotFound("no webhook is set")


def rotate_secret(tenant: str, deps: WebhookDeps) -> tuple[Secret, datetime]:
    """A new signing secret; the one it replaces keeps signing (a second `v1=`) for PREVIOUS_SECRET_GRACE,
    so the platform can deploy the new one without rejecting what is on its way. Rotating again within
    that time drops the older one."""
    webhook = show_webhook(tenant, deps)
    secret = new_signing_secret()
    now = deps.now()
    expires_at = now + PREVIOUS_SECRET_GRACE
    with storage_step("webhook_write"):
        rotated = deps.webhooks.rotate_secret(
            tenant,
            secret_ciphertext=deps.cipher.encrypt(tenant, secret),
            replaces=webhook.secret_ciphertext,
            previous_expires_at=expires_at,
            at=now,
        )
    if not rotated:
        raise ConcurrentUpdate("the webhook changed meanwhile (another rotation or a delete): read it and retry")
    return secret, expires_at


def send_test(tenant: str, deps: WebhookDeps) -> str:
    """Queue a `ping` for the tenant's webhook now; its event id."""
    show_webhook(tenant, deps)
    deps.publisher.forget(tenant)  # the ping goes to the webhook as it is now
    with storage_step("event_publish"):
        event = deps.publisher.publish(ping(tenant))
    return event.id


def list_events(tenant: str, after: str | None, limit: int, deps: WebhookDeps) -> tuple[list[Event], bool]:
    with storage_step("event_read"):
        return deps.feed.page(tenant, after=after, limit=limit)


# ------------------------------------------------------------------------------ delivery
@dataclass(frozen=True)
class ReceivedDelivery:
    """A delivery as the queue handed it over: its message, and how many times it was received."""

    message_id: str
    receipt_handle: str
    body: Mapping[str, Any]
    receive_count: int  # 1 on the first attempt


def deliver_batch(received: Iterable[ReceivedDelivery], deps: WebhookDeps) -> DeliveryCounts:
    """Attempt each delivery once, concurrently; the counts, with the message ids to leave on the queue
    (their next attempt is set by their visibility, or they failed in a way the queue retries)."""
    items = list(received)
    counts = DeliveryCounts()
    with ThreadPoolExecutor(max_workers=max(1, min(deps.concurrency, len(items) or 1))) as pool:
        outcomes = list(pool.map(lambda item: _attempt(item, deps), items))
    for item, outcome in zip(items, outcomes, strict=True):
        if outcome == "retrying" or outcome == "error":
            counts.failed_ids.append(item.message_id)
        setattr(counts, _COUNTER[outcome], getattr(counts, _COUNTER[outcome]) + 1)
    return counts


_COUNTER = {
    "delivered": "delivered",
    "retrying": "retrying",
    "dead_lettered": "dead_lettered",
    "dropped": "dropped",
    "error": "retrying",
}


def _attempt(item: ReceivedDelivery, deps: WebhookDeps) -> str:
    try:
        return _deliver(item, deps)
    except StorageAdapterError as error:
        # AWS failed (KMS, DynamoDB): the message comes back after the queue's visibility timeout.
        logger.warning("webhook delivery could not be attempted", extra={"cause": str(error)})
        return "error"


def _deliver(item: ReceivedDelivery, deps: WebhookDeps) -> str:
    delivery = _delivery_of(item.body)
    if delivery is None:
        _dead_letter(deps, dict(item.body), reason="malformed", message_type="unknown")
        logger.error("webhook delivery message is malformed: dead-lettered", extra={"message_id": item.message_id})
        return "dead_lettered"
    context = {"event_id": delivery.event_id, "tenant": delivery.tenant, "attempt": item.receive_count}
    webhook = deps.webhooks.get(delivery.tenant)
    event = deps.feed.get(delivery.tenant, delivery.event_id) if webhook is not None else None
    if webhook is None or event is None or not webhook.wants(event.type):
        # The webhook was deleted or no longer wants this type, or the event expired: nobody to tell.
        logger.info("webhook delivery dropped", extra={**context, "webhook": webhook is not None})
        return "dropped"
    now = deps.now()
    secrets = [deps.cipher.decrypt(delivery.tenant, webhook.secret_ciphertext)]
    if webhook.previous_secret_valid(now) and webhook.previous_secret_ciphertext is not None:
        secrets.append(deps.cipher.decrypt(delivery.tenant, webhook.previous_secret_ciphertext))
    headers = delivery_headers(event, secrets, int(deps.clock()))
    outcome = deps.sender.post(webhook.url, event.body.encode(), headers)
    context.update(type=event.type, status_code=outcome.status_code, elapsed=round(outcome.elapsed_seconds, 3))
    if outcome.delivered:
        deps.webhooks.record_delivered(delivery.tenant, now)
        logger.info("webhook delivered", extra=context)
        return "delivered"
    error = outcome.error or f"http {outcome.status_code}"
    delay = retry_delay(item.receive_count, deps.jitter(), queued_at=delivery.queued_at, now=now)
    if delay is None:
        letter = {**delivery.to_message(), "type": event.type, "attempts": item.receive_count, "last_error": error}
        _dead_letter(deps, letter, reason="retry_window_over", message_type=event.type)
        deps.webhooks.record_dead_letter(delivery.tenant, now, error)
        logger.warning("webhook delivery given up: dead-lettered", extra={**context, "error": error})
        return "dead_lettered"
    deps.webhooks.record_failure(delivery.tenant, now, error)
    deps.queue.postpone(item.receipt_handle, delay)
    logger.info("webhook delivery failed: retrying", extra={**context, "error": error, "retry_in": delay})
    return "retrying"


def _delivery_of(body: Mapping[str, Any]) -> Delivery | None:
    tenant, event_id = body.get("tenant"), body.get("event_id")
    queued_at = parse_time(body.get("queued_at")) if isinstance(body.get("queued_at"), str) else None
    if not isinstance(tenant, str) or not tenant or not isinstance(event_id, str) or not is_event_id(event_id):
        return None
    if queued_at is None:
        return None
    return Delivery(tenant, event_id, queued_at)


def _dead_letter(deps: WebhookDeps, letter: dict[str, Any], *, reason: str, message_type: str) -> None:
    if deps.dead_letters is None:  # only where no dead-letter queue is configured (a test): said loudly
        logger.error("webhook delivery given up and no dead-letter queue is configured", extra={"reason": reason})
        return
    deps.dead_letters.send(letter, reason=reason, message_type=message_type)
