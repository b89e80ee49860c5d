"""POST /bindings through the real handler: API Gateway event in, moto and simulators behind."""

from __future__ import annotations

import json

import pytest

from functions.bind import app as bind_function
from simulators.base import Fault
from tests.support.api import bind_body, bind_event
from tests.support.events import PLATFORM_A_OTHER_SESSION, PLATFORM_B


def test_a_healthy_key_is_stored_with_its_report(stack):
    key = stack.exchanges.key("binance", "healthy")
    response = stack.invoke(bind_function, bind_event(bind_body(key)))

    assert response.status == 201, response
    binding, report = response.json["binding"], response.json["report"]
    assert binding["binding_id"].startswith("bnd_")
    assert binding["status"] == report["status"] == "healthy"
    assert binding["api_key_masked"] == f"{key.api_key[:4]}...{key.api_key[-4:]}"
    assert binding["scopes"] == ["futures", "spot"]
    assert binding["account_id"]  # Binance reveals the uid at bind time
    assert binding["last_report"] == report
    assert report["egress_ip"] == "127.0.0.2"

    if stack.store == "secretsmanager":
        secret = stack.secretsmanager.describe_secret(SecretId=f"keyhealth/test-stack/{binding['binding_id']}")
        assert secret["KmsKeyId"] == stack.kms_key_arn
        tags = {t["Key"]: t["Value"] for t in secret["Tags"]}
        assert tags == {
            "keyhealth:tenant": "111111111111:role/platform-backend",
            "keyhealth:binding_id": binding["binding_id"],
        }
        stored = json.loads(stack.secretsmanager.get_secret_value(SecretId=secret["ARN"])["SecretString"])
        assert stored == {"api_key": key.api_key, "api_secret": key.api_secret, "passphrase": None, "key_type": "hmac"}
    else:
        [item] = stack.credential_items()
        assert (item["tenant"]["S"], item["binding_id"]["S"]) == (
            "111111111111:role/platform-backend",
            binding["binding_id"],
        )
        assert key.api_secret not in json.dumps(item, default=str)
    stored_credentials = stack.stored_credentials(binding["binding_id"])
    assert (stored_credentials.api_key, stored_credentials.api_secret.reveal()) == (key.api_key, key.api_secret)
    assert key.api_secret not in json.dumps(stack.table_items())
    assert key.api_key not in json.dumps(stack.table_items())


@pytest.mark.parametrize(
    ("exchange", "label"),
    [
        ("bitget", "healthy"),
        ("bitget", "uta-healthy"),
        ("bingx", "healthy spot and futures"),
        ("binance", "healthy-ed25519"),
    ],
)
def test_keys_of_every_exchange_and_type_bind(stack, exchange, label):
    key = stack.exchanges.key(exchange, label)
    response = stack.invoke(bind_function, bind_event(bind_body(key)))
    assert response.status == 201, response
    assert response.json["binding"]["key_type"] == key.key_type


def test_a_degraded_key_is_stored_with_its_warnings(stack):
    key = stack.exchanges.key("binance", "withdraw-enabled")
    response = stack.invoke(bind_function, bind_event(bind_body(key)))
    assert response.status == 201
    assert response.json["binding"]["status"] == "degraded"
    assert [f["code"] for f in response.json["report"]["findings"]] == ["withdraw_enabled"]


@pytest.mark.parametrize(
    ("exchange", "label", "code"),
    [
        ("binance", "wrong-secret", "invalid_secret"),
        ("bitget", "wrong-passphrase", "invalid_passphrase"),
        ("bitget", "not-whitelisted", "ip_not_whitelisted"),
        ("bingx", "spot only, futures needed", "scope_not_permitted"),
    ],
)
def test_a_failing_key_gets_422_with_the_report_and_nothing_is_stored(stack, exchange, label, code):
    key = stack.exchanges.key(exchange, label)
    response = stack.invoke(bind_function, bind_event(bind_body(key)))
    assert response.status == 422, response
    assert response.json["error"]["code"] == "key_failing"
    assert response.json["report"]["status"] == "failing"
    assert code in [f["code"] for f in response.json["report"]["findings"]]
    assert stack.secret_names() == []
    assert stack.table_items() == []


def test_an_exchange_outage_gets_503_with_retry_after_and_nothing_is_stored(stack):
    stack.exchanges.simulators["bitget"].fault = Fault.UNAVAILABLE
    key = stack.exchanges.key("bitget", "healthy")
    response = stack.invoke(bind_function, bind_event(bind_body(key)))
    assert response.status == 503
    assert response.json["error"]["code"] == "exchange_unavailable"
    assert response.json["report"]["status"] == "unknown"
    assert int(response.headers["retry-after"]) >= 1
    assert stack.secret_names() == []
    assert stack.table_items() == []


