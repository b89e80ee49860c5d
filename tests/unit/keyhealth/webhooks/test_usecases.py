"""The webhook use cases on fakes (tests/support/fakes.py) and a clock that moves only when told."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import pytest

from keyhealth.domain.errors import ConcurrentUpdate, StorageUnavailable, WebhookNotFound
from keyhealth.webhooks import model
from keyhealth.webhooks.ports import SendOutcome
from keyhealth.webhooks.urls import WebhookUrlRefused
from keyhealth.webhooks.usecases import (
    FeedPublisher,
    ReceivedDelivery,
    WebhookDeps,
    delete_webhook,
    deliver_batch,
    rotate_secret,
    send_test,
    set_webhook,
)
from tests.support.clock import FakeClock
from tests.support.fakes import (
    FakeDeadLetters,
    FakeDeliveryQueue,
    FakeEventFeed,
    FakeSecretCipher,
    FakeWebhookSender,
    FakeWebhookStore,
)

TENANT, OTHER = "111111111111:role/platform", "222222222222:user/other"
URL = "https://hooks.example.com/keyhealth"


@dataclass
class World:
    deps: WebhookDeps
    clock: FakeClock
    feed: FakeEventFeed
    webhooks: FakeWebhookStore
    queue: FakeDeliveryQueue
    sender: FakeWebhookSender
    dead_letters: FakeDeadLetters
    monotonic: FakeClock

    def received(self, *, attempt: int = 1) -> list[ReceivedDelivery]:
        """What the queue would hand over: every queued delivery, received for the `attempt`-th time."""
        return [ReceivedDelivery(f"m{i}", f"r{i}", d.to_message(), attempt) for i, d in enumerate(self.queue.queued)]


@pytest.fixture
def world() -> World:
    clock, monotonic = FakeClock(), FakeClock(0.0)
    feed, webhooks, queue = FakeEventFeed(), FakeWebhookStore(), FakeDeliveryQueue()
    sender, dead = FakeWebhookSender(), FakeDeadLetters()
    publisher = FeedPublisher(feed, webhooks, queue, now=clock.datetime, clock=clock, monotonic=monotonic)
    deps = WebhookDeps(
        feed=feed,
        webhooks=webhooks,
        queue=queue,
        cipher=FakeSecretCipher(),
        sender=sender,
        publisher=publisher,
        now=clock.datetime,
        clock=clock,
        jitter=lambda: 0.5,
        dead_letters=dead,
        concurrency=1,
    )
    return World(deps, clock, feed, webhooks, queue, sender, dead, monotonic)


def test_creating_a_webhook_returns_its_secret_once_and_an_update_keeps_it(world):
    webhook, secret = set_webhook(TENANT, URL, model.SUBSCRIBABLE, world.deps)
    assert secret is not None
    assert secret.reveal().startswith("whsec_")
    assert webhook.secret_ciphertext == f"{TENANT}|{secret.reveal()}".encode()
    updated, again = set_webhook(TENANT, URL + "/v2", (model.DELETED,), world.deps)
    assert again is None
    assert (updated.url, updated.events, updated.secret_ciphertext) == (
        URL + "/v2",
        (model.DELETED,),
        webhook.secret_ciphertext,
    )


def test_a_refused_url_stores_nothing(world):
    world.sender.refuse.add(URL)
    with pytest.raises(WebhookUrlRefused):
        set_webhook(TENANT, URL, model.SUBSCRIBABLE, world.deps)
    assert world.webhooks.webhooks == {}


def test_two_puts_creating_at_once_show_one_secret(world):
    def the_other_put_creates_first() -> None:
        world.webhooks.webhooks[TENANT] = model.Webhook(
            TENANT, URL, model.SUBSCRIBABLE, world.clock.datetime(), world.clock.datetime(), b"other|whsec_first"
        )

    world.webhooks.before["create"] = the_other_put_creates_first
    webhook, secret = set_webhook(TENANT, URL + "/mine", model.SUBSCRIBABLE, world.deps)
    assert secret is None  # the other PUT's secret is the one that signs: it was shown to that caller
    assert webhook.secret_ciphertext == b"other|whsec_first"
    assert webhook.url == URL + "/mine"


def test_a_storage_failure_is_a_503_step_and_a_missing_webhook_a_404(world):
    world.webhooks.fail("update_target")
    with pytest.raises(StorageUnavailable):
        set_webhook(TENANT, URL, model.SUBSCRIBABLE, world.deps)
    world.webhooks.heal()
    for use_case in (delete_webhook, rotate_secret, send_test):
        with pytest.raises(WebhookNotFound):
            use_case(TENANT, world.deps)


def test_a_rotation_racing_another_answers_409(world):
    set_webhook(TENANT, URL, model.SUBSCRIBABLE, world.deps)

    def another_rotation() -> None:
        current = world.webhooks.webhooks[TENANT]
        world.webhooks.webhooks[TENANT] = type(current)(**{**current.__dict__, "secret_ciphertext": b"x|whsec_other"})

    world.webhooks.before["rotate_secret"] = another_rotation
    with pytest.raises(ConcurrentUpdate):
        rotate_secret(TENANT, world.deps)


def test_the_publisher_stores_every_event_and_queues_only_what_the_webhook_wants(world):
    set_webhook(TENANT, URL, (model.DELETED,), world.deps)
    publisher = world.deps.publisher
    deleted = publisher.publish(model.EventDraft(TENANT, model.DELETED, {"binding_id": "bnd_1"}))
    publisher.publish(model.EventDraft(TENANT, model.UNREACHABLE, {"binding_id": "bnd_1"}))
    publisher.publish(model.EventDraft(OTHER, model.DELETED, {"binding_id": "bnd_2"}))  # no webhook
    assert len(world.feed.events) == 3
    assert [(d.tenant, d.event_id) for d in world.queue.queued] == [(TENANT, deleted.id)]


def test_a_dedupe_key_republishes_the_first_event_under_its_id(world):
    set_webhook(TENANT, URL, model.SUBSCRIBABLE, world.deps)
    draft = model.EventDraft(TENANT, model.STATUS_CHANGED, {"binding_id": "bnd_1"})
    first = world.deps.publisher.publish(draft, dedupe_key="run-1:bnd_1:binding_status_changed")
    world.clock.now += 60  # a finaliser taking over the run, a minute later
    second = world.deps.publisher.publish(draft, dedupe_key="run-1:bnd_1:binding_status_changed")
    assert second.id == first.id
    assert len(world.feed.events) == 1
    assert [d.event_id for d in world.queue.queued] == [first.id, first.id]  # delivered again: same id


def test_the_publisher_reads_a_tenants_webhook_at_most_every_ten_seconds_unless_told(world):
    publisher = world.deps.publisher
    publisher.publish(model.ping(TENANT))
    world.webhooks.webhooks[TENANT] = model.Webhook(
        TENANT, URL, model.SUBSCRIBABLE, world.clock.datetime(), world.clock.datetime(), f"{TENANT}|s".encode()
    )  # set by another container
    publisher.publish(model.ping(TENANT))
    assert world.queue.queued == []  # cached: no webhook
    world.monotonic.now += 10
    publisher.publish(model.ping(TENANT))
    assert len(world.queue.queued) == 1


def test_a_delivery_is_signed_with_the_current_secret_and_the_previous_one_during_its_grace(world):
    _, old = set_webhook(TENANT, URL, model.SUBSCRIBABLE, world.deps)
    new, _ = rotate_secret(TENANT, world.deps)
    send_test(TENANT, world.deps)
    counts = deliver_batch(world.received(), world.deps)
    assert (counts.delivered, counts.failed_ids) == (1, [])
    url, body, headers = world.sender.posts[0]
    assert url == URL
    assert headers["Keyhealth-Signature"] == model.signature_header([new, old], int(world.clock()), body)
    assert headers["Keyhealth-Event-Type"] == "ping"
    assert headers["Content-Type"] == "application/json"
    world.clock.now += model.PREVIOUS_SECRET_GRACE.total_seconds()
    deliver_batch(world.received(), world.deps)
    assert world.sender.posts[1][2]["Keyhealth-Signature"].count("v1=") == 1


def test_a_failed_delivery_is_postponed_by_its_back_off_and_recorded(world):
    set_webhook(TENANT, URL, model.SUBSCRIBABLE, world.deps)
    send_test(TENANT, world.deps)
    world.sender.answers = [503, SendOutcome(None, "timeout after 10 s")]
    first = deliver_batch(world.received(attempt=1), world.deps)
    failed_at = world.clock.datetime()
    world.clock.now += 22
    second = deliver_batch(world.received(attempt=2), world.deps)
    assert (first.retrying, first.failed_ids, second.failed_ids) == (1, ["m0"], ["m0"])
    assert world.queue.postponed == [("r0", 22), ("r0", 45)]
    webhook = world.webhooks.webhooks[TENANT]
    assert (webhook.failing_since, webhook.last_error) == (failed_at, "timeout after 10 s")
    world.clock.now += 45
    third = deliver_batch(world.received(attempt=3), world.deps)
    assert (third.delivered, third.failed_ids) == (1, [])
    assert world.webhooks.webhooks[TENANT].failing_since is None


def test_after_the_retry_window_a_delivery_is_dead_lettered_once_and_shown(world):
    set_webhook(TENANT, URL, model.SUBSCRIBABLE, world.deps)
    event_id = send_test(TENANT, world.deps)
    world.sender.answers = [500] * 100
    attempt = 1
    while True:
        counts = deliver_batch(world.received(attempt=attempt), world.deps)
        if counts.dead_lettered:
            break
        world.clock.now += world.queue.postponed[-1][1]
        attempt += 1
    assert counts.failed_ids == []  # deleted from the queue: it is in the dead-letter queue now
    [(letter, reason, kind)] = world.dead_letters.letters
    assert (letter["event_id"], letter["attempts"], letter["last_error"], reason, kind) == (
        event_id,
        attempt,
        "http 500",
        "retry_window_over",
        "ping",
    )
    assert sum(s for _, s in world.queue.postponed) == model.RETRY_WINDOW.total_seconds()
    webhook = world.webhooks.webhooks[TENANT]
    assert (webhook.dead_lettered, webhook.last_error) == (1, "http 500")
    assert webhook.last_dead_lettered_at == world.clock.datetime()


def test_deliveries_nobody_wants_are_dropped_and_malformed_ones_dead_lettered(world):
    set_webhook(TENANT, URL, (model.DELETED,), world.deps)
    send_test(TENANT, world.deps)
    delete_webhook(TENANT, world.deps)  # deleted while the ping was queued
    received = world.received()
    received.append(ReceivedDelivery("m9", "r9", {"malformed": "not json"}, 1))
    counts = deliver_batch(received, world.deps)
    assert (counts.dropped, counts.dead_lettered, counts.failed_ids) == (1, 1, [])
    assert world.sender.posts == []
    assert world.dead_letters.letters[0][1:] == ("malformed", "unknown")


def test_an_aws_failure_leaves_the_delivery_on_the_queue_for_its_visibility_timeout(world):
    set_webhook(TENANT, URL, model.SUBSCRIBABLE, world.deps)
    send_test(TENANT, world.deps)
    world.deps.cipher.fail("decrypt")  # type: ignore[attr-defined]
    counts = deliver_batch(world.received(), world.deps)
    assert counts.failed_ids == ["m0"]
    assert world.queue.postponed == []
    assert world.sender.posts == []


def test_the_grace_of_a_rotation_is_a_day(world):
    set_webhook(TENANT, URL, model.SUBSCRIBABLE, world.deps)
    _, expires = rotate_secret(TENANT, world.deps)
    assert expires == world.clock.datetime() + timedelta(hours=24)
