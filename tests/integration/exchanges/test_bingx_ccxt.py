"""ccxt's own BingX client against the BingX simulator: an independent signer and error reader.

ccxt reaches `GET /openApi/v1/account/apiPermissions` through its implicit method
`account_v1_private_get_account_apipermissions` (the path is in its `flatAccountPaths`, so the
URL is the same flat path real BingX serves) and `GET /openApi/account/v1/uid` through
`account_v1_private_get_uid`. It connects from 127.0.0.1, so keys here whitelist that address.
ccxt also sends `X-SOURCE-KEY`, which the simulator ignores. No markets are loaded and every URL
points at the simulator, so nothing leaves the machine.
"""

from __future__ import annotations

import time

import ccxt
import pytest

from simulators.bingx import FUTURES, READ, SPOT, BingXSimulator
from tests.support.clock import FakeClock

pytestmark = pytest.mark.ccxt

CCXT_IP = "127.0.0.1"
SECRET = "ccxtSecret" * 6 + "abcd"


def ccxt_client(url: str, api_key: str, secret: str) -> ccxt.bingx:
    exchange = ccxt.bingx({"apiKey": api_key, "secret": secret, "enableRateLimit": False, "timeout": 3000})
    # ccxt signs with its own clock (milliseconds()); the simulator uses real time here.
    exchange.urls["api"] = {name: f"{url}/openApi" for name in exchange.urls["api"]}
    return exchange


@pytest.fixture
def clock() -> FakeClock:
    """The simulator's clock, frozen at the real time: ccxt stamps requests with the real clock
    (within the 5 s recvWindow while a test runs) and limit windows cannot roll over mid-test."""
    return FakeClock(time.time())


@pytest.fixture
def sim(clock: FakeClock) -> BingXSimulator:
    return BingXSimulator(clock=clock)


def test_ccxt_signed_apipermissions_is_accepted(sim, serve) -> None:
    key = sim.add_key(uid=55, secret=SECRET, permissions=(READ, SPOT, FUTURES), ip_addresses=(CCXT_IP,))
    exchange = ccxt_client(serve(sim), key.api_key, SECRET)
    answer = exchange.account_v1_private_get_account_apipermissions()
    assert answer == {"apiKey": key.api_key, "permissions": [1, 2, 3], "ipAddresses": [CCXT_IP], "note": ""}
    assert exchange.last_request_url.split("?")[0].endswith("/openApi/v1/account/apiPermissions")
    assert exchange.last_request_headers["X-SOURCE-KEY"]  # sent, and ignored by the simulator


def test_ccxt_envelope_answer_and_uid(serve, clock) -> None:
    sim = BingXSimulator(clock=clock, envelope=True)
    key = sim.add_key(uid=55, secret=SECRET, ip_addresses=(CCXT_IP,))
    exchange = ccxt_client(serve(sim), key.api_key, SECRET)
    assert exchange.account_v1_private_get_account_apipermissions()["data"]["permissions"] == [2]
    assert exchange.account_v1_private_get_uid()["data"] == {"uid": 55}


def test_unknown_key_is_authentication_error(sim, serve) -> None:
    exchange = ccxt_client(serve(sim), "N" * 64, SECRET)
    with pytest.raises(ccxt.AuthenticationError, match="100413"):
        exchange.account_v1_private_get_account_apipermissions()


def test_wrong_secret_is_authentication_error(sim, serve) -> None:
    key = sim.add_key(secret=SECRET, ip_addresses=(CCXT_IP,))
    exchange = ccxt_client(serve(sim), key.api_key, "wrong" * 12)
    with pytest.raises(ccxt.AuthenticationError, match="100001"):
        exchange.account_v1_private_get_account_apipermissions()


def test_ip_not_whitelisted_is_permission_denied(sim, serve) -> None:
    key = sim.add_key(secret=SECRET, ip_addresses=("127.0.0.2",))
    exchange = ccxt_client(serve(sim), key.api_key, SECRET)
    with pytest.raises(ccxt.PermissionDenied, match="100419"):
        exchange.account_v1_private_get_account_apipermissions()


def test_missing_permission_is_permission_denied_and_frozen_is_account_suspended(sim, serve) -> None:
    url = serve(sim)
    no_read = sim.add_key(secret=SECRET, permissions=(SPOT,), ip_addresses=(CCXT_IP,))
    with pytest.raises(ccxt.PermissionDenied, match="100004"):
        ccxt_client(url, no_read.api_key, SECRET).account_v1_private_get_account_apipermissions()
    frozen = sim.add_key(secret=SECRET, ip_addresses=(CCXT_IP,), frozen=True)
    with pytest.raises(ccxt.AccountSuspended, match="100414"):
        ccxt_client(url, frozen.api_key, SECRET).account_v1_private_get_account_apipermissions()


def test_ip_rate_limit_429_is_rate_limit_exceeded_then_418_ddos_protection(serve, clock) -> None:
    sim = BingXSimulator(clock=clock, interface_limit=1)
    key = sim.add_key(secret=SECRET, ip_addresses=(CCXT_IP,))
    exchange = ccxt_client(serve(sim), key.api_key, SECRET)
    exchange.account_v1_private_get_account_apipermissions()
    # ccxt's HTTP table (httpExceptions) reads 429 as RateLimitExceeded and 418 as DDoSProtection:
    # the bodies carry no BingX code, so its exchange table is not consulted.
    with pytest.raises(ccxt.RateLimitExceeded):
        exchange.account_v1_private_get_account_apipermissions()
    with pytest.raises(ccxt.DDoSProtection):  # continuing while restricted earns the 418 ban
        exchange.account_v1_private_get_account_apipermissions()
    assert sim.stats[f"ip_429:{CCXT_IP}"] == 1
    assert sim.stats[f"ip_418:{CCXT_IP}"] == 1


def test_uid_throttle_100410_is_what_ccxt_calls_operation_failed(sim, serve) -> None:
    key = sim.add_key(secret=SECRET, ip_addresses=(CCXT_IP,))
    exchange = ccxt_client(serve(sim), key.api_key, SECRET)
    exchange.account_v1_private_get_account_apipermissions()
    exchange.account_v1_private_get_account_apipermissions()
    # ccxt reads 100410 as "system is busy" (OperationFailed); keyhealth treats it as transient too.
    with pytest.raises(ccxt.OperationFailed, match="100410"):
        exchange.account_v1_private_get_account_apipermissions()
