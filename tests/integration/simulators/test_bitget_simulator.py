"""The Bitget simulator over real HTTP: it must reject what Bitget rejects, in Bitget's words.

Requests are signed by hand here (not with the adapter), so the simulator is checked on its
own against exchanges.md §2.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from simulators.base import Fault
from simulators.bitget import (
    CLASSIC_INFO_PATH,
    TIME_PATH,
    UNIFIED_INFO_PATH,
    UNIFIED_MODE_MESSAGE,
    BitgetSimulator,
)
from tests.conftest import EGRESS_IP
from tests.support.clock import FakeClock

START = 1_763_690_400.0
SECRET = "sim-test-secret"
PASSPHRASE = "SimPass123"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
def sim(clock: FakeClock) -> BitgetSimulator:
    return BitgetSimulator(clock=clock)


@pytest.fixture
def url(sim: BitgetSimulator, serve) -> str:
    return serve(sim)


def hmac_sign(secret: str, message: bytes) -> str:
    return base64.b64encode(hmac.new(secret.encode(), message, hashlib.sha256).digest()).decode()


def signed_get(
    client: httpx.Client,
    url: str,
    path: str,
    api_key: str,
    *,
    clock: FakeClock,
    secret: str = SECRET,
    passphrase: str | None = PASSPHRASE,
    query: str = "",
    body: bytes = b"",
    timestamp: str | None = None,
    sign_query: str | None = None,
    sign_body: bytes | None = None,
    rsa_key: rsa.RSAPrivateKey | None = None,
    drop: tuple[str, ...] = (),
) -> httpx.Response:
    """A GET signed the Bitget way; `sign_*` sign other bytes than those sent."""
    ts = timestamp if timestamp is not None else str(int(clock() * 1000))
    signed_query = query if sign_query is None else sign_query
    message = f"{ts}GET{path}{'?' + signed_query if signed_query else ''}".encode() + (
        body if sign_body is None else sign_body
    )
    if rsa_key is not None:
        signature = base64.b64encode(rsa_key.sign(message, padding.PKCS1v15(), hashes.SHA256())).decode()
    else:
        signature = hmac_sign(secret, message)
    headers = {"ACCESS-KEY": api_key, "ACCESS-SIGN": signature, "ACCESS-TIMESTAMP": ts, "locale": "en-US"}
    if passphrase is not None:
        headers["ACCESS-PASSPHRASE"] = passphrase
    for name in drop:
        headers.pop(name)
    target = url + path + ("?" + query if query else "")
    return client.request("GET", target, headers=headers, content=body)


def add_key(sim: BitgetSimulator, **kwargs):
    account_kwargs = {k: kwargs.pop(k) for k in ("unified", "frozen") if k in kwargs}
    account = sim.add_account(**account_kwargs)
    kwargs.setdefault("secret", SECRET)
    kwargs.setdefault("passphrase", PASSPHRASE)
    kwargs.setdefault("ips", (EGRESS_IP,))
    return sim.add_key(account, **kwargs)


def assert_error(response: httpx.Response, code: str, status: int = 400, msg: str | None = None) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"code", "msg", "requestTime", "data"}
    assert body["code"] == code
    assert body["data"] is None
    assert isinstance(body["requestTime"], int)
    if msg is not None:
        assert body["msg"] == msg


# ------------------------------------------------------------------ public time
def test_server_time_is_public_and_follows_the_simulated_offset(clock, serve, egress_client):
    url = serve(BitgetSimulator(clock=clock, time_offset_ms=12_345))

    body = egress_client.get(url + TIME_PATH).json()

    assert body["code"] == "00000"
    assert body["data"]["serverTime"] == str(int(START * 1000) + 12_345)


# ------------------------------------------------------------------ success shapes
def test_classic_account_info_answers_with_the_documented_fields(sim, url, clock, egress_client):
    key = add_key(sim, authorities=("stor", "stow", "wwow"), ips=(EGRESS_IP, "198.51.100.1"))

    response = signed_get(egress_client, url, CLASSIC_INFO_PATH, key.api_key, clock=clock)

    assert response.status_code == 200
    body = response.json()
    assert body["code"] == "00000"
    data = body["data"]
    assert data["userId"] == key.account.user_id
    assert data["ips"] == f"{EGRESS_IP},198.51.100.1"  # one comma-separated string
    assert data["authorities"] == ["stor", "stow", "wwow"]
    assert {"inviterId", "parentId", "traderType", "channelCode", "channel", "regisTime"} <= set(data)


def test_unified_account_info_answers_with_v3_fields(sim, url, clock, egress_client):
    key = add_key(sim, unified=True, authorities=("stor", "stow", "coow", "wwow"), ips=())

    data = signed_get(egress_client, url, UNIFIED_INFO_PATH, key.api_key, clock=clock).json()["data"]

    assert data["uid"] == key.account.user_id
    assert data["ips"] == ""
    assert data["permissions"] == ["uta_mgt", "uta_trade", "withdraw"]
    assert data["permType"] == "read-and-write"
    assert data["parentId"] == ""  # only sub-accounts have one (§2.1 B)


def test_rsa_key_is_verified_with_its_public_key(sim, url, clock, egress_client):
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    key = add_key(sim, secret=None, rsa_public_key_pem=public_pem)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    good = signed_get(egress_client, url, CLASSIC_INFO_PATH, key.api_key, clock=clock, rsa_key=private)
    bad = signed_get(egress_client, url, CLASSIC_INFO_PATH, key.api_key, clock=clock, rsa_key=other)
    garbage = signed_get(egress_client, url, CLASSIC_INFO_PATH, key.api_key, clock=clock, secret="x")

    assert good.status_code == 200
    assert_error(bad, "40009")
    assert_error(garbage, "40009")


# ------------------------------------------------------------------ signature over exact bytes
def test_signature_covers_the_raw_query_as_sent(sim, url, clock, egress_client):
    key = add_key(sim)

    as_sent = signed_get(egress_client, url, CLASSIC_INFO_PATH, key.api_key, clock=clock, query="b=2&a=1")
    reordered = signed_get(
        egress_client, url, CLASSIC_INFO_PATH, key.api_key, clock=clock, query="b=2&a=1", sign_query="a=1&b=2"
    )

    assert as_sent.status_code == 200
    assert_error(reordered, "40009", msg="sign signature error")


def test_signature_covers_the_body(sim, url, clock, egress_client):
    key = add_key(sim)

    signed = signed_get(egress_client, url, CLASSIC_INFO_PATH, key.api_key, clock=clock, body=b'{"x":1}')
    unsigned = signed_get(
        egress_client, url, CLASSIC_INFO_PATH, key.api_key, clock=clock, body=b'{"x":1}', sign_body=b""
    )

    assert signed.status_code == 200
    assert_error(unsigned, "40009")


# ------------------------------------------------------------------ rejections, in order
def test_missing_key(url, clock, egress_client):
    assert_error(
        signed_get(egress_client, url, CLASSIC_INFO_PATH, "", clock=clock, drop=("ACCESS-KEY",)),
        "40001",
        msg="ACCESS_KEY cannot be empty",
    )


def test_malformed_key(url, clock, egress_client):
    assert_error(signed_get(egress_client, url, CLASSIC_INFO_PATH, "not-a-key", clock=clock), "40006")


def test_unknown_key_answers_exactly_as_bitget_does(sim, url, clock, egress_client):
    response = signed_get(egress_client, url, CLASSIC_INFO_PATH, "bg_" + "0" * 32, clock=clock)

    assert response.status_code == 400
    assert response.json() == {
        "code": "40037",
        "msg": "Apikey does not exist",
        "requestTime": int(START * 1000),
        "data": None,
    }


@pytest.mark.parametrize(
    ("timestamp", "code"),
    [
        ("soon", "40005"),
        ("", "40005"),
        (str(int((START - 31) * 1000)), "40008"),
        (str(int((START + 31) * 1000)), "40008"),
    ],
)
def test_timestamp_out_of_the_30s_window(sim, url, clock, egress_client, timestamp, code):
    key = add_key(sim)

    response = signed_get(egress_client, url, CLASSIC_INFO_PATH, key.api_key, clock=clock, timestamp=timestamp)

    assert_error(response, code)


def test_timestamp_within_the_window_is_accepted(sim, url, clock, egress_client):
    key = add_key(sim)
    ts = str(int((START - 29) * 1000))

    assert signed_get(egress_client, url, CLASSIC_INFO_PATH, key.api_key, clock=clock, timestamp=ts).status_code == 200


def test_timestamp_is_judged_by_the_exchange_clock(clock, serve, egress_client):
    sim = BitgetSimulator(clock=clock, time_offset_ms=-60_000)
    url = serve(sim)
    key = add_key(sim)
    exchange_ts = str(int(START * 1000) - 60_000)

    ours = signed_get(egress_client, url, CLASSIC_INFO_PATH, key.api_key, clock=clock)
    theirs = signed_get(egress_client, url, CLASSIC_INFO_PATH, key.api_key, clock=clock, timestamp=exchange_ts)

    assert_error(ours, "40008", msg="Request timestamp expired")
    assert theirs.status_code == 200


def test_missing_and_wrong_signature(sim, url, clock, egress_client):
    key = add_key(sim)

    assert_error(
        signed_get(egress_client, url, CLASSIC_INFO_PATH, key.api_key, clock=clock, drop=("ACCESS-SIGN",)), "40003"
    )
    assert_error(signed_get(egress_client, url, CLASSIC_INFO_PATH, key.api_key, clock=clock, secret="wrong"), "40009")


def test_missing_and_wrong_passphrase(sim, url, clock, egress_client):
    key = add_key(sim)

    missing = signed_get(egress_client, url, CLASSIC_INFO_PATH, key.api_key, clock=clock, passphrase=None)
    wrong = signed_get(egress_client, url, CLASSIC_INFO_PATH, key.api_key, clock=clock, passphrase="Wrong1234")

    assert_error(missing, "40011")
    assert_error(wrong, "40012", msg="apikey/password is incorrect")


def test_whitelist_is_checked_against_the_tcp_peer(sim, url, clock, egress_client, loopback_client):
    key = add_key(sim, ips=(EGRESS_IP,))
    open_key = add_key(sim, ips=())

    assert signed_get(egress_client, url, CLASSIC_INFO_PATH, key.api_key, clock=clock).status_code == 200
    assert_error(
        signed_get(loopback_client, url, CLASSIC_INFO_PATH, key.api_key, clock=clock), "40018", msg="Invalid IP"
    )
    assert signed_get(loopback_client, url, CLASSIC_INFO_PATH, open_key.api_key, clock=clock).status_code == 200


def test_signature_and_passphrase_are_checked_before_the_ip(sim, url, clock, loopback_client):
    key = add_key(sim, ips=(EGRESS_IP,))

    bad_secret = signed_get(loopback_client, url, CLASSIC_INFO_PATH, key.api_key, clock=clock, secret="wrong")
    bad_passphrase = signed_get(loopback_client, url, CLASSIC_INFO_PATH, key.api_key, clock=clock, passphrase="No1")

    assert_error(bad_secret, "40009")
    assert_error(bad_passphrase, "40012")


def test_frozen_account(sim, url, clock, egress_client):
    key = add_key(sim, frozen=True)

    assert_error(signed_get(egress_client, url, CLASSIC_INFO_PATH, key.api_key, clock=clock), "40024")


def test_account_mode_decides_which_endpoint_answers(sim, url, clock, egress_client):
    unified = add_key(sim, unified=True)
    classic = add_key(sim)

    assert_error(
        signed_get(egress_client, url, CLASSIC_INFO_PATH, unified.api_key, clock=clock),
        "40085",
        msg=UNIFIED_MODE_MESSAGE,
    )
    assert_error(signed_get(egress_client, url, UNIFIED_INFO_PATH, classic.api_key, clock=clock), "40084")


def test_classic_endpoint_needs_a_spot_read_permission(sim, url, clock, egress_client):
    futures_only = add_key(sim, authorities=("coor", "coow"))
    legacy = add_key(sim, authorities=("readonly",))

    assert_error(signed_get(egress_client, url, CLASSIC_INFO_PATH, futures_only.api_key, clock=clock), "40014")
    assert signed_get(egress_client, url, CLASSIC_INFO_PATH, legacy.api_key, clock=clock).status_code == 200


# ------------------------------------------------------------------ rate limits
TOO_MANY = {"code": "429", "msg": "Too Many Requests"}


def test_classic_info_allows_one_request_per_second_per_uid(sim, url, clock, egress_client):
    key = add_key(sim)
    other = add_key(sim)

    first = signed_get(egress_client, url, CLASSIC_INFO_PATH, key.api_key, clock=clock)
    second = signed_get(egress_client, url, CLASSIC_INFO_PATH, key.api_key, clock=clock)
    other_uid = signed_get(egress_client, url, CLASSIC_INFO_PATH, other.api_key, clock=clock)
    clock.now += 1.0
    next_second = signed_get(egress_client, url, CLASSIC_INFO_PATH, key.api_key, clock=clock)

    assert first.status_code == 200
    assert_error(second, "429", status=429, msg="Too Many Requests")
    assert "Retry-After" not in second.headers  # Bitget documents no rate-limit headers
    assert other_uid.status_code == 200
    assert next_second.status_code == 200
    assert sim.stats["429:uid:" + key.account.user_id] == 1


def test_two_keys_of_one_account_share_the_uid_limit(sim, url, clock, egress_client):
    key = add_key(sim)
    sibling = sim.add_key(key.account, secret=SECRET, passphrase=PASSPHRASE, ips=(EGRESS_IP,))

    assert signed_get(egress_client, url, CLASSIC_INFO_PATH, key.api_key, clock=clock).status_code == 200
    assert signed_get(egress_client, url, CLASSIC_INFO_PATH, sibling.api_key, clock=clock).status_code == 429


def test_unified_info_allows_five_per_second(sim, url, clock, egress_client):
    key = add_key(sim, unified=True)

    statuses = [
        signed_get(egress_client, url, UNIFIED_INFO_PATH, key.api_key, clock=clock).status_code for _ in range(6)
    ]

    assert statuses == [200] * 5 + [429]


def test_ip_limit_breach_locks_the_ip_for_five_minutes(clock, serve, egress_client, loopback_client):
    sim = BitgetSimulator(clock=clock, ip_requests_per_minute=5)
    url = serve(sim)
    clock.now = 1_763_690_400.0  # on a minute boundary

    statuses = [egress_client.get(url + TIME_PATH).status_code for _ in range(6)]
    locked = egress_client.get(url + TIME_PATH)
    other_ip = loopback_client.get(url + TIME_PATH)
    clock.now += 61  # a new minute window, but still locked
    still_locked = egress_client.get(url + TIME_PATH)
    clock.now += 240  # 301 s after the breach
    free = egress_client.get(url + TIME_PATH)

    assert statuses == [200] * 5 + [429]
    assert locked.status_code == 429
    assert locked.json()["code"] == "429"
    assert other_ip.status_code == 200
    assert still_locked.status_code == 429
    assert free.status_code == 200
    assert sim.stats[f"429:{EGRESS_IP}"] == 3
    assert sim.stats["ip_lockouts"] == 1
    assert sim.stats["http_418"] == 0  # no 418 on Bitget


def test_default_ip_limit_is_6000_per_minute_and_windows_scale(clock):
    sim = BitgetSimulator(clock=clock, window_scale=0.01)
    ip_window = sim._ip_window

    assert ip_window.limit == 6000
    assert ip_window.seconds == pytest.approx(0.6)
    assert sim.window(300) == pytest.approx(3.0)


# ------------------------------------------------------------------ faults
@pytest.mark.parametrize(
    ("fault", "status", "code"),
    [(Fault.MAINTENANCE, 503, "40015"), (Fault.UNAVAILABLE, 502, None), (Fault.GEO_BLOCKED, 451, None)],
)
def test_faults_answer_like_bitget_fronts(sim, url, clock, egress_client, fault, status, code):
    key = add_key(sim)
    sim.fault = fault

    response = signed_get(egress_client, url, CLASSIC_INFO_PATH, key.api_key, clock=clock)

    assert response.status_code == status
    if code:
        assert response.json()["code"] == code
    sim.fault = None
    clock.now += 1
    assert signed_get(egress_client, url, CLASSIC_INFO_PATH, key.api_key, clock=clock).status_code == 200


def test_reset_fault_drops_the_connection(sim, url, egress_client):
    sim.fault = Fault.RESET

    with pytest.raises(httpx.TransportError):
        egress_client.get(url + TIME_PATH)


def test_unknown_path_is_404(url, egress_client):
    response = egress_client.get(url + "/api/v2/nothing")

    assert_error(response, "40404", status=404)
