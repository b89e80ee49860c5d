"""The Binance simulator over real HTTP: it must reject what Binance rejects, in Binance's words.

Requests are signed by hand here (not with the adapter), so the simulator is checked on its
own against exchanges.md section 1.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from urllib.parse import quote, urlencode

import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

from simulators.base import Fault
from simulators.binance import DAY_MS, BinanceSimulator
from tests.conftest import EGRESS_IP
from tests.support.clock import FakeClock

START = 1_800_000_000.0  # on a minute boundary: a fresh window has 60 s left
KEY = "A" * 60 + "0001"
SECRET = "sim-test-secret"
RESTRICTIONS = "/sapi/v1/account/apiRestrictions"
ACCOUNT = "/api/v3/account"
FUTURES_CONFIG = "/fapi/v1/accountConfig"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
def sim(clock: FakeClock) -> BinanceSimulator:
    sim = BinanceSimulator(clock=clock)
    sim.add_key(KEY, uid=42, secret=SECRET, ip_whitelist=(EGRESS_IP,), enable_futures=True)
    return sim


@pytest.fixture
def url(sim: BinanceSimulator, serve) -> str:
    return serve(sim)


def hmac_hex(secret: str, payload: bytes) -> str:
    return hmac.new(secret.encode(), payload, hashlib.sha256).hexdigest()


def signed_get(
    client: httpx.Client,
    url: str,
    path: str,
    *,
    clock: FakeClock,
    api_key: str = KEY,
    secret: str = SECRET,
    timestamp_ms: int | None = None,
    recv_window: str | None = "5000",
    signature: str | None = None,
) -> httpx.Response:
    params = [("timestamp", str(int(clock() * 1000) if timestamp_ms is None else timestamp_ms))]
    if recv_window is not None:
        params.append(("recvWindow", recv_window))
    query = urlencode(params)
    sig = signature if signature is not None else hmac_hex(secret, query.encode())
    return client.get(f"{url}{path}?{query}&signature={sig}", headers={"X-MBX-APIKEY": api_key})


def assert_error(response: httpx.Response, status: int, code: int, msg: str | None = None) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code
    if msg is not None:
        assert body["msg"] == msg


# --------------------------------------------------------------------------- public endpoints
def test_public_endpoints_answer_with_weight_headers(url: str, egress_client: httpx.Client, sim) -> None:
    sim.time_offset_ms = 2500
    time_answer = egress_client.get(f"{url}/api/v3/time")
    assert time_answer.json() == {"serverTime": int(START * 1000) + 2500}
    assert time_answer.headers["X-MBX-USED-WEIGHT-1M"] == "1"
    assert time_answer.headers["X-MBX-USED-WEIGHT"] == "1"
    assert egress_client.get(f"{url}/api/v3/ping").json() == {}
    assert egress_client.get(f"{url}/api/v3/ping").headers["X-MBX-USED-WEIGHT-1M"] == "3"
    status = egress_client.get(f"{url}/sapi/v1/system/status")
    assert status.json() == {"status": 0, "msg": "normal"}
    assert status.headers["X-SAPI-USED-IP-WEIGHT-1M"] == "1"
    assert egress_client.get(f"{url}/fapi/v1/time").headers["X-MBX-USED-WEIGHT-1M"] == "1"


# --------------------------------------------------------------------------- signatures
def test_hmac_signed_restrictions_are_answered(url: str, egress_client: httpx.Client, clock: FakeClock) -> None:
    response = signed_get(egress_client, url, RESTRICTIONS, clock=clock)
    assert response.status_code == 200
    body = response.json()
    assert body["ipRestrict"] is True
    assert body["enableReading"] is True
    assert body["enableFutures"] is True
    assert body["enableWithdrawals"] is False
    assert "tradingAuthorityExpirationTime" not in body  # restricted keys do not lapse
    assert response.headers["X-SAPI-USED-IP-WEIGHT-1M"] == "1"


def test_hmac_hex_case_does_not_matter(url: str, egress_client: httpx.Client, clock: FakeClock) -> None:
    query = urlencode([("timestamp", str(int(clock() * 1000))), ("recvWindow", "5000")])
    upper = hmac_hex(SECRET, query.encode()).upper()
    assert signed_get(egress_client, url, RESTRICTIONS, clock=clock, signature=upper).status_code == 200


def test_signature_must_cover_the_exact_bytes_sent(url: str, egress_client: httpx.Client, clock: FakeClock) -> None:
    ts = str(int(clock() * 1000))
    # Same parameters, other order: a server that re-encodes parameters would accept this.
    signed_over = urlencode([("recvWindow", "5000"), ("timestamp", ts)])
    sent = urlencode([("timestamp", ts), ("recvWindow", "5000")])
    response = egress_client.get(
        f"{url}{RESTRICTIONS}?{sent}&signature={hmac_hex(SECRET, signed_over.encode())}",
        headers={"X-MBX-APIKEY": KEY},
    )
    assert_error(response, 400, -1022, "Signature for this request is not valid.")


def test_wrong_secret_is_1022(url: str, egress_client: httpx.Client, clock: FakeClock) -> None:
    response = signed_get(egress_client, url, RESTRICTIONS, clock=clock, secret="not-the-secret")
    assert_error(response, 400, -1022, "Signature for this request is not valid.")


def test_signature_in_body_covers_query_then_body(url: str, egress_client: httpx.Client, clock: FakeClock, sim) -> None:
    query = f"timestamp={int(clock() * 1000)}"
    body = "recvWindow=5000"
    signature = hmac_hex(SECRET, (query + body).encode())  # no separator between them (1.2)
    response = egress_client.request(
        "GET",
        f"{url}{RESTRICTIONS}?{query}",
        content=f"{body}&signature={signature}".encode(),
        headers={"X-MBX-APIKEY": KEY, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200, response.text


def test_missing_signature_is_rejected(url: str, egress_client: httpx.Client, clock: FakeClock) -> None:
    response = egress_client.get(f"{url}{RESTRICTIONS}?timestamp={int(clock() * 1000)}", headers={"X-MBX-APIKEY": KEY})
    assert_error(response, 400, -1022)


def _pem_public(private_key: ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey) -> str:
    return (
        private_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def test_ed25519_signature_percent_encoded_is_accepted_and_raw_plus_is_not(
    url: str, egress_client: httpx.Client, clock: FakeClock, sim
) -> None:
    private_key = ed25519.Ed25519PrivateKey.generate()
    api_key = "E" * 64
    sim.add_key(api_key, uid=43, key_type="ed25519", public_key_pem=_pem_public(private_key))
    # Find a timestamp whose signature's base64 has a `+`, so the encoding matters.
    for offset in range(200):
        query = urlencode([("timestamp", str(int(clock() * 1000) - offset)), ("recvWindow", "5000")])
        b64 = base64.b64encode(private_key.sign(query.encode())).decode()
        if "+" in b64:
            break
    else:  # pragma: no cover - 200 tries without a `+` has probability ~(63/64)**(88*200)
        pytest.fail("no signature with '+'")
    headers = {"X-MBX-APIKEY": api_key}
    raw = egress_client.get(f"{url}{RESTRICTIONS}?{query}&signature={b64}", headers=headers)
    assert_error(raw, 400, -1022)
    encoded = egress_client.get(f"{url}{RESTRICTIONS}?{query}&signature={quote(b64, safe='')}", headers=headers)
    assert encoded.status_code == 200, encoded.text
    assert encoded.json()["ipRestrict"] is False


def test_rsa_signature_is_verified(url: str, egress_client: httpx.Client, clock: FakeClock, sim) -> None:
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    api_key = "R" * 64
    sim.add_key(api_key, uid=44, key_type="rsa", public_key_pem=_pem_public(private_key))
    query = urlencode([("timestamp", str(int(clock() * 1000))), ("recvWindow", "5000")])
    raw = private_key.sign(query.encode(), padding.PKCS1v15(), hashes.SHA256())
    good = quote(base64.b64encode(raw).decode(), safe="")
    headers = {"X-MBX-APIKEY": api_key}
    assert egress_client.get(f"{url}{RESTRICTIONS}?{query}&signature={good}", headers=headers).status_code == 200
    other = private_key.sign(b"something else", padding.PKCS1v15(), hashes.SHA256())
    bad = quote(base64.b64encode(other).decode(), safe="")
    assert_error(egress_client.get(f"{url}{RESTRICTIONS}?{query}&signature={bad}", headers=headers), 400, -1022)


# --------------------------------------------------------------------------- key and IP
@pytest.mark.parametrize("api_key", ["", "short", "A" * 63 + "!", "A" * 65])
def test_malformed_key_is_2014(url: str, egress_client: httpx.Client, clock: FakeClock, api_key: str) -> None:
    response = signed_get(egress_client, url, RESTRICTIONS, clock=clock, api_key=api_key)
    assert_error(response, 401, -2014, "API-key format invalid.")


def test_unknown_key_is_2015(url: str, egress_client: httpx.Client, clock: FakeClock) -> None:
    response = signed_get(egress_client, url, RESTRICTIONS, clock=clock, api_key="B" * 64)
    assert_error(response, 401, -2015, "Invalid API-key, IP, or permissions for action.")


def test_whitelist_is_checked_against_the_tcp_peer(
    url: str, egress_client: httpx.Client, loopback_client: httpx.Client, clock: FakeClock
) -> None:
    assert signed_get(egress_client, url, RESTRICTIONS, clock=clock).status_code == 200
    response = signed_get(loopback_client, url, RESTRICTIONS, clock=clock)
    assert_error(response, 401, -2015, "Invalid API-key, IP, or permissions for action.")


def test_checks_run_in_binance_order(url: str, egress_client: httpx.Client, clock: FakeClock, sim) -> None:
    stale = int(clock() * 1000) - 10_000
    # unknown key before timestamp
    assert_error(
        signed_get(egress_client, url, RESTRICTIONS, clock=clock, api_key="C" * 64, timestamp_ms=stale), 401, -2015
    )
    # timestamp before signature
    assert_error(
        signed_get(egress_client, url, RESTRICTIONS, clock=clock, timestamp_ms=stale, secret="wrong"), 400, -1021
    )
    # signature before the account lock
    sim.accounts[42].keys_locked = True
    assert_error(signed_get(egress_client, url, RESTRICTIONS, clock=clock, secret="wrong"), 400, -1022)
    assert_error(
        signed_get(egress_client, url, RESTRICTIONS, clock=clock), 401, -2017, "API Keys are locked on this account."
    )


# --------------------------------------------------------------------------- timestamp window
def test_timestamp_window(url: str, egress_client: httpx.Client, clock: FakeClock) -> None:
    now_ms = int(clock() * 1000)

    def status(ts: int, recv_window: str | None = "5000") -> tuple[int, int | None]:
        response = signed_get(egress_client, url, RESTRICTIONS, clock=clock, timestamp_ms=ts, recv_window=recv_window)
        return response.status_code, response.json().get("code")

    assert status(now_ms + 999) == (200, None)
    ahead = signed_get(egress_client, url, RESTRICTIONS, clock=clock, timestamp_ms=now_ms + 1000)
    assert_error(ahead, 400, -1021, "Timestamp for this request was 1000ms ahead of the server's time.")
    assert status(now_ms - 5000) == (200, None)
    behind = signed_get(egress_client, url, RESTRICTIONS, clock=clock, timestamp_ms=now_ms - 5001)
    assert_error(behind, 400, -1021, "Timestamp for this request is outside of the recvWindow.")
    assert status(now_ms - 5001, recv_window=None) == (400, -1021)  # default recvWindow is 5000
    assert status(now_ms - 59_000, recv_window="60000") == (200, None)
    assert status(now_ms, recv_window="60001") == (400, -1131)
    assert status(now_ms * 1000 + 5) == (200, None)  # microseconds are accepted


def test_timestamp_is_judged_on_the_exchange_clock(
    url: str, egress_client: httpx.Client, clock: FakeClock, sim
) -> None:
    sim.time_offset_ms = 20_000
    assert signed_get(egress_client, url, RESTRICTIONS, clock=clock).json()["code"] == -1021
    server_ms = egress_client.get(f"{url}/api/v3/time").json()["serverTime"]
    assert signed_get(egress_client, url, RESTRICTIONS, clock=clock, timestamp_ms=server_ms).status_code == 200


def test_missing_timestamp_is_1102(url: str, egress_client: httpx.Client) -> None:
    query = "recvWindow=5000"
    response = egress_client.get(
        f"{url}{RESTRICTIONS}?{query}&signature={hmac_hex(SECRET, query.encode())}", headers={"X-MBX-APIKEY": KEY}
    )
    assert_error(response, 400, -1102)


# --------------------------------------------------------------------------- endpoints
def test_unrestricted_trading_key_lapses_after_30_days(
    url: str, egress_client: httpx.Client, clock: FakeClock, sim
) -> None:
    api_key = "U" * 64
    sim.add_key(api_key, uid=45, secret=SECRET)
    body = signed_get(egress_client, url, RESTRICTIONS, clock=clock, api_key=api_key).json()
    assert body["ipRestrict"] is False
    assert body["tradingAuthorityExpirationTime"] == body["createTime"] + 30 * DAY_MS
    assert body["enableSpotAndMarginTrading"] is True
    clock.now += 30 * 86_400
    later = signed_get(egress_client, url, RESTRICTIONS, clock=clock, api_key=api_key).json()
    assert later["enableSpotAndMarginTrading"] is False


def test_withdrawals_need_an_ip_restriction(sim) -> None:
    with pytest.raises(ValueError, match="withdrawals"):
        sim.add_key("W" * 64, uid=46, secret=SECRET, enable_withdrawals=True)


def test_spot_account_carries_uid(url: str, egress_client: httpx.Client, clock: FakeClock) -> None:
    response = signed_get(egress_client, url, ACCOUNT, clock=clock)
    assert response.json()["uid"] == 42
    assert response.json()["accountType"] == "SPOT"
    assert response.headers["X-MBX-USED-WEIGHT-1M"] == "20"


def test_futures_account_config(url: str, egress_client: httpx.Client, clock: FakeClock, sim) -> None:
    response = signed_get(egress_client, url, FUTURES_CONFIG, clock=clock)
    assert response.status_code == 200
    assert response.json()["canTrade"] is True
    assert response.headers["X-MBX-USED-WEIGHT-1M"] == "5"
    sim.accounts[42].futures_can_trade = False
    assert signed_get(egress_client, url, FUTURES_CONFIG, clock=clock).json()["canTrade"] is False


@pytest.mark.parametrize(
    ("account", "key"),
    [
        ({"futures_opened_ms": None}, {"enable_futures": True}),  # no futures account
        ({"futures_opened_ms": int(START * 1000) - DAY_MS}, {"enable_futures": True}),  # key older than it
        ({}, {"enable_futures": False}),  # futures not ticked
    ],
)
def test_futures_refusals_are_2015(
    url: str, egress_client: httpx.Client, clock: FakeClock, sim, account: dict, key: dict
) -> None:
    api_key = "F" * 64
    sim.add_account(47, **account)
    sim.add_key(
        api_key, uid=47, secret=SECRET, ip_whitelist=(EGRESS_IP,), create_time_ms=int(START * 1000) - 2 * DAY_MS, **key
    )
    assert signed_get(egress_client, url, RESTRICTIONS, clock=clock, api_key=api_key).status_code == 200
    response = signed_get(egress_client, url, FUTURES_CONFIG, clock=clock, api_key=api_key)
    assert_error(response, 401, -2015, "Invalid API-key, IP, or permissions for action.")


# --------------------------------------------------------------------------- rate limits
def test_weight_limit_429_then_418_ban_doubling(clock: FakeClock, serve, egress_client: httpx.Client) -> None:
    sim = BinanceSimulator(clock=clock, limits={"api": 40})
    sim.add_key(KEY, uid=42, secret=SECRET, ip_whitelist=(EGRESS_IP,))
    url = serve(sim)
    assert signed_get(egress_client, url, ACCOUNT, clock=clock).headers["X-MBX-USED-WEIGHT-1M"] == "20"
    assert signed_get(egress_client, url, ACCOUNT, clock=clock).headers["X-MBX-USED-WEIGHT-1M"] == "40"
    clock.now += 15  # 45 s left in the minute
    limited = signed_get(egress_client, url, ACCOUNT, clock=clock)
    assert_error(limited, 429, -1003)
    assert limited.json()["msg"].startswith(
        "Too much request weight used; current limit is 40 request weight per 1 MINUTE."
    )
    assert limited.headers["Retry-After"] == "45"
    assert limited.headers["X-MBX-USED-WEIGHT-1M"] == "60"

    # Other pools are separate budgets.
    assert signed_get(egress_client, url, RESTRICTIONS, clock=clock).status_code == 200
    assert signed_get(egress_client, url, FUTURES_CONFIG, clock=clock).status_code == 401  # -2015: no enableFutures

    # Not backing off gets the IP banned for 2 minutes.
    banned = egress_client.get(f"{url}/api/v3/time")
    assert_error(banned, 418, -1003)
    until_ms = int((clock() + 120) * 1000)
    assert banned.json()["msg"].startswith(f"Way too much request weight used; IP banned until {until_ms}.")
    assert banned.headers["Retry-After"] == "120"
    # The ban covers the IP everywhere.
    assert signed_get(egress_client, url, RESTRICTIONS, clock=clock).status_code == 418
    assert sim.stats[f"http_429:{EGRESS_IP}"] == 1
    assert sim.stats[f"http_418:{EGRESS_IP}"] == 2

    clock.now += 120
    assert signed_get(egress_client, url, ACCOUNT, clock=clock).status_code == 200
    assert signed_get(egress_client, url, ACCOUNT, clock=clock).status_code == 200
    assert signed_get(egress_client, url, ACCOUNT, clock=clock).status_code == 429
    second_ban = signed_get(egress_client, url, ACCOUNT, clock=clock)
    assert second_ban.status_code == 418
    assert second_ban.headers["Retry-After"] == "240"  # doubled


def test_waiting_out_the_429_avoids_a_ban(clock: FakeClock, serve, egress_client: httpx.Client) -> None:
    sim = BinanceSimulator(clock=clock, limits={"api": 2})
    url = serve(sim)
    for _ in range(2):
        assert egress_client.get(f"{url}/api/v3/time").status_code == 200
    limited = egress_client.get(f"{url}/api/v3/time")
    assert limited.status_code == 429
    clock.now += float(limited.headers["Retry-After"])
    assert egress_client.get(f"{url}/api/v3/time").status_code == 200


def test_each_sapi_endpoint_has_its_own_budget(clock: FakeClock, serve, egress_client: httpx.Client) -> None:
    sim = BinanceSimulator(clock=clock, limits={"sapi": 2})
    sim.add_key(KEY, uid=42, secret=SECRET, ip_whitelist=(EGRESS_IP,))
    url = serve(sim)
    for used in ("1", "2"):
        assert signed_get(egress_client, url, RESTRICTIONS, clock=clock).headers["X-SAPI-USED-IP-WEIGHT-1M"] == used
    assert signed_get(egress_client, url, RESTRICTIONS, clock=clock).status_code == 429
    assert egress_client.get(f"{url}/sapi/v1/system/status").status_code == 200


def test_weight_is_counted_per_ip(clock: FakeClock, serve, egress_client, loopback_client) -> None:
    sim = BinanceSimulator(clock=clock, limits={"api": 1})
    url = serve(sim)
    assert egress_client.get(f"{url}/api/v3/time").status_code == 200
    assert egress_client.get(f"{url}/api/v3/time").status_code == 429
    assert loopback_client.get(f"{url}/api/v3/time").status_code == 200


def test_ban_length_scales_with_window_scale(clock: FakeClock, serve, egress_client: httpx.Client) -> None:
    sim = BinanceSimulator(clock=clock, limits={"api": 1}, window_scale=0.05)
    url = serve(sim)
    egress_client.get(f"{url}/api/v3/time")
    assert egress_client.get(f"{url}/api/v3/time").status_code == 429
    banned = egress_client.get(f"{url}/api/v3/time")
    assert banned.status_code == 418
    assert banned.headers["Retry-After"] == "6"  # 120 s * 0.05


# --------------------------------------------------------------------------- faults
def test_maintenance(url: str, egress_client: httpx.Client, clock: FakeClock, sim) -> None:
    sim.fault = Fault.MAINTENANCE
    assert egress_client.get(f"{url}/sapi/v1/system/status").json() == {"status": 1, "msg": "system_maintenance"}
    assert_error(signed_get(egress_client, url, RESTRICTIONS, clock=clock), 503, 1, "System is under maintenance.")


def test_unavailable_geo_blocked_and_waf(url: str, egress_client: httpx.Client, clock: FakeClock, sim) -> None:
    sim.fault = Fault.UNAVAILABLE
    assert_error(signed_get(egress_client, url, RESTRICTIONS, clock=clock), 503, -1008)
    sim.fault = Fault.GEO_BLOCKED
    geo = signed_get(egress_client, url, RESTRICTIONS, clock=clock)
    assert geo.status_code == 451
    assert "restricted location" in geo.json()["msg"]
    sim.fault = None
    sim.waf_blocked_ips.add(EGRESS_IP)
    assert signed_get(egress_client, url, RESTRICTIONS, clock=clock).status_code == 403
    assert sim.stats["http_403"] == 1


def test_reset_closes_the_connection(url: str, clock: FakeClock, sim) -> None:
    sim.fault = Fault.RESET
    with httpx.Client(timeout=2.0) as client, pytest.raises(httpx.TransportError):
        client.get(f"{url}/api/v3/time")
