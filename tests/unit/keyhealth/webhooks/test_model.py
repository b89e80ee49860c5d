"""Tenant events, the signature and the retry schedule (keyhealth.webhooks.model)."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta

import pytest

from keyhealth.domain.credentials import Secret
from keyhealth.domain.model import FindingCode, Status
from keyhealth.exchanges.registry import Exchange, spec
from keyhealth.notify import model as alerts
from keyhealth.webhooks import model
from tests.support.slack import binding, report, status_change, unreachable_alert

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def test_a_status_change_alert_makes_the_tenants_status_changed_event_with_findings_but_no_exchange_detail():
    alert = status_change(Status.HEALTHY, FindingCode.IP_NOT_WHITELISTED, exchange_message="Invalid API-key, IP")
    draft = model.draft_from_alert(alert.body)
    assert draft is not None
    assert draft.tenant == "111111111111:role/platform-backend"
    assert draft.type == model.STATUS_CHANGED
    assert draft.data["previous_status"] == "healthy"
    assert draft.data["status"] == "failing"
    assert draft.data["binding_id"] == "bnd_01JSLACKTEST"
    assert draft.data["api_key_masked"] == "vmPU...A4Ge"
    (finding,) = draft.data["findings"]
    assert set(finding) == {"code", "severity", "audience", "message", "remedy"}
    assert finding["code"] == "ip_not_whitelisted"
    event = model.Event.of(draft, event_id=model.new_event_id(NOW.timestamp()), created_at=NOW)
    payload = json.loads(event.body)
    assert payload["id"] == event.id
    assert payload["type"] == "binding.status_changed"
    assert payload["created_at"] == "2026-12-03T12:00:00Z"
    assert "tenant" not in payload  # the receiver is the tenant
    assert "secret_id" not in event.body


def test_each_binding_alert_type_maps_to_its_event_and_ops_only_alerts_to_none():
    unread = binding(Status.HEALTHY)
    checked = report(FindingCode.CREDENTIALS_UNREADABLE)
    name = spec(Exchange.BINANCE).display_name
    expiring = alerts.trading_expiring(unread, NOW + timedelta(days=7), 7, exchange_name=name)
    assert model.draft_from_alert(expiring.body).data["days_left"] == 7  # type: ignore[union-attr]
    assert model.draft_from_alert(unreachable_alert().body).type == model.UNREACHABLE  # type: ignore[union-attr]
    undecryptable = alerts.credentials_unreadable(unread, checked, exchange_name=name)
    assert model.draft_from_alert(undecryptable.body) is None
    assert model.draft_from_alert({"type": "audit_summary", "tenant": "t"}) is None
    assert model.draft_from_alert({"type": "binding_status_changed"}) is None  # no tenant: nobody to tell


def test_the_signature_is_hmac_sha256_of_timestamp_dot_body_one_v1_per_secret():
    body = b'{"id":"evt_1"}'
    current, previous = Secret("whsec_new"), Secret("whsec_old")
    header = model.signature_header([current, previous], 1_764_763_200, body)
    parts = header.split(",")
    assert parts[0] == "t=1764763200"
    expected = [
        hmac.new(key, b"1764763200." + body, hashlib.sha256).hexdigest() for key in (b"whsec_new", b"whsec_old")
    ]
    assert parts[1:] == [f"v1={expected[0]}", f"v1={expected[1]}"]


def test_new_secrets_are_prefixed_random_and_hidden_from_repr():
    first, second = model.new_signing_secret(), model.new_signing_secret()
    assert first.reveal().startswith("whsec_")
    assert len(first.reveal()) >= 40
    assert first != second
    assert "whsec" not in repr(first)


def test_event_ids_sort_by_creation_and_are_recognised():
    ids = [model.new_event_id(NOW.timestamp()) for _ in range(50)]
    assert ids == sorted(ids)
    assert all(model.is_event_id(i) for i in ids)
    assert not model.is_event_id("bnd_" + ids[0][4:])


def test_retries_back_off_exponentially_with_jitter_and_stop_after_the_window():
    queued = NOW
    low = [model.retry_delay(n, 0.0, queued_at=queued, now=queued) for n in range(1, 10)]
    high = [model.retry_delay(n, 0.999, queued_at=queued, now=queued) for n in range(1, 10)]
    assert low[:4] == [15, 30, 60, 120]  # half the step at the least
    assert high[:4] == [29, 59, 119, 239]
    assert max(high) <= model.LONGEST_RETRY_SECONDS
    # Followed through a day of failures: the last attempt lands on the window's end, then no more.
    now, attempt, attempts = queued, 1, []
    while (delay := model.retry_delay(attempt, 0.5, queued_at=queued, now=now)) is not None:
        now += timedelta(seconds=delay)
        attempt += 1
        attempts.append(now)
    assert attempts[-1] == queued + model.RETRY_WINDOW
    assert 10 <= len(attempts) <= 20


@pytest.mark.parametrize("jitter", [0.0, 0.5, 1.0])
def test_a_retry_never_lands_past_the_window(jitter: float):
    queued = NOW
    now = queued + model.RETRY_WINDOW - timedelta(seconds=40)
    assert model.retry_delay(12, jitter, queued_at=queued, now=now) == 40


def test_a_webhook_wants_its_types_and_always_ping_and_shows_no_secret():
    webhook = model.Webhook(
        tenant="t",
        url="https://hooks.example.com/k",
        events=(model.STATUS_CHANGED,),
        created_at=NOW,
        updated_at=NOW,
        secret_ciphertext=b"ciphertext",
        previous_secret_ciphertext=b"old",
        previous_secret_expires_at=NOW + timedelta(hours=24),
    )
    assert webhook.wants(model.STATUS_CHANGED)
    assert webhook.wants(model.PING)
    assert not webhook.wants(model.DELETED)
    assert webhook.previous_secret_valid(NOW + timedelta(hours=23))
    assert not webhook.previous_secret_valid(NOW + timedelta(hours=24))
    public = webhook.to_public_dict()
    assert "secret" not in json.dumps(public).replace("previous_secret_expires_at", "")
