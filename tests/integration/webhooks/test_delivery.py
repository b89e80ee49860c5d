"""Webhook delivery end to end: API Gateway events into the webhooks and binding handlers, moto for DynamoDB,
SQS and KMS, the real deliverer handler on the delivery queue and a platform's receiver on loopback."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, date, datetime

import pytest

from functions.bind import app as bind_function
from functions.unbind import app as unbind_function
from functions.verify import app as verify_function
from keyhealth import wiring
from keyhealth.domain.model import PlannedEgressIp
from keyhealth.webhooks.model import EVENT_TYPES, RETRY_WINDOW
from tests.integration.audit.conftest import Audit, audit  # noqa: F401 - the audit harness, on this stack
from tests.support.api import bind_body, bind_event, created, delete_event, rotate_body, rotate_event, verify_event
from tests.support.events import PLATFORM_A, PLATFORM_B
from tests.support.webhooks import CLOSE, signature_valid

PLANNED_IP = "203.0.113.20"


def use_settings(**changes) -> None:
    current = wiring.container()
    wiring.use(wiring.Container(replace(current.environment, settings=replace(current.settings, **changes))))


def feed(hooks, *, principal: str = PLATFORM_A, **query) -> list[dict]:
    answer = hooks.call("GET", "/events", query={k: str(v) for k, v in query.items()} or None, principal=principal)
    assert answer.status == 200, answer
    return answer.json["items"]


def test_a_receiver_that_checks_signatures_gets_each_event_type_once(hooks, audit: Audit, monkeypatch):  # noqa: F811
    stack, receiver = hooks.stack, hooks.receiver
    secret = hooks.register()
    ex = stack.exchanges
    to_fail = created(stack, ex.key("binance", "healthy-ed25519"), scopes=["spot"])
    expiring = created(stack, ex.key("binance", "trading-expiring"))
    planned = created(stack, ex.key("bitget", "withdraw-enabled"))  # degraded already: no status change
    unreachable_key = ex.key("bingx", "healthy spot and futures")
    unreachable = created(stack, unreachable_key)

    # Verify: the key lost our IP on Binance -> binding.status_changed, as it happens.
    ex.simulators["binance"].keys[ex.key("binance", "healthy-ed25519").api_key].ip_whitelist = ("203.0.113.9",)
    assert stack.invoke(verify_function, verify_event(to_fail["binding_id"])).json["binding"]["status"] == "failing"
    # Three audits in a row cannot reach BingX for one key -> binding.unreachable; the first reminds of expiry.
    sim = ex.simulators["bingx"]
    answer = type(sim).__call__

    def drop_one_key(self, request):
        return None if request.header("X-BX-APIKEY") == unreachable_key.api_key else answer(self, request)

    monkeypatch.setattr(type(sim), "__call__", drop_one_key)
    for run in ("r1", "r2", "r3"):
        audit.run(run)
    # The platform announces an egress IP the Bitget key lacks -> binding.planned_ip_missing on the next check.
    use_settings(planned_egress_ips=(PlannedEgressIp(PLANNED_IP, date(2027, 1, 15)),))
    hooks.clock.skip(5)  # past Bitget's per-account second, which the last audit's check used
    checked = stack.invoke(verify_function, verify_event(planned["binding_id"])).json["report"]
    assert sorted(f["code"] for f in checked["findings"]) == ["planned_ip_missing", "withdraw_enabled"]
    assert stack.invoke(unbind_function, delete_event(to_fail["binding_id"])).status == 204
    assert hooks.call("POST", "/webhook/test").status == 202

    hooks.deliveries.drain()

    events = receiver.events()
    assert sorted(e["type"] for e in events) == sorted(EVENT_TYPES)  # each type, once
    assert len({r.event_id for r in receiver.requests}) == len(receiver.requests)
    now = hooks.clock()
    for request in receiver.requests:
        assert request.headers["content-type"] == "application/json"
        assert request.headers["keyhealth-event-type"] == request.event["type"]
        assert request.event_id == request.event["id"]
        assert signature_valid(secret, request.headers["keyhealth-signature"], request.body, now=now)
        assert not signature_valid("whsec_wrong", request.headers["keyhealth-signature"], request.body, now=now)
        assert request.path == "/hooks/keyhealth?token=platform-side"
    by_type = {e["type"]: e for e in events}
    changed = by_type["binding.status_changed"]
    assert (changed["binding_id"], changed["previous_status"], changed["status"]) == (
        to_fail["binding_id"],
        "healthy",
        "failing",
    )
    assert changed["findings"][0]["code"] == "key_rejected"
    assert set(changed["findings"][0]) == {"code", "severity", "audience", "message", "remedy"}
    assert changed["api_key_masked"] == to_fail["api_key_masked"]
    assert changed["user_id"] == "u-42"
    assert changed["exchange"] == "binance"
    assert by_type["binding.trading_permission_expiring"]["binding_id"] == expiring["binding_id"]
    assert by_type["binding.trading_permission_expiring"]["days_left"] == 10
    assert by_type["binding.planned_ip_missing"]["binding_id"] == planned["binding_id"]
    assert PLANNED_IP in by_type["binding.planned_ip_missing"]["findings"][0]["remedy"]
    assert by_type["binding.unreachable"]["binding_id"] == unreachable["binding_id"]
    assert by_type["binding.deleted"]["binding_id"] == to_fail["binding_id"]
    # The feed holds the very same payloads, oldest first.
    assert feed(hooks) == sorted(events, key=lambda e: e["id"])
    assert hooks.call("GET", "/webhook").json["last_delivered_at"] is not None


def test_a_rotation_that_changes_the_status_tells_the_platform_at_once(hooks):
    stack = hooks.stack
    hooks.register(events=["binding.status_changed"])
    key = stack.exchanges.key("binance", "healthy")
    binding = created(stack, key, scopes=["spot"])
    stack.exchanges.simulators["binance"].keys[key.api_key].ip_whitelist = ("203.0.113.9",)
    assert stack.invoke(verify_function, verify_event(binding["binding_id"])).json["binding"]["status"] == "failing"
    stack.exchanges.simulators["binance"].keys[key.api_key].ip_whitelist = (stack.container.settings.egress_ips[0],)
    rotated = stack.invoke(rotate_function(), rotate_event(binding["binding_id"], rotate_body(key)))
    assert rotated.status == 200, rotated
    hooks.deliveries.drain()
    statuses = [(e["previous_status"], e["status"]) for e in hooks.receiver.events()]
    assert statuses == [("healthy", "failing"), ("failing", "healthy")]


def rotate_function():
    return bind_function  # PUT /bindings/{id}/credentials is the bind function's


def test_a_receiver_failing_three_times_gets_the_event_again_with_the_same_id_then_no_more(hooks):
    receiver = hooks.receiver
    secret = hooks.register()
    receiver.script = [500, 500, 500, 200]
    event_id = hooks.call("POST", "/webhook/test").json["event_id"]

    hooks.deliveries.drain()

    assert [r.event_id for r in receiver.requests] == [event_id] * 4
    assert all(r.body == receiver.requests[0].body for r in receiver.requests)
    assert signature_valid(
        secret, receiver.requests[-1].headers["keyhealth-signature"], receiver.requests[-1].body, now=hooks.clock()
    )
    # Back-off with jitter 0.5: three-quarters of 30 s, doubling.
    assert hooks.deliveries.backoffs == [22, 45, 90]
    assert hooks.deliveries.waiting() == 0
    webhook = hooks.call("GET", "/webhook").json
    assert webhook["failing_since"] is None  # delivered since
    assert webhook["last_error"] is None
    assert webhook["dead_lettered"] == 0


def test_a_receiver_that_never_answers_ends_in_the_dead_letter_queue_after_a_day_and_the_webhook_says_so(hooks):
    receiver = hooks.receiver
    hooks.register()
    receiver.default = CLOSE  # takes the connection and drops it, every time
    started = datetime.fromtimestamp(hooks.clock(), UTC).replace(microsecond=0)
    event_id = hooks.call("POST", "/webhook/test").json["event_id"]

    rounds = hooks.deliveries.drain()

    # A day of back-off (less the real seconds the test took: the shared clock is real time plus what is skipped).
    assert RETRY_WINDOW.total_seconds() - 30 <= hooks.deliveries.skipped <= RETRY_WINDOW.total_seconds()
    assert len(receiver.requests) == rounds
    assert {r.event_id for r in receiver.requests} == {event_id}
    [letter] = hooks.deliveries.dead_letters()
    assert letter["body"]["event_id"] == event_id
    assert letter["body"]["type"] == "ping"
    assert letter["body"]["attempts"] == rounds
    assert letter["attributes"] == {"reason": "retry_window_over", "type": "ping"}
    webhook = hooks.call("GET", "/webhook").json
    assert webhook["failing_since"] == started.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert webhook["last_error"] == "connection closed without a valid http answer"
    assert webhook["dead_lettered"] == 1
    assert webhook["last_dead_lettered_at"] is not None
    # Delivery works again: the next event goes out and the webhook is healthy again.
    receiver.default = 200
    hooks.call("POST", "/webhook/test")
    hooks.deliveries.drain()
    assert hooks.call("GET", "/webhook").json["failing_since"] is None


def test_tenant_a_never_receives_tenant_bs_events(hooks, receiver_b):
    stack = hooks.stack
    hooks.register(principal=PLATFORM_A)
    hooks.register(receiver_b.url, principal=PLATFORM_B)
    key = stack.exchanges.key("binance", "healthy")
    response = stack.invoke(bind_function, bind_event(bind_body(key, scopes=["spot"]), principal=PLATFORM_B))
    binding_b = response.json["binding"]
    assert stack.invoke(unbind_function, delete_event(binding_b["binding_id"], principal=PLATFORM_B)).status == 204
    hooks.call("POST", "/webhook/test", principal=PLATFORM_A)

    hooks.deliveries.drain()

    assert [e["type"] for e in hooks.receiver.events()] == ["ping"]
    assert [(e["type"], e["binding_id"]) for e in receiver_b.events()] == [("binding.deleted", binding_b["binding_id"])]
    assert [e["type"] for e in feed(hooks, principal=PLATFORM_A)] == ["ping"]
    assert [e["type"] for e in feed(hooks, principal=PLATFORM_B)] == ["binding.deleted"]
    # B's webhook is B's: A changing or deleting its own leaves B's as it was.
    assert hooks.call("DELETE", "/webhook", principal=PLATFORM_A).status == 204
    assert hooks.call("GET", "/webhook", principal=PLATFORM_A).status == 404
    assert hooks.call("GET", "/webhook", principal=PLATFORM_B).json["url"] == receiver_b.url


@pytest.fixture
def receiver_b():
    from tests.support.webhooks import start_receiver

    receiver = start_receiver()
    yield receiver
    receiver.server.stop()


def test_the_feed_replays_in_order_and_pages_by_the_last_id(hooks):
    hooks.register()
    ids = [hooks.call("POST", "/webhook/test").json["event_id"] for _ in range(7)]
    assert ids == sorted(ids)

    first = hooks.call("GET", "/events", query={"limit": "3"}).json
    assert [e["id"] for e in first["items"]] == ids[:3]
    assert first["has_more"] is True
    second = hooks.call("GET", "/events", query={"limit": "3", "after": ids[2]}).json
    assert [e["id"] for e in second["items"]] == ids[3:6]
    last = hooks.call("GET", "/events", query={"limit": "3", "after": ids[5]}).json
    assert ([e["id"] for e in last["items"]], last["has_more"]) == ([ids[6]], False)
    assert hooks.call("GET", "/events", query={"after": ids[6]}).json == {"items": [], "has_more": False}
    # Replay: the feed's payload is byte for byte what the webhook got.
    hooks.deliveries.drain()
    delivered = sorted((json.loads(r.body) for r in hooks.receiver.requests), key=lambda e: e["id"])
    assert delivered == first["items"] + second["items"] + last["items"]  # a batch goes out in parallel
    bad = hooks.call("GET", "/events", query={"after": "not-an-event-id"})
    assert (bad.status, bad.json["error"]["code"]) == (400, "invalid_request")


def test_events_older_than_thirty_days_are_not_listed(hooks):
    hooks.register()
    old = hooks.call("POST", "/webhook/test").json["event_id"]
    hooks.clock.skip(31 * 86400)
    new = hooks.call("POST", "/webhook/test").json["event_id"]
    assert [e["id"] for e in feed(hooks)] == [new]
    assert old < new


def test_a_rotated_secret_signs_beside_the_new_one_for_a_day(hooks):
    receiver = hooks.receiver
    old = hooks.register()
    rotated = hooks.call("POST", "/webhook/secret")
    assert rotated.status == 200, rotated
    new = rotated.json["secret"]
    assert new.startswith("whsec_")
    assert new != old
    hooks.call("POST", "/webhook/test")
    hooks.deliveries.drain()
    header, body = receiver.requests[-1].headers["keyhealth-signature"], receiver.requests[-1].body
    assert header.count("v1=") == 2
    assert signature_valid(new, header, body, now=hooks.clock())
    assert signature_valid(old, header, body, now=hooks.clock())
    hooks.clock.skip(24 * 3600 + 1)
    hooks.call("POST", "/webhook/test")
    hooks.deliveries.drain()
    header, body = receiver.requests[-1].headers["keyhealth-signature"], receiver.requests[-1].body
    assert header.count("v1=") == 1
    assert signature_valid(new, header, body, now=hooks.clock())
    assert not signature_valid(old, header, body, now=hooks.clock())


def test_a_webhook_shows_no_secret_keeps_it_on_update_and_filters_event_types(hooks):
    secret = hooks.register(events=["binding.deleted"])
    shown = hooks.call("GET", "/webhook")
    assert shown.status == 200
    assert secret not in shown.text
    assert "secret" not in shown.json
    assert shown.json["events"] == ["binding.deleted"]
    again = hooks.call("PUT", "/webhook", body={"url": hooks.receiver.url})
    assert again.status == 200
    assert "secret" not in again.json  # kept: shown only when created
    assert again.json["events"] == list(EVENT_TYPES[:-1])
    hooks.call("PUT", "/webhook", body={"url": hooks.receiver.url, "events": ["binding.unreachable"]})
    stack = hooks.stack
    binding = created(stack, stack.exchanges.key("binance", "healthy"), scopes=["spot"])
    stack.invoke(unbind_function, delete_event(binding["binding_id"]))
    hooks.call("POST", "/webhook/test")
    hooks.deliveries.drain()
    assert [e["type"] for e in hooks.receiver.events()] == ["ping"]  # binding.deleted is not subscribed
    assert [e["type"] for e in feed(hooks)] == ["binding.deleted", "ping"]  # the feed keeps every event
    # The secret still verifies: an update kept it.
    request = hooks.receiver.requests[-1]
    assert signature_valid(secret, request.headers["keyhealth-signature"], request.body, now=hooks.clock())


def test_webhook_routes_without_a_webhook_answer_404_and_bad_bodies_400(hooks):
    for method, path in (
        ("GET", "/webhook"),
        ("DELETE", "/webhook"),
        ("POST", "/webhook/secret"),
        ("POST", "/webhook/test"),
    ):
        answer = hooks.call(method, path)
        assert (answer.status, answer.json["error"]["code"]) == (404, "webhook_not_found"), (method, path)
    for body in (
        {"url": hooks.receiver.url, "events": ["binding.everything"]},
        {"url": hooks.receiver.url, "events": []},
        {"url": hooks.receiver.url, "events": ["binding.deleted", "binding.deleted"]},
        {"url": hooks.receiver.url, "extra": 1},
        {"events": ["binding.deleted"]},
    ):
        answer = hooks.call("PUT", "/webhook", body=body)
        assert (answer.status, answer.json["error"]["code"]) == (400, "invalid_request"), body
    assert hooks.call("GET", "/webhook").status == 404  # nothing was stored
    assert feed(hooks) == []
