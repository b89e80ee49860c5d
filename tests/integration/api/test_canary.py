"""A canary credential sent through every route, success and error paths alike, never comes
back out: not in logs (Powertools Logger and metrics print JSON to stdout), not in any
response body or header, not in either DynamoDB table, not in any SNS message.

The canary keys are added to the running simulators with secrets (and Bitget passphrases)
that carry a marker nothing else contains, so one substring search finds any leak.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from functions.bind import app as bind_function
from functions.read import app as read_function
from functions.unbind import app as unbind_function
from functions.verify import app as verify_function
from keyhealth.api.http import logger as api_logger
from simulators import bingx
from simulators.base import Fault
from simulators.bitget import FULL_TRADE
from tests.conftest import EGRESS_IP
from tests.support.api import (
    bind_body,
    bind_event,
    delete_event,
    get_event,
    list_event,
    rotate_body,
    rotate_event,
    verify_event,
)
from tests.support.events import PLATFORM_B

CANARY = "CaNaRy"  # in every secret and passphrase below, and nowhere else


@dataclass(frozen=True)
class CanaryKey:
    """Duck-types the DemoKey fields that helpers.bind_body and rotate_body read."""

    exchange: str
    api_key: str
    api_secret: str
    passphrase: str | None
    scopes: tuple[str, ...] = ("spot", "futures")
    key_type: str = "hmac"

    def with_secret(self, secret: str) -> CanaryKey:
        return CanaryKey(self.exchange, self.api_key, secret, self.passphrase)

    def with_passphrase(self, passphrase: str) -> CanaryKey:
        return CanaryKey(self.exchange, self.api_key, self.api_secret, passphrase)


def canary_secret(number: int) -> str:
    return f"{CANARY}Secret{number:02d}".ljust(64, "x")


def canary_passphrase(number: int) -> str:
    return f"{CANARY}Pass{number:02d}"


def api_key_for(exchange: str, number: int) -> str:
    if exchange == "bitget":
        return "bg_" + f"c0ffee{number:02d}".ljust(32, "e")
    return f"KeyMark{exchange}{number:02d}".ljust(64, "K")


def add_canary_key(stack, exchange: str, number: int, *, withdraw: bool = False, register: bool = True) -> CanaryKey:
    """A key on the running simulator whose secret (and passphrase) carry the canary.

    Healthy (whitelisted on our egress IP, spot and futures), or degraded with `withdraw`.
    Each key is its own account, so per-account rate limits never link two steps.
    """
    api_key, secret = api_key_for(exchange, number), canary_secret(number)
    passphrase = canary_passphrase(number) if exchange == "bitget" else None
    sim = stack.exchanges.simulators[exchange]
    if not register:
        pass
    elif exchange == "binance":
        sim.add_key(
            api_key,
            uid=700_000 + number,
            secret=secret,
            ip_whitelist=(EGRESS_IP,),
            enable_futures=True,
            enable_withdrawals=withdraw,
        )
    elif exchange == "bitget":
        authorities = (*FULL_TRADE, "wwow") if withdraw else FULL_TRADE
        account = sim.add_account()
        sim.add_key(
            account, api_key=api_key, secret=secret, passphrase=passphrase, authorities=authorities, ips=(EGRESS_IP,)
        )
    else:
        permissions = (bingx.READ, bingx.SPOT, bingx.FUTURES) + ((bingx.WITHDRAW,) if withdraw else ())
        sim.add_key(api_key=api_key, secret=secret, permissions=permissions, ip_addresses=(EGRESS_IP,))
    return CanaryKey(exchange, api_key, secret, passphrase)


class _CurrentStdout:
    """Writes to whatever sys.stdout is at the time: pytest swaps capsys' stream between the
    setup and call phases, and Powertools' handler kept the stdout it found at import."""

    def write(self, text: str) -> int:
        return sys.stdout.write(text)

    def flush(self) -> None:
        sys.stdout.flush()


@pytest.fixture
def captured_logs(all_logs, capsys, monkeypatch) -> Iterator[callable]:
    """Everything logged or printed during the test, the function's own logs at DEBUG."""
    monkeypatch.setattr(api_logger.registered_handler, "stream", _CurrentStdout())
    level = api_logger.log_level
    api_logger.setLevel(logging.DEBUG)

    def read() -> dict[str, str]:
        printed = capsys.readouterr()
        records = "".join(repr(record.__dict__) for record in all_logs.records)
        return {"stdout": printed.out, "stderr": printed.err, "log records": all_logs.text + records}

    yield read
    api_logger.setLevel(level)


