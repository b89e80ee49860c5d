"""The canary: credentials that carry a marker go through bind, a status change (verify), unbind and a
webhook that fails before it takes the events; the marker (and the webhook's signing secret) is then looked
for in every delivery, every event of the feed, every log line and every queue message."""

from __future__ import annotations

import json

import pytest

from functions.unbind import app as unbind_function
from functions.verify import app as verify_function
from tests.integration.api.test_canary import CANARY, add_canary_key, captured_logs  # noqa: F401 - fixture
from tests.support.api import created, delete_event, verify_event


@pytest.mark.parametrize("exchange", ["bitget", "binance"])
def test_no_credential_in_any_delivery_event_log_or_queue_message(hooks, captured_logs, monkeypatch, exchange):  # noqa: F811
    stack, receiver = hooks.stack, hooks.receiver
    sent: list[str] = []
    real_send = stack.sqs.send_message

    def recording_send(**params):
        sent.append(json.dumps(params))
        return real_send(**params)

    monkeypatch.setattr(stack.sqs, "send_message", recording_send)
    secret = hooks.register()
    receiver.script = [500]  # the first delivery fails: a retry, a redelivered message
    key = add_canary_key(stack, exchange, 41)
    binding = created(stack, key)
    sim = stack.exchanges.simulators[exchange]
    if exchange == "binance":
        sim.keys[key.api_key].ip_whitelist = ("203.0.113.9",)
    else:
        sim.keys[key.api_key].ips = ("203.0.113.9",)
    assert stack.invoke(verify_function, verify_event(binding["binding_id"])).json["binding"]["status"] == "failing"
    assert stack.invoke(unbind_function, delete_event(binding["binding_id"])).status == 204
    hooks.call("POST", "/webhook/test")
    hooks.deliveries.drain()

    types = sorted({e["type"] for e in receiver.events()})
    assert types == ["binding.deleted", "binding.status_changed", "ping"]
    assert len(receiver.requests) == 4  # one retried
    places = {
        "deliveries": "\n".join(repr(r.headers) + r.body.decode() for r in receiver.requests),
        "feed": hooks.call("GET", "/events").text,
        "webhook": hooks.call("GET", "/webhook").text,
        "queue messages": "\n".join(sent),
        **captured_logs(),
    }
    assert any(r.event.get("api_key_masked") for r in receiver.requests)
    for place, text in places.items():
        assert CANARY not in text, place
        assert key.api_key not in text, place  # masked only
        assert secret not in text, place  # the signing secret is shown once, in PUT /webhook's answer
