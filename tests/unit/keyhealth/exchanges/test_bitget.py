"""Bitget adapter: signing, the error table row by row, and how answers become reports.

Given a scripted exchange (httpx.MockTransport), when a key is checked, then the report says
what Bitget's answer means. No network, no simulator.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable

import httpx
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

from keyhealth.adapters.http_transport import HttpxTransport
from keyhealth.domain.credentials import Credentials, KeyType, Secret
from keyhealth.domain.model import Permissions, Scope
from keyhealth.exchanges.bitget import (
    ACCOUNT_INFO_CLASSIC,
    ACCOUNT_INFO_UNIFIED,
    ERROR_CODES,
    SERVER_TIME,
    BitgetAdapter,
    classic_permissions,
    load_rsa_private_key,
    parse_ips,
    prehash,
    sign_hmac,
    sign_rsa,
    signer_for,
    unified_permissions,
)

BASE = "https://api.bitget.com"
EGRESS = "203.0.113.10"
NOW = 1_763_690_400.0  # 2025-11-21T02:00:00Z
SECRET = "unit-secret-b1tget"
PASSPHRASE = "UnitPass123"
API_KEY = "bg_0123456789abcdef0123456789abcdef"
BOTH = frozenset({Scope.SPOT, Scope.FUTURES})

Handler = Callable[[httpx.Request], httpx.Response]


def ok(data: object) -> httpx.Response:
    return httpx.Response(200, json={"code": "00000", "msg": "success", "requestTime": 1, "data": data})


def error(code: str, msg: str = "some message", status: int = 400) -> httpx.Response:
    return httpx.Response(status, json={"code": code, "msg": msg, "requestTime": 1, "data": None})


def classic_info(**overrides: object) -> dict[str, object]:
    info: dict[str, object] = {
        "userId": "6100000001",
        "inviterId": "",
        "ips": EGRESS,
        "authorities": ["stor", "stow", "coor", "coow"],
        "parentId": 6100000001,
        "traderType": "not_trader",
        "channelCode": "",
        "channel": "",
        "regisTime": "1690000000000",
    }
    info.update(overrides)
    return info


def unified_info(**overrides: object) -> dict[str, object]:
    info: dict[str, object] = {
        "uid": "6200000002",
        "inviterId": "",
        "parentId": "",
        "channelCode": "",
        "channel": "",
        "ips": EGRESS,
        "permType": "read-and-write",
        "permissions": ["uta_mgt", "uta_trade"],
        "regisTime": "1690000000000",
    }
    info.update(overrides)
    return info


class Exchange:
    """A scripted Bitget: path -> handler; records every request."""

    def __init__(self, routes: dict[str, Handler]) -> None:
        self.routes = routes
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.routes[request.url.path](request)

    @property
    def paths(self) -> list[str]:
        return [r.url.path for r in self.requests]


def adapter_for(exchange: Exchange, *, egress_ips: tuple[str, ...] = (EGRESS,), clock=lambda: NOW) -> BitgetAdapter:
    client = httpx.Client(transport=httpx.MockTransport(exchange))
    return BitgetAdapter(transport=HttpxTransport(client), base_url=BASE, egress_ips=egress_ips, clock=clock)


def credentials(secret: str = SECRET, key_type: KeyType = KeyType.HMAC) -> Credentials:
    return Credentials(api_key=API_KEY, api_secret=Secret(secret), passphrase=Secret(PASSPHRASE), key_type=key_type)


def check_with(routes: dict[str, Handler], scopes=BOTH, **kwargs):
    exchange = Exchange(routes)
    result = adapter_for(exchange).check(credentials(), scopes, **kwargs)
    return result, exchange


# ------------------------------------------------------------------ signing
@pytest.mark.parametrize(
    ("args", "expected"),
    [
        # exchanges.md §2.2 / Bitget's signature page: GET with a query, the query after "?"
        (
            ("16273667805456", "GET", "/api/mix/v2/market/depth", "limit=20&symbol=BTCUSDT"),
            "16273667805456GET/api/mix/v2/market/depth?limit=20&symbol=BTCUSDT",
        ),
        (
            ("1591089508404", "get", "/api/v2/market/depth", "symbol=btcusdt_spbl&limit=20"),
            "1591089508404GET/api/v2/market/depth?symbol=btcusdt_spbl&limit=20",
        ),
        # POST: no "?", the body appended as sent
        (
            ("1561022985382", "POST", "/api/v2/order/order", "", '{"symbol":"btcusdt_spbl","quantity":"8"}'),
            '1561022985382POST/api/v2/order/order{"symbol":"btcusdt_spbl","quantity":"8"}',
        ),
        # the key check itself: no query, no body, no "?"
        ((1700000000000, "GET", "/api/v2/spot/account/info"), "1700000000000GET/api/v2/spot/account/info"),
    ],
)
def test_prehash_matches_the_documented_strings(args, expected):
    assert prehash(*args) == expected


def test_hmac_signature_matches_the_self_computed_example():
    # exchanges.md §2.2: secret `test-secret`, ts 1700000000000, GET /api/v2/spot/account/info
    message = prehash(1700000000000, "GET", "/api/v2/spot/account/info")
    assert sign_hmac("test-secret", message) == "52Jmb4pQUaWJYppqP5xuGLMgrSK7f/9tBoMf145hBHM="


def test_rsa_signature_verifies_with_the_public_key_and_fails_for_another_message():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    message = prehash(1700000000000, "GET", "/api/v2/spot/account/info")

    signature = base64.b64decode(sign_rsa(load_rsa_private_key(pem), message))

    key.public_key().verify(signature, message.encode(), padding.PKCS1v15(), hashes.SHA256())
    with pytest.raises(InvalidSignature):
        key.public_key().verify(signature, (message + "x").encode(), padding.PKCS1v15(), hashes.SHA256())
    assert signer_for(credentials(pem, KeyType.RSA))(message) == base64.b64encode(signature).decode()


def test_unreadable_rsa_key_error_does_not_quote_the_key():
    canary = "-----BEGIN PRIVATE KEY-----\nCANARYnotakey\n-----END PRIVATE KEY-----"
    with pytest.raises(ValueError, match="RSA") as caught:
        load_rsa_private_key(canary)
    assert "CANARY" not in str(caught.value)


def test_ed25519_keys_are_refused_by_the_signer():
    pem = (
        ed25519.Ed25519PrivateKey.generate()
        .private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        .decode()
    )
    with pytest.raises(ValueError, match="HMAC or RSA"):
        signer_for(credentials(pem, KeyType.ED25519))
    with pytest.raises(ValueError, match="RSA"):
        signer_for(credentials(pem, KeyType.RSA))  # an Ed25519 PEM is not an RSA key


def test_signed_request_carries_bitget_headers_and_a_valid_signature():
    result, exchange = check_with({ACCOUNT_INFO_CLASSIC: lambda r: ok(classic_info())})

    request = exchange.requests[0]
    assert request.method == "GET"
    assert str(request.url) == BASE + ACCOUNT_INFO_CLASSIC
    headers = request.headers
    assert headers["ACCESS-KEY"] == API_KEY
    assert headers["ACCESS-TIMESTAMP"] == str(int(NOW * 1000))
    assert headers["ACCESS-PASSPHRASE"] == PASSPHRASE  # raw, not HMAC'd (§2.2)
    assert headers["locale"] == "en-US"
    expected = base64.b64encode(
        hmac.new(SECRET.encode(), f"{int(NOW * 1000)}GET{ACCOUNT_INFO_CLASSIC}".encode(), hashlib.sha256).digest()
    ).decode()
    assert headers["ACCESS-SIGN"] == expected
    assert result.report.status.value == "healthy"


def test_unreadable_rsa_key_is_an_invalid_secret_without_asking_bitget():
    exchange = Exchange({})
    result = adapter_for(exchange).check(credentials("not a pem", KeyType.RSA), BOTH)

    assert result.report.codes == ["invalid_secret"]
    assert exchange.requests == []


# ------------------------------------------------------------------ error table
# Written out here from the brief and exchanges.md §2.3, not read from the module, so a
# wrong row in the module's table fails.
EXPECTED_ROWS = {
    "40001": "invalid_api_key",
    "40006": "invalid_api_key",
    "40037": "invalid_api_key",
    "40099": "invalid_api_key",
    "40009": "invalid_secret",
    "40011": "invalid_passphrase",
    "40012": "invalid_passphrase",
    "40036": "invalid_passphrase",
    "40018": "ip_not_whitelisted",
    "40038": "ip_not_whitelisted",
    "40014": "scope_not_permitted",
    "40025": "scope_not_permitted",
    "40005": "clock_skew",
    "40008": "clock_skew",
    "40078": "clock_skew",
    "40079": "clock_skew",
    "40013": "account_restricted",
    "40023": "account_restricted",
    "40024": "account_restricted",
    "40026": "account_restricted",
    "40031": "account_restricted",
    "429": "rate_limited",
    "40010": "exchange_unavailable",
    "40015": "exchange_unavailable",
    "45001": "exchange_unavailable",
    "40725": "exchange_unavailable",
    "41114": "exchange_unavailable",
    "40844": "exchange_unavailable",
    "45043": "exchange_unavailable",
}
TRANSIENT = {"clock_skew", "rate_limited", "exchange_unavailable"}


def test_every_table_row_is_tested():
    assert set(ERROR_CODES) == set(EXPECTED_ROWS)


@pytest.mark.parametrize(("code", "finding"), sorted(EXPECTED_ROWS.items()))
def test_error_code_becomes_its_finding(code, finding):
    message = f"message for {code}"
    result, _ = check_with(
        {
            ACCOUNT_INFO_CLASSIC: lambda r: error(code, message),
            SERVER_TIME: lambda r: ok({"serverTime": str(int(NOW * 1000))}),
        }
    )

    report = result.report
    assert report.codes == [finding]
    assert report.findings[0].exchange_code == code
    assert report.findings[0].exchange_message == message
    assert report.status.value == ("unknown" if finding in TRANSIENT else "failing")


def test_unknown_code_is_inconclusive_not_failing():
    result, _ = check_with({ACCOUNT_INFO_CLASSIC: lambda r: error("49999", "brand new error")})

    assert result.report.codes == ["exchange_unavailable"]
    assert result.report.status.value == "unknown"
    assert result.report.findings[0].exchange_code == "49999"


@pytest.mark.parametrize(
    ("response", "code"),
    [
        (error("429", "Too Many Requests", status=429), "rate_limited"),
        (error("40015", "System is abnormal", status=503), "exchange_unavailable"),
        (httpx.Response(502, text="<html>Bad Gateway</html>"), "exchange_unavailable"),
        (httpx.Response(404, text="<html>not found</html>"), "exchange_unavailable"),
        (httpx.Response(451, text="restricted"), "egress_blocked"),
    ],
)
def test_http_level_failures_are_transient(response, code):
    result, _ = check_with({ACCOUNT_INFO_CLASSIC: lambda r: response})

    assert result.report.codes == [code]
    assert result.report.status.value == "unknown"


def test_ip_error_marks_the_key_restricted_with_an_unknown_list():
    result, _ = check_with({ACCOUNT_INFO_CLASSIC: lambda r: error("40018", "Invalid IP")})

    report = result.report
    assert report.ip_restricted is True
    assert report.ip_whitelist is None
    assert EGRESS in report.findings[0].message


def test_permission_error_on_the_read_call_means_the_key_cannot_read():
    result, _ = check_with({ACCOUNT_INFO_CLASSIC: lambda r: error("40014", "Incorrect permissions")})

    assert result.report.permissions.read is False
    assert result.report.codes == ["scope_not_permitted"]


# ------------------------------------------------------------------ clock
def test_timestamp_error_resyncs_with_bitget_time_and_retries_once():
    server_ms = int(NOW * 1000) + 45_000

    def account_info(request: httpx.Request) -> httpx.Response:
        if abs(int(request.headers["ACCESS-TIMESTAMP"]) - server_ms) > 30_000:
            return error("40008", "Request timestamp expired")
        return ok(classic_info())

    result, exchange = check_with(
        {ACCOUNT_INFO_CLASSIC: account_info, SERVER_TIME: lambda r: ok({"serverTime": str(server_ms)})}
    )

    assert exchange.paths == [ACCOUNT_INFO_CLASSIC, SERVER_TIME, ACCOUNT_INFO_CLASSIC]
    assert int(exchange.requests[2].headers["ACCESS-TIMESTAMP"]) == server_ms
    assert result.report.status.value == "healthy"


def test_unreadable_server_time_is_inconclusive():
    result, _ = check_with(
        {ACCOUNT_INFO_CLASSIC: lambda r: error("40008"), SERVER_TIME: lambda r: ok({"serverTime": None})}
    )

    assert result.report.codes == ["exchange_unavailable"]


# ------------------------------------------------------------------ classic and UTA answers
def test_classic_answer_fills_permissions_whitelist_and_account_id():
    info = classic_info(ips=f"{EGRESS},198.51.100.7", authorities=["stor", "stow", "coor", "coow", "wtow", "smow"])
    result, exchange = check_with({ACCOUNT_INFO_CLASSIC: lambda r: ok(info)}, identify_account=True)

    report = result.report
    assert exchange.paths == [ACCOUNT_INFO_CLASSIC]
    assert report.permissions == Permissions(
        read=True, spot=True, futures=True, margin=True, withdraw=False, transfer=True
    )
    assert report.ip_restricted is True
    assert report.ip_whitelist == (EGRESS, "198.51.100.7")
    assert result.account_id == "6100000001"
    assert report.status.value == "healthy"


def test_account_id_only_when_asked():
    result, _ = check_with({ACCOUNT_INFO_CLASSIC: lambda r: ok(classic_info())})

    assert result.account_id is None


def test_unified_account_falls_back_to_v3_on_40085_every_time():
    routes = {
        ACCOUNT_INFO_CLASSIC: lambda r: error("40085", "You are in Unified Account mode"),
        ACCOUNT_INFO_UNIFIED: lambda r: ok(unified_info(permissions=["uta_mgt", "uta_trade", "withdraw"])),
    }
    exchange = Exchange(routes)
    adapter = adapter_for(exchange)

    first = adapter.check(credentials(), BOTH, identify_account=True)
    second = adapter.check(credentials(), BOTH)

    # Nothing is remembered per key: each check asks the classic endpoint first again.
    assert exchange.paths == [ACCOUNT_INFO_CLASSIC, ACCOUNT_INFO_UNIFIED] * 2
    assert first.account_id == "6200000002"
    assert first.report.permissions == Permissions(read=True, spot=True, futures=True, withdraw=True)
    assert first.report.codes == ["withdraw_enabled"]
    assert second.report.codes == ["withdraw_enabled"]


def test_v3_errors_are_mapped_like_v2_errors():
    result, _ = check_with(
        {
            ACCOUNT_INFO_CLASSIC: lambda r: error("40085"),
            ACCOUNT_INFO_UNIFIED: lambda r: error("40012", "apikey/password is incorrect"),
        }
    )

    assert result.report.codes == ["invalid_passphrase"]


def test_whitelist_missing_a_second_egress_ip_is_reported_with_that_ip():
    exchange = Exchange({ACCOUNT_INFO_CLASSIC: lambda r: ok(classic_info(ips=EGRESS))})
    result = adapter_for(exchange, egress_ips=(EGRESS, "203.0.113.11")).check(credentials(), BOTH)

    assert result.report.codes == ["ip_whitelist_incomplete"]
    assert "203.0.113.11" in result.report.findings[0].message


@pytest.mark.parametrize("ips", ["", None, " , "])
def test_empty_whitelist_means_no_ip_restriction(ips):
    info = classic_info(ips=ips) if ips is not None else {k: v for k, v in classic_info().items() if k != "ips"}
    result, _ = check_with({ACCOUNT_INFO_CLASSIC: lambda r: ok(info)})

    assert result.report.ip_restricted is False
    assert result.report.ip_whitelist == ()
    assert result.report.codes == ["no_ip_restriction"]


def test_parse_ips_splits_and_trims():
    assert parse_ips(" 1.2.3.4, 5.6.7.8 ,") == ("1.2.3.4", "5.6.7.8")
    assert parse_ips(None) == ()
    assert parse_ips(["1.2.3.4"]) is None  # not the documented string shape: unknown


def test_whitelist_of_an_undocumented_shape_is_unknown_not_unrestricted():
    result, _ = check_with({ACCOUNT_INFO_CLASSIC: lambda r: ok(classic_info(ips=[EGRESS]))})

    assert result.report.ip_restricted is None
    assert result.report.ip_whitelist is None
    assert result.report.codes == []


@pytest.mark.parametrize(
    ("authorities", "expected"),
    [
        (["stor", "coor"], Permissions(True, False, False, False, False, False)),
        (["stor", "stow"], Permissions(True, True, False, False, False, False)),
        (["coor", "coow", "cpow"], Permissions(True, False, True, False, False, False)),
        (["cpow"], Permissions(True, False, False, False, False, False)),  # holdings alone place no orders
        (["stow", "coow", "smow", "wtow", "wwow"], Permissions(True, True, True, True, True, True)),
        (["STOW", " coow "], Permissions(True, True, True, False, False, False)),
        # legacy vocabulary: no margin, withdraw or transfer codes, so those stay unknown
        (["trade", "readonly"], Permissions(True, True, True, None, None, None)),
        (["readonly"], Permissions(True, False, False, None, None, None)),
        # nothing recognisable: only the fact that the key read
        ([], Permissions(read=True)),
        (["somethingnew"], Permissions(read=True)),
    ],
)
def test_classic_permissions(authorities, expected):
    assert classic_permissions(authorities) == expected


@pytest.mark.parametrize(
    ("permissions", "expected"),
    [
        (["uta_mgt"], Permissions(read=True, spot=False, futures=False, withdraw=False)),
        (["uta_mgt", "uta_trade"], Permissions(read=True, spot=True, futures=True, withdraw=False)),
        (["uta_trade", "withdraw"], Permissions(read=True, spot=True, futures=True, withdraw=True)),
        (["copy_futures_order"], Permissions(read=True, spot=False, futures=False, withdraw=False)),
    ],
)
def test_unified_permissions(permissions, expected):
    assert unified_permissions(permissions) == expected


@pytest.mark.parametrize(
    ("authorities", "scopes", "codes"),
    [
        (["stor", "stow"], {Scope.SPOT}, []),
        (["stor", "stow"], {Scope.FUTURES}, ["scope_not_permitted"]),
        (["stor", "coor"], {Scope.SPOT, Scope.FUTURES}, ["scope_not_permitted"]),
        (["stor", "stow", "coow", "wwow"], {Scope.SPOT}, ["withdraw_enabled"]),
        (["trade", "readonly"], {Scope.SPOT, Scope.FUTURES}, []),
    ],
)
def test_scopes_against_permissions(authorities, scopes, codes):
    result, _ = check_with({ACCOUNT_INFO_CLASSIC: lambda r: ok(classic_info(authorities=authorities))}, scopes)

    assert result.report.codes == codes


@pytest.mark.parametrize("data", ["unexpected", None, []])
def test_malformed_success_body_is_inconclusive(data):
    result, _ = check_with({ACCOUNT_INFO_CLASSIC: lambda r: ok(data)})

    assert result.report.codes == ["exchange_unavailable"]
    assert result.report.permissions == Permissions()


def test_error_answers_never_echo_the_credentials():
    body = {"code": "40009", "msg": "sign signature error", "requestTime": 1, "data": None}
    result, _ = check_with({ACCOUNT_INFO_CLASSIC: lambda r: httpx.Response(400, json=body)})

    dumped = json.dumps(result.report.to_dict())
    assert SECRET not in dumped
    assert PASSPHRASE not in dumped