@pytest.mark.parametrize("exchange", ["binance", "bitget", "bingx"])
def test_a_canary_through_every_route_never_leaks(stack, captured_logs, exchange):
    sim = stack.exchanges.simulators[exchange]
    good = add_canary_key(stack, exchange, 1)
    degraded = add_canary_key(stack, exchange, 2, withdraw=True)
    refused = add_canary_key(stack, exchange, 3)
    for_storage_fault = add_canary_key(stack, exchange, 4)
    unknown = add_canary_key(stack, exchange, 5, register=False)
    wrong = (
        refused.with_passphrase(canary_passphrase(99))
        if exchange == "bitget"
        else refused.with_secret(canary_secret(99))
    )
    responses = []

    def call(function, event, expected: int):
        response = stack.invoke(function, event)
        responses.append(response)
        assert response.status == expected, response
        return response

    def bind(key, expected: int, headers: dict[str, str] | None = None):
        return call(bind_function, bind_event(bind_body(key), headers=headers), expected)

    # POST /bindings: exchange down (503), then stored (201) and replayed (201), then again (409).
    sim.fault = Fault.UNAVAILABLE
    bind(good, 503, headers={"Idempotency-Key": "canary-bind-1"})
    sim.fault = None
    created = bind(good, 201, headers={"Idempotency-Key": "canary-bind-1"})
    assert bind(good, 201, headers={"Idempotency-Key": "canary-bind-1"}).json == created.json
    bind(good, 409)
    binding_id = created.json["binding"]["binding_id"]

    # The key fails its check (422); storage fails after the check (503, a warning is logged).
    assert bind(wrong, 422).json["report"]["status"] == "failing"
    stack.fail_credentials("create_secret")
    assert bind(for_storage_fault, 503).json["error"]["code"] == "storage_unavailable"
    stack.heal_credentials()

    # Malformed binds (400), each carrying the canary.
    spoiled = [
        bind_body(good, api_secret=good.api_secret[:20] + " " + good.api_secret[20:]),
        bind_body(good, passphrase=canary_passphrase(7)) if exchange != "bitget" else bind_body(good, passphrase=None),
        bind_body(good, surprise=canary_secret(8)),
        bind_body(good, scopes="spot"),
        bind_body(good, label="x" * 17 * 1024),
    ]
    for body in spoiled:
        call(bind_function, bind_event(body), 400)
    call(bind_function, bind_event(json.dumps(bind_body(good))[:-1]), 400)  # not JSON

    # PUT credentials: malformed (400), refused (422), exchange down (503), then swapped (200).
    call(bind_function, rotate_event(binding_id, rotate_body(degraded, api_secret=f"{degraded.api_secret} x")), 400)
    call(bind_function, rotate_event(binding_id, rotate_body(unknown)), 422)
    sim.fault = Fault.UNAVAILABLE
    call(bind_function, rotate_event(binding_id, rotate_body(degraded)), 503)
    sim.fault = None
    headers = {"Idempotency-Key": "canary-rotate-1"}
    rotated = call(bind_function, rotate_event(binding_id, rotate_body(degraded), headers=headers), 200)
    assert rotated.json["binding"]["status"] == "degraded"  # a status change: an SNS alert

    # Verify (200, also when the exchange is down), read, list, unbind; another tenant gets 404s.
    call(verify_function, verify_event(binding_id), 200)
    sim.fault = Fault.UNAVAILABLE
    call(verify_function, verify_event(binding_id), 200)
    sim.fault = None
    call(read_function, get_event(binding_id), 200)
    assert len(call(read_function, list_event(), 200).json["items"]) == 1
    call(bind_function, rotate_event(binding_id, rotate_body(good), principal=PLATFORM_B), 404)
    call(verify_function, verify_event(binding_id, principal=PLATFORM_B), 404)
    call(read_function, get_event(binding_id, principal=PLATFORM_B), 404)
    call(unbind_function, delete_event(binding_id, principal=PLATFORM_B), 404)

    # The canary did reach the exchange and the secret store: the searches below mean something.
    assert stack.stored_credentials(binding_id).api_secret.reveal() == degraded.api_secret
    items, records = stack.table_items(), stack.table_items("keyhealth-idempotency")
    assert items
    assert len(records) == 2  # the bind and the rotation
    alerts = stack.alerts()
    assert [a["body"]["type"] for a in alerts] == ["binding_status_changed"]
    call(unbind_function, delete_event(binding_id), 204)
    logs = captured_logs()
    # The searches below see the metrics and the Powertools Logger's JSON lines.
    assert '"KeyChecks"' in logs["stdout"]
    assert '"message":"storage failure"' in logs["stdout"]
    assert "Logging error" not in logs["stderr"]

    every_key = (good, degraded, refused, for_storage_fault, unknown)
    places = {
        **logs,
        "responses": json.dumps([r.raw for r in responses]),
        "bindings table": json.dumps(items),
        "idempotency table": json.dumps(records, default=str),
        "credentials table": json.dumps(stack.credential_items(), default=str),
        "SNS messages": json.dumps(alerts),
    }
    for place, text in places.items():
        assert CANARY not in text, f"a canary secret or passphrase leaked into the {place}"
        for key in every_key:
            assert key.api_key not in text, f"a full API key leaked into the {place}"