def test_the_same_key_twice_is_409_already_bound_with_the_existing_id(stack):
    key = stack.exchanges.key("binance", "healthy")
    first = stack.invoke(bind_function, bind_event(bind_body(key)))
    # Another session of the same role is the same tenant.
    again = stack.invoke(bind_function, bind_event(bind_body(key, user_id="u-43"), principal=PLATFORM_A_OTHER_SESSION))
    assert again.status == 409
    assert again.json["error"]["code"] == "already_bound"
    assert again.json["error"]["binding_id"] == first.json["binding"]["binding_id"]
    assert len(stack.secret_names()) == 1


def test_another_tenant_may_bind_the_same_key_separately(stack):
    key = stack.exchanges.key("bingx", "healthy spot and futures")
    first = stack.invoke(bind_function, bind_event(bind_body(key)))
    other = stack.invoke(bind_function, bind_event(bind_body(key), principal=PLATFORM_B))
    assert (first.status, other.status) == (201, 201)
    assert first.json["binding"]["binding_id"] != other.json["binding"]["binding_id"]


def test_surrounding_whitespace_is_trimmed_and_reported(stack):
    key = stack.exchanges.key("bitget", "healthy")
    body = bind_body(
        key, api_key=f"  {key.api_key}\n", api_secret=f"{key.api_secret} ", passphrase=f"\t{key.passphrase}"
    )
    response = stack.invoke(bind_function, bind_event(body))
    assert response.status == 201, response
    trimmed = [f for f in response.json["report"]["findings"] if f["code"] == "whitespace_trimmed"]
    assert trimmed
    assert trimmed[0]["severity"] == "info"
    assert "api_key, api_secret and passphrase" in trimmed[0]["message"]
    assert response.json["binding"]["status"] == "healthy"


class TestIdempotency:
    def test_a_retry_with_the_same_key_and_body_returns_the_first_answer(self, stack):
        key = stack.exchanges.key("binance", "healthy")
        event = bind_event(bind_body(key), headers={"Idempotency-Key": "bind-7f3a"})
        first = stack.invoke(bind_function, event)
        retry = stack.invoke(bind_function, bind_event(bind_body(key), headers={"idempotency-key": "bind-7f3a"}))
        assert (first.status, retry.status) == (201, 201)
        assert retry.json == first.json
        assert len(stack.secret_names()) == 1
        assert len(stack.binding_items()) == 1

    def test_the_same_key_with_another_body_is_refused(self, stack):
        key = stack.exchanges.key("binance", "healthy")
        stack.invoke(bind_function, bind_event(bind_body(key), headers={"Idempotency-Key": "k1"}))
        other = stack.invoke(
            bind_function, bind_event(bind_body(key, label="other"), headers={"Idempotency-Key": "k1"})
        )
        assert other.status == 422
        assert other.json["error"]["code"] == "idempotency_key_reused"

    def test_failures_are_not_remembered_so_a_fixed_key_can_be_retried(self, stack):
        key = stack.exchanges.key("bitget", "healthy")
        stack.exchanges.simulators["bitget"].fault = Fault.UNAVAILABLE
        headers = {"Idempotency-Key": "retry-me"}
        assert stack.invoke(bind_function, bind_event(bind_body(key), headers=headers)).status == 503
        stack.exchanges.simulators["bitget"].fault = None
        assert stack.invoke(bind_function, bind_event(bind_body(key), headers=headers)).status == 201

    def test_the_record_holds_no_credential(self, stack):
        key = stack.exchanges.key("bitget", "healthy")
        stack.invoke(bind_function, bind_event(bind_body(key), headers={"Idempotency-Key": "k2"}))
        records = json.dumps(stack.table_items("keyhealth-idempotency"))
        assert records != "[]"
        assert key.api_secret not in records
        assert key.passphrase not in records
        assert key.api_key not in records

    def test_a_malformed_key_header_is_400(self, stack):
        key = stack.exchanges.key("binance", "healthy")
        response = stack.invoke(bind_function, bind_event(bind_body(key), headers={"Idempotency-Key": "has space"}))
        assert response.status == 400
        assert response.json["error"]["code"] == "invalid_idempotency_key"


def test_a_second_key_of_the_same_exchange_account_is_visible(stack):
    sim = stack.exchanges.simulators["binance"]
    first_key = stack.exchanges.key("binance", "healthy")
    uid = sim.keys[first_key.api_key].uid
    second_api_key, second_secret = "S" * 64, "s" * 64
    sim.add_key(uid=uid, api_key=second_api_key, secret=second_secret, ip_whitelist=("127.0.0.2",))

    first = stack.invoke(bind_function, bind_event(bind_body(first_key)))
    second_body = bind_body(first_key, api_key=second_api_key, api_secret=second_secret, scopes=["spot"])
    second = stack.invoke(bind_function, bind_event(second_body))

    assert (first.status, second.status) == (201, 201), second
    assert "same_account_bindings" not in first.json
    assert second.json["binding"]["account_id"] == first.json["binding"]["account_id"]
    assert second.json["same_account_bindings"] == [first.json["binding"]["binding_id"]]
