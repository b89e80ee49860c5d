"""The BingX simulator's own behaviour over real HTTP: signatures, IP binding by peer address,
the timestamp window, the check order, rate limits (429 -> 418, 5-minute recovery, headers),
the 14-day inactivity deletion and faults.

Requests are signed here with hmac directly (not with keyhealth's signer), so that these tests
pin the simulator to exchanges.md section 3 rather than to our adapter.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterator

import httpx
import pytest

from keyhealth.adapters.http_transport import new_http_client
from simulators.base import Fault
from simulators.bingx import (
    API_PERMISSIONS,
    FUTURES,
    INACTIVITY_SECONDS,
    READ,
    SERVER_TIME,
    SPOT,
    UID,
    UNIVERSAL_TRANSFER,
    WITHDRAW,
    BingXSimulator,
)
from tests.conftest import EGRESS_IP, SECOND_EGRESS_IP
from tests.support.clock import FakeClock

SECRET = "s3cr3t" * 10
START = 1_790_000_000.0


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
def sim(clock: FakeClock) -> BingXSimulator:
    return BingXSimulator(clock=clock)


@pytest.fixture
def second_client() -> Iterator[httpx.Client]:
    client = new_http_client(source_address=SECOND_EGRESS_IP, connect_timeout=1.0, read_timeout=1.0)
    yield client
    client.close()


def signed_url(
    base: str,
    path: str,
    secret: str,
    pairs: list[tuple[str, object]],
    *,
    sign_pairs: list[tuple[str, object]] | None = None,
) -> str:
    query = "&".join(f"{k}={v}" for k, v in pairs)
    signed = "&".join(f"{k}={v}" for k, v in (sign_pairs or pairs))
    signature = hmac.new(secret.encode(), signed.encode(), hashlib.sha256).hexdigest()
    return f"{base}{path}?{query}&signature={signature}"


def get(
    client: httpx.Client,
    base: str,
    sim: BingXSimulator,
    api_key: str | None,
    *,
    path: str = API_PERMISSIONS,
    secret: str = SECRET,
    timestamp: int | None = None,
    recv_window: int | None = None,
) -> httpx.Response:
    pairs: list[tuple[str, object]] = []
    if recv_window is not None:
        pairs.append(("recvWindow", recv_window))
    pairs.append(("timestamp", sim.server_time_ms() if timestamp is None else timestamp))
    headers = {"X-BX-APIKEY": api_key} if api_key is not None else {}
    return client.get(signed_url(base, path, secret, pairs), headers=headers)


def code_of(response: httpx.Response) -> int:
    assert response.status_code == 200
    return response.json()["code"]


# ----------------------------------------------------------------------------- success shapes
def test_apipermissions_answers_bare_by_default(sim, serve, egress_client) -> None:
    key = sim.add_key(secret=SECRET, permissions=(SPOT, READ, FUTURES), ip_addresses=(EGRESS_IP,), note="bot")
    response = get(egress_client, serve(sim), sim, key.api_key)
    assert response.status_code == 200
    assert response.json() == {
        "apiKey": key.api_key,
        "permissions": [1, 2, 3],
        "ipAddresses": [EGRESS_IP],
        "note": "bot",
    }


def test_apipermissions_envelope_flag_wraps_the_answer(clock, serve, egress_client) -> None:
    sim = BingXSimulator(clock=clock, envelope=True)
    key = sim.add_key(secret=SECRET)
    body = get(egress_client, serve(sim), sim, key.api_key).json()
    assert body["code"] == 0
    assert body["data"] == {"apiKey": key.api_key, "permissions": [2], "ipAddresses": [], "note": ""}


def test_uid_endpoint(sim, serve, egress_client) -> None:
    key = sim.add_key(secret=SECRET, uid=424242)
    body = get(egress_client, serve(sim), sim, key.api_key, path=UID).json()
    assert body["code"] == 0
    assert body["data"] == {"uid": 424242}


def test_server_time_is_public_and_carries_the_offset(clock, serve, egress_client) -> None:
    sim = BingXSimulator(clock=clock, time_offset_ms=-7000)
    body = egress_client.get(serve(sim) + SERVER_TIME).json()
    assert body == {"code": 0, "msg": "", "data": {"serverTime": int(START * 1000) - 7000}}


def test_unknown_path_is_404(sim, serve, egress_client) -> None:
    assert egress_client.get(serve(sim) + "/openApi/v9/nothing").status_code == 404


# ----------------------------------------------------------------------------- signature
def test_signature_over_unsorted_string_as_sent_is_accepted(sim, serve, egress_client) -> None:
    key = sim.add_key(secret=SECRET)
    pairs: list[tuple[str, object]] = [("timestamp", sim.server_time_ms()), ("recvWindow", 5000)]
    url = signed_url(serve(sim), API_PERMISSIONS, SECRET, pairs)
    assert egress_client.get(url, headers={"X-BX-APIKEY": key.api_key}).status_code == 200
    assert "code" not in egress_client.get(url, headers={"X-BX-APIKEY": key.api_key}).json()


def test_signature_over_sorted_string_is_accepted_whatever_the_order_sent(sim, serve, egress_client) -> None:
    key = sim.add_key(secret=SECRET)
    ts = sim.server_time_ms()
    url = signed_url(
        serve(sim), API_PERMISSIONS, SECRET, [("timestamp", ts), ("recvWindow", 5000)],
        sign_pairs=[("recvWindow", 5000), ("timestamp", ts)],
    )  # fmt: skip
    assert "code" not in egress_client.get(url, headers={"X-BX-APIKEY": key.api_key}).json()


def test_url_encoded_value_is_verified_against_the_raw_value(sim, serve, egress_client) -> None:
    key = sim.add_key(secret=SECRET)
    ts = sim.server_time_ms()
    raw = f'data={{"a":[1]}}&timestamp={ts}'
    signature = hmac.new(SECRET.encode(), raw.encode(), hashlib.sha256).hexdigest()
    url = f"{serve(sim)}{API_PERMISSIONS}?data=%7B%22a%22%3A%5B1%5D%7D&timestamp={ts}&signature={signature}"
    assert "code" not in egress_client.get(url, headers={"X-BX-APIKEY": key.api_key}).json()


def test_wrong_secret_is_100001(sim, serve, egress_client) -> None:
    key = sim.add_key(secret=SECRET)
    response = get(egress_client, serve(sim), sim, key.api_key, secret="other")
    assert response.json()["code"] == 100001
    assert response.json()["msg"] == "Signature verification failed"
    assert isinstance(response.json()["timestamp"], int)


def test_tampered_query_is_100001(sim, serve, egress_client) -> None:
    key = sim.add_key(secret=SECRET)
    ts = sim.server_time_ms()
    url = signed_url(serve(sim), API_PERMISSIONS, SECRET, [("timestamp", ts)]).replace(
        f"timestamp={ts}", f"recvWindow=60000&timestamp={ts}"
    )
    assert code_of(egress_client.get(url, headers={"X-BX-APIKEY": key.api_key})) == 100001


def test_missing_signature_is_100001(sim, serve, egress_client) -> None:
    key = sim.add_key(secret=SECRET)
    url = f"{serve(sim)}{API_PERMISSIONS}?timestamp={sim.server_time_ms()}"
    assert code_of(egress_client.get(url, headers={"X-BX-APIKEY": key.api_key})) == 100001


# ----------------------------------------------------------------------------- key and IP
def test_missing_key_header_is_null_apikey(sim, serve, egress_client) -> None:
    body = get(egress_client, serve(sim), sim, None).json()
    assert (body["code"], body["msg"]) == (100413, "Null apiKey")


@pytest.mark.parametrize("api_key", ["short", "Z" * 64])
def test_malformed_or_unknown_key_is_100413(sim, serve, egress_client, api_key: str) -> None:
    body = get(egress_client, serve(sim), sim, api_key).json()
    assert body["code"] == 100413
    assert body["msg"].startswith("Incorrect apiKey")


def test_whitelist_is_checked_against_the_tcp_peer(sim, serve, egress_client, second_client) -> None:
    key = sim.add_key(secret=SECRET, ip_addresses=(EGRESS_IP,))
    base = serve(sim)
    assert "code" not in get(egress_client, base, sim, key.api_key).json()
    body = get(second_client, base, sim, key.api_key).json()
    assert body["code"] == 100419
    assert body["msg"].startswith(f"your current request IP is {SECOND_EGRESS_IP} does not match IP whitelist")


# ----------------------------------------------------------------------------- timestamp
@pytest.mark.parametrize(
    ("offset_ms", "recv_window", "accepted"),
    [
        (-4900, None, True),
        (-5100, None, False),  # default recvWindow 5000
        (-9000, 10000, True),
        (-59000, 60000, True),
        (0, 60001, False),  # recvWindow max 60000
        (900, None, True),
        (1500, None, False),  # too far ahead of the server clock
    ],
)
def test_timestamp_window(sim, serve, egress_client, offset_ms: int, recv_window: int | None, accepted: bool) -> None:
    key = sim.add_key(secret=SECRET)
    response = get(
        egress_client, serve(sim), sim, key.api_key, timestamp=sim.server_time_ms() + offset_ms, recv_window=recv_window
    )
    body = response.json()
    if accepted:
        assert "code" not in body
    else:
        assert (body["code"], body["msg"]) == (100421, "Null timestamp or timestamp mismatch")


def test_missing_timestamp_is_100421(sim, serve, egress_client) -> None:
    key = sim.add_key(secret=SECRET)
    url = signed_url(serve(sim), API_PERMISSIONS, SECRET, [("recvWindow", 5000)])
    assert code_of(egress_client.get(url, headers={"X-BX-APIKEY": key.api_key})) == 100421


# ----------------------------------------------------------------------------- check order
def test_order_key_before_ip(sim, serve, second_client) -> None:
    assert get(second_client, serve(sim), sim, "Q" * 64).json()["code"] == 100413


def test_order_ip_before_timestamp_and_signature(sim, serve, second_client) -> None:
    key = sim.add_key(secret=SECRET, ip_addresses=(EGRESS_IP,))
    assert get(second_client, serve(sim), sim, key.api_key, secret="bad", timestamp=1).json()["code"] == 100419


def test_order_timestamp_before_signature(sim, serve, egress_client) -> None:
    key = sim.add_key(secret=SECRET)
    assert get(egress_client, serve(sim), sim, key.api_key, secret="bad", timestamp=1).json()["code"] == 100421


def test_order_signature_before_frozen_before_permission(sim, serve, egress_client) -> None:
    key = sim.add_key(secret=SECRET, permissions=(SPOT,), frozen=True)
    base = serve(sim)
    assert get(egress_client, base, sim, key.api_key, secret="bad").json()["code"] == 100001
    body = get(egress_client, base, sim, key.api_key).json()
    assert (body["code"], body["msg"]) == (100414, "The account is abnormal, please contact customer service.")
    key.frozen = False
    body = get(egress_client, base, sim, key.api_key).json()
    assert body["code"] == 100004
    assert "need Read permission" in body["msg"]


# ----------------------------------------------------------------------------- key lifecycle
def test_unbound_trading_key_is_deleted_after_14_idle_days(sim, clock, serve, egress_client) -> None:
    unbound = sim.add_key(secret=SECRET, permissions=(READ, FUTURES))
    transfer = sim.add_key(secret=SECRET, permissions=(READ, UNIVERSAL_TRANSFER))
    bound = sim.add_key(secret=SECRET, permissions=(READ, SPOT), ip_addresses=(EGRESS_IP,))
    read_only = sim.add_key(secret=SECRET)
    base = serve(sim)
    clock.now += INACTIVITY_SECONDS - 60
    assert "code" not in get(egress_client, base, sim, unbound.api_key).json()  # reads do not count as use
    clock.now += 120
    assert get(egress_client, base, sim, unbound.api_key).json()["code"] == 100413
    assert get(egress_client, base, sim, transfer.api_key).json()["code"] == 100413
    assert "code" not in get(egress_client, base, sim, bound.api_key).json()
    assert "code" not in get(egress_client, base, sim, read_only.api_key).json()
    assert unbound.api_key not in sim.keys
    assert sim.stats["keys_deleted_inactive"] == 2


def test_trading_use_resets_the_inactivity_timer(sim, clock, serve, egress_client) -> None:
    key = sim.add_key(secret=SECRET, permissions=(READ, SPOT))
    clock.now += INACTIVITY_SECONDS - 60
    sim.touch(key.api_key)
    clock.now += 120
    assert "code" not in get(egress_client, serve(sim), sim, key.api_key).json()


def test_key_rules_of_the_api_page(sim) -> None:
    with pytest.raises(ValueError, match="withdrawal"):
        sim.add_key(permissions=(READ, WITHDRAW))
    with pytest.raises(ValueError, match="20 IP"):
        sim.add_key(ip_addresses=[f"10.0.0.{i}" for i in range(21)])
    with pytest.raises(ValueError, match="64"):
        sim.add_key(api_key="abc")
    for _ in range(20):
        sim.add_key(uid=7)
    with pytest.raises(ValueError, match="20 API keys"):
        sim.add_key(uid=7)
    assert sim.add_key(permissions=(READ, WITHDRAW), ip_addresses=(EGRESS_IP,)).permissions == (2, 5)


# ----------------------------------------------------------------------------- rate limits
def test_apipermissions_is_limited_to_2_per_second_per_uid(sim, clock, serve, egress_client) -> None:
    first = sim.add_key(secret=SECRET, uid=1)
    same_account = sim.add_key(secret=SECRET, uid=1)
    other_account = sim.add_key(secret=SECRET, uid=2)
    base = serve(sim)
    assert "code" not in get(egress_client, base, sim, first.api_key).json()
    assert "code" not in get(egress_client, base, sim, same_account.api_key).json()
    body = get(egress_client, base, sim, first.api_key).json()
    assert (body["code"], body["msg"]) == (100410, "throttle")
    assert "code" not in get(egress_client, base, sim, other_account.api_key).json()
    assert get(egress_client, base, sim, first.api_key, path=UID).json()["code"] == 0  # its own 10/s limit
    clock.now += 1.0
    assert "code" not in get(egress_client, base, sim, first.api_key).json()


def test_ip_interface_limit_is_300_per_10s_then_429_then_418(sim, clock, serve, egress_client, second_client) -> None:
    base = serve(sim)
    url = f"{base}{API_PERMISSIONS}?timestamp=1&signature=x"
    statuses = [egress_client.get(url).status_code for _ in range(300)]
    assert statuses == [200] * 300  # Null apiKey answers still count against the IP
    limited = egress_client.get(url)
    assert limited.status_code == 429
    assert limited.headers["X-RateLimit-Requests-Remain"] == "0"
    banned = egress_client.get(base + SERVER_TIME)  # the restriction covers the whole IP
    assert banned.status_code == 418
    assert second_client.get(url).status_code == 200  # other IPs are unaffected
    assert sim.stats[f"ip_429:{EGRESS_IP}"] == 1
    assert sim.stats[f"ip_418:{EGRESS_IP}"] == 1
    clock.now += 299
    assert egress_client.get(url).status_code == 418
    clock.now += 2  # recovers after 5 minutes
    assert egress_client.get(url).status_code == 200


def test_ip_account_group_total_spans_interfaces(clock, serve, egress_client) -> None:
    sim = BingXSimulator(clock=clock, account_group_limit=3)
    base = serve(sim)
    key = sim.add_key(secret=SECRET)
    assert get(egress_client, base, sim, key.api_key).status_code == 200
    assert get(egress_client, base, sim, key.api_key, path=UID).status_code == 200
    assert get(egress_client, base, sim, key.api_key, path=UID).status_code == 200
    assert get(egress_client, base, sim, key.api_key).status_code == 429


def test_rate_limit_headers_count_down(sim, serve, egress_client) -> None:
    key = sim.add_key(secret=SECRET)
    base = serve(sim)
    first = get(egress_client, base, sim, key.api_key)
    second = get(egress_client, base, sim, key.api_key, path=UID)
    assert first.headers["X-RateLimit-Requests-Remain"] == "299"
    assert second.headers["X-RateLimit-Requests-Remain"] == "299"  # per interface; group total is 1998 left
    expire = int(first.headers["X-RateLimit-Requests-Expire"])
    assert int(START * 1000) < expire <= int(START * 1000) + 10_000


def test_windows_scale_for_benchmarks(clock, serve, egress_client) -> None:
    sim = BingXSimulator(clock=clock, window_scale=0.01, interface_limit=1)
    base = serve(sim)
    url = f"{base}{API_PERMISSIONS}?timestamp=1&signature=x"
    assert egress_client.get(url).status_code == 200
    assert egress_client.get(url).status_code == 429
    clock.now += 3.01  # 5 minutes scaled by 0.01
    assert egress_client.get(url).status_code == 200


# ----------------------------------------------------------------------------- faults
def test_maintenance_is_http_503_with_code_100503(sim, serve, egress_client) -> None:
    sim.fault = Fault.MAINTENANCE
    response = egress_client.get(serve(sim) + SERVER_TIME)
    assert response.status_code == 503
    assert response.json()["code"] == 100503


@pytest.mark.parametrize(("fault", "status"), [(Fault.UNAVAILABLE, 502), (Fault.GEO_BLOCKED, 451)])
def test_front_faults(sim, serve, egress_client, fault: Fault, status: int) -> None:
    sim.fault = fault
    assert egress_client.get(serve(sim) + API_PERMISSIONS).status_code == status
    assert sim.stats[f"http_{status}"] == 1


def test_reset_closes_the_connection(sim, serve, egress_client) -> None:
    sim.fault = Fault.RESET
    with pytest.raises(httpx.TransportError):
        egress_client.get(serve(sim) + SERVER_TIME)
