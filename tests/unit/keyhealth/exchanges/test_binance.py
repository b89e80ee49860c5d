"""Binance adapter: signer vectors, the error table row by row, and how answers become reports.

Facts and vectors: docs/exchanges.md section 1. Transport: httpx.MockTransport.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, unquote

import httpx
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

from keyhealth.adapters.http_transport import HttpxTransport
from keyhealth.domain.credentials import Credentials, KeyType, Secret
from keyhealth.domain.model import FindingCode, Permissions, Scope, Status
from keyhealth.exchanges.binance import (
    ACCOUNT_PATH,
    API_RESTRICTIONS_PATH,
    ERROR_TABLE,
    FUTURES_ACCOUNT_CONFIG_PATH,
    HTTP_STATUS_TABLE,
    IP_LIMITS,
    RATE_PLAN,
    BinanceAdapter,
    SigningKeyError,
    ed25519_signature,
    hmac_signature,
    parse_permissions,
    sign,
)

NOW = 1_800_000_000.0  # 2027-01-15
NOW_MS = int(NOW * 1000)
EGRESS = "203.0.113.10"
API_KEY = "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A"
DOC_SECRET = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j"
FAPI_SECRET = "2b5eb11e18796d12d88f13dc27dbbd02c2cc51ff7059765ed9821957d82bb4d9"
CANARY = "CANARYsecretCANARYsecretCANARYsecretCANARYsecretCANARYsecret0001"
FULL_WIDTH = "１２３４５６"


def hmac_credentials(secret: str = CANARY) -> Credentials:
    return Credentials(API_KEY, Secret(secret))


# --------------------------------------------------------------------------- signer vectors
@pytest.mark.parametrize(
    ("secret", "payload", "expected"),
    [
        pytest.param(
            DOC_SECRET,
            "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559",
            "c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71",
            id="rest-hmac-ascii",
        ),
        pytest.param(
            DOC_SECRET,
            "symbol=%EF%BC%91%EF%BC%92%EF%BC%93%EF%BC%94%EF%BC%95%EF%BC%96&side=BUY&type=LIMIT&timeInForce=GTC"
            "&quantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559",
            "e1353ec6b14d888f1164ae9af8228a3dbd508bc82eb867db8ab6046442f33ef3",
            id="rest-hmac-non-ascii-percent-encoded",
        ),
        pytest.param(
            DOC_SECRET,
            f"apiKey={API_KEY}&price=52000.00&quantity=0.01000000&recvWindow=100&side=SELL&symbol=BTCUSDT"
            "&timeInForce=GTC&timestamp=1645423376532&type=LIMIT",
            "aa1b5712c094bc4e57c05a1a5c1fd8d88dcd628338ea863fec7b88e59fe2db24",
            id="ws-api-hmac-ascii-sorted",
        ),
        pytest.param(
            DOC_SECRET,
            f"apiKey={API_KEY}&price=0.10000000&quantity=1.00000000&recvWindow=5000&side=BUY&symbol={FULL_WIDTH}"
            "&timeInForce=GTC&timestamp=1645423376532&type=LIMIT",
            "b33892ae8e687c939f4468c6268ddd4c40ac1af18ad19a064864c47bae0752cd",
            id="ws-api-hmac-non-ascii-raw-utf8",
        ),
        pytest.param(
            FAPI_SECRET,
            "symbol=BTCUSDT&side=BUY&type=LIMIT&quantity=1&price=9000&timeInForce=GTC&recvWindow=5000"
            "&timestamp=1591702613943",
            "3c661234138461fcc7a7d8746c6558c9842d4e10870d2ecbedf7777cad694af9",
            id="fapi-hmac",
        ),
        pytest.param(
            FAPI_SECRET,
            # query `...timeInForce=GTC` + body `quantity=1...` with no separator; the published
            # signature only matches with the doc's stray space after `timestamp=` (exchanges.md 1.2).
            "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTCquantity=1&price=9000&recvWindow=5000"
            "&timestamp= 1591702613943",
            "f9d0ae5e813ef6ccf15c2b5a434047a0181cb5a342b903b367ca6d27a66e36f2",
            id="fapi-hmac-mixed-query-body-with-doc-space",
        ),
    ],
)
def test_hmac_signature_matches_published_vector(secret: str, payload: str, expected: str) -> None:
    assert hmac_signature(secret, payload) == expected
    assert sign(hmac_credentials(secret), payload) == expected


def test_fapi_mixed_vector_without_the_doc_space_signs_differently() -> None:
    payload = (
        "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTCquantity=1&price=9000&recvWindow=5000"
        "&timestamp=1591702613943"
    )
    assert hmac_signature(FAPI_SECRET, payload) == "30baaf0fab549bbeda7f5ef201898b34122da25fd23c646cac2c529aebe670a4"


FIX_KEY_PEM = (
    "-----BEGIN PRIVATE KEY-----\n"
    "MC4CAQAwBQYDK2VwBCIEIIJEYWtGBrhACmb9Dvy+qa8WEf0lQOl1s4CLIAB9m89u\n"
    "-----END PRIVATE KEY-----\n"
)
FIX_PAYLOAD = "A\x01EXAMPLE\x01SPOT\x011\x0120240627-11:17:25.223"
FIX_SIGNATURE = "4MHXelVVcpkdwuLbl6n73HQUXUf1dse2PCgT1DYqW9w8AVZ1RACFGM+5UdlGPrQHrgtS3CvsRURC1oj73j8gCA=="


def test_ed25519_signature_matches_fix_logon_vector() -> None:
    assert ed25519_signature(FIX_KEY_PEM, FIX_PAYLOAD.encode()) == FIX_SIGNATURE


def test_ed25519_credentials_sign_base64_then_percent_encode() -> None:
    credentials = Credentials(API_KEY, Secret(FIX_KEY_PEM), key_type=KeyType.ED25519)
    signed = sign(credentials, FIX_PAYLOAD)
    # The vector contains `+` and `=`, which must not reach the query string raw.
    assert "+" not in signed
    assert "=" not in signed
    assert unquote(signed) == FIX_SIGNATURE


def test_rsa_signature_round_trips_with_the_public_key() -> None:
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    payload = "timestamp=1499827319559&recvWindow=5000"
    signed = sign(Credentials(API_KEY, Secret(pem), key_type=KeyType.RSA), payload)
    raw = base64.b64decode(unquote(signed))
    private_key.public_key().verify(raw, payload.encode(), padding.PKCS1v15(), hashes.SHA256())  # raises if wrong
    with pytest.raises(InvalidSignature):
        private_key.public_key().verify(raw, b"timestamp=1", padding.PKCS1v15(), hashes.SHA256())


@pytest.mark.parametrize(
    ("secret", "key_type"),
    [
        ("not a pem " + CANARY, KeyType.ED25519),
        (FIX_KEY_PEM, KeyType.RSA),  # an Ed25519 key where an RSA key is expected
    ],
)
def test_unusable_private_key_is_a_signing_error_that_does_not_quote_it(secret: str, key_type: KeyType) -> None:
    with pytest.raises(SigningKeyError) as raised:
        sign(Credentials(API_KEY, Secret(secret), key_type=key_type), "timestamp=1")
    assert CANARY not in str(raised.value)
    assert "MC4CAQ" not in str(raised.value)


# --------------------------------------------------------------------------- fake exchange
Handler = Callable[[httpx.Request], httpx.Response]


def restrictions(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "ipRestrict": True,
        "createTime": NOW_MS - 86_400_000,
        "enableReading": True,
        "enableWithdrawals": False,
        "enableInternalTransfer": False,
        "enableMargin": False,
        "enableFutures": True,
        "permitsUniversalTransfer": False,
        "enableVanillaOptions": False,
        "enableFixApiTrade": False,
        "enableFixReadOnly": True,
        "enableSpotAndMarginTrading": True,
        "enablePortfolioMarginTrading": False,
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


class FakeBinance:
    """Answers by path; records requests. `answers[path]` is a response or a list served in turn."""

    def __init__(self, answers: dict[str, httpx.Response | list[httpx.Response]]) -> None:
        self.answers = answers
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.get(request.url.path)
        if answer is None:
            return httpx.Response(404)
        if isinstance(answer, list):
            return answer.pop(0) if len(answer) > 1 else answer[0]
        return answer

    def paths(self) -> list[str]:
        return [r.url.path for r in self.requests]


def ok(body: Any, **headers: str) -> httpx.Response:
    return httpx.Response(200, json=body, headers=headers)


def error(status: int, code: int, msg: str, **headers: str) -> httpx.Response:
    return httpx.Response(status, json={"code": code, "msg": msg}, headers=headers)


def adapter_for(fake: FakeBinance, *, clock: Callable[[], float] = lambda: NOW, **kwargs: Any) -> BinanceAdapter:
    client = httpx.Client(transport=httpx.MockTransport(fake))
    kwargs.setdefault("base_url", "https://api.test")
    return BinanceAdapter(transport=HttpxTransport(client), egress_ips=[EGRESS], clock=clock, **kwargs)


def check(fake: FakeBinance, scopes: tuple[Scope, ...] = (Scope.SPOT,), **kwargs: Any) -> Any:
    identify = kwargs.pop("identify_account", False)
    return adapter_for(fake, **kwargs).check(hmac_credentials(), scopes, identify_account=identify)


# --------------------------------------------------------------------------- requests
def test_signed_request_carries_key_header_timestamp_window_and_signature_last() -> None:
    fake = FakeBinance({"/sapi/v1/account/apiRestrictions": ok(restrictions())})
    result = check(fake)
    assert result.report.status is Status.HEALTHY
    request = fake.requests[0]
    assert request.headers["X-MBX-APIKEY"] == API_KEY
    query = request.url.query.decode()
    unsigned, _, signature = query.rpartition("&signature=")
    params = dict(parse_qsl(unsigned))
    assert params == {"timestamp": str(NOW_MS), "recvWindow": "5000"}
    assert signature == hmac_signature(CANARY, unsigned)


def test_futures_confirmation_goes_to_the_futures_base_url() -> None:
    fake = FakeBinance(
        {"/sapi/v1/account/apiRestrictions": ok(restrictions()), "/fapi/v1/accountConfig": ok({"canTrade": True})}
    )
    result = check(fake, (Scope.FUTURES,), futures_base_url="https://fapi.test")
    assert result.report.status is Status.HEALTHY
    assert [(r.url.host, r.url.path) for r in fake.requests] == [
        ("api.test", "/sapi/v1/account/apiRestrictions"),
        ("fapi.test", "/fapi/v1/accountConfig"),
    ]


def test_futures_base_url_defaults_to_base_url() -> None:
    adapter = adapter_for(FakeBinance({}), base_url="https://api.test/")
    assert adapter.futures_base_url == "https://api.test"


def test_identify_account_reads_uid_from_spot_account() -> None:
    fake = FakeBinance(
        {"/sapi/v1/account/apiRestrictions": ok(restrictions()), "/api/v3/account": ok({"uid": 354937868})}
    )
    result = check(fake, identify_account=True)
    assert result.account_id == "354937868"
    assert dict(parse_qsl(fake.requests[1].url.query.decode()))["omitZeroBalances"] == "true"


def test_without_identify_account_no_account_call_is_made() -> None:
    fake = FakeBinance({"/sapi/v1/account/apiRestrictions": ok(restrictions())})
    result = check(fake)
    assert result.account_id is None
    assert fake.paths() == ["/sapi/v1/account/apiRestrictions"]


# --------------------------------------------------------------------------- parsing
def test_permissions_map_binance_fields() -> None:
    permissions = parse_permissions(
        restrictions(
            enableWithdrawals=True, enableMargin=True, enableInternalTransfer=False, permitsUniversalTransfer=True
        )
    )
    assert permissions == Permissions(read=True, spot=True, futures=True, margin=True, withdraw=True, transfer=True)


def test_missing_fields_are_none_never_guessed() -> None:
    assert parse_permissions({}) == Permissions()
    # One transfer flag false and the other unknown: transfer is unknown.
    assert parse_permissions({"enableInternalTransfer": False}).transfer is None
    assert parse_permissions({"enableInternalTransfer": False, "permitsUniversalTransfer": False}).transfer is False
    assert parse_permissions({"enableReading": "true"}).read is None  # not a JSON boolean


def test_report_fields_from_restrictions() -> None:
    fake = FakeBinance({"/sapi/v1/account/apiRestrictions": ok(restrictions(enableWithdrawals=True))})
    report = check(fake).report
    assert report.ip_restricted is True
    assert report.ip_whitelist is None  # Binance does not reveal the list
    assert report.trading_expires_at is None
    assert report.codes == ["withdraw_enabled"]
    assert report.status is Status.DEGRADED


def test_unrestricted_key_warns_and_reports_expiry_time() -> None:
    expiry = NOW_MS + 20 * 86_400_000
    fake = FakeBinance(
        {"/sapi/v1/account/apiRestrictions": ok(restrictions(ipRestrict=False, tradingAuthorityExpirationTime=expiry))}
    )
    report = check(fake).report
    assert report.codes == ["no_ip_restriction"]  # 20 days away: no expiry warning yet
    assert report.trading_expires_at == datetime.fromtimestamp(expiry / 1000, UTC)


def test_trading_permission_expiring_within_14_days() -> None:
    expiry = NOW_MS + 13 * 86_400_000
    fake = FakeBinance(
        {"/sapi/v1/account/apiRestrictions": ok(restrictions(ipRestrict=False, tradingAuthorityExpirationTime=expiry))}
    )
    report = check(fake).report
    assert sorted(report.codes) == ["no_ip_restriction", "trading_permission_expiring"]
    assert report.status is Status.DEGRADED


def test_trading_permission_expired_replaces_spot_scope_finding() -> None:
    body = restrictions(
        ipRestrict=False, enableSpotAndMarginTrading=False, tradingAuthorityExpirationTime=NOW_MS - 1000
    )
    report = check(FakeBinance({"/sapi/v1/account/apiRestrictions": ok(body)})).report
    assert sorted(report.codes) == ["no_ip_restriction", "trading_permission_expired"]
    assert report.status is Status.FAILING
    assert report.trading_expires_at == datetime.fromtimestamp(NOW - 1, UTC)


def test_expired_spot_trading_does_not_matter_for_futures_only() -> None:
    body = restrictions(
        ipRestrict=False, enableSpotAndMarginTrading=False, tradingAuthorityExpirationTime=NOW_MS - 1000
    )
    fake = FakeBinance({"/sapi/v1/account/apiRestrictions": ok(body), "/fapi/v1/accountConfig": ok({"canTrade": True})})
    report = check(fake, (Scope.FUTURES,)).report
    assert report.codes == ["no_ip_restriction"]


def test_spot_disabled_without_expiry_is_scope_not_permitted() -> None:
    body = restrictions(enableSpotAndMarginTrading=False)
    report = check(FakeBinance({"/sapi/v1/account/apiRestrictions": ok(body)})).report
    assert report.codes == ["scope_not_permitted"]
    assert "Enable Spot & Margin Trading" in report.findings[0].message


def test_futures_disabled_is_reported_without_calling_fapi() -> None:
    fake = FakeBinance({"/sapi/v1/account/apiRestrictions": ok(restrictions(enableFutures=False))})
    report = check(fake, (Scope.SPOT, Scope.FUTURES)).report
    assert report.codes == ["scope_not_permitted"]
    assert "before the futures account" in report.findings[0].message
    assert fake.paths() == ["/sapi/v1/account/apiRestrictions"]


def test_futures_refused_on_fapi_after_sapi_succeeded_is_scope_not_permitted() -> None:
    fake = FakeBinance(
        {
            "/sapi/v1/account/apiRestrictions": ok(restrictions()),
            "/fapi/v1/accountConfig": error(401, -2015, "Invalid API-key, IP, or permissions for action."),
        }
    )
    report = check(fake, (Scope.FUTURES,)).report
    assert report.codes == ["scope_not_permitted"]
    finding = report.findings[0]
    assert finding.exchange_code == -2015
    assert finding.exchange_message == "Invalid API-key, IP, or permissions for action."
    assert report.permissions.futures is False


def test_futures_field_missing_is_confirmed_on_fapi() -> None:
    fake = FakeBinance(
        {
            "/sapi/v1/account/apiRestrictions": ok(restrictions(enableFutures=None)),
            "/fapi/v1/accountConfig": ok({"canTrade": True}),
        }
    )
    report = check(fake, (Scope.FUTURES,)).report
    assert report.status is Status.HEALTHY
    assert fake.paths()[-1] == "/fapi/v1/accountConfig"


def test_futures_account_that_cannot_trade_is_account_restricted() -> None:
    fake = FakeBinance(
        {"/sapi/v1/account/apiRestrictions": ok(restrictions()), "/fapi/v1/accountConfig": ok({"canTrade": False})}
    )
    report = check(fake, (Scope.FUTURES,)).report
    assert report.codes == ["account_restricted"]
    assert "canTrade" in report.findings[0].message


def test_rate_limit_on_fapi_keeps_what_sapi_said() -> None:
    fake = FakeBinance(
        {
            "/sapi/v1/account/apiRestrictions": ok(restrictions(enableWithdrawals=True)),
            "/fapi/v1/accountConfig": error(429, -1003, "Too much request weight used;", **{"Retry-After": "7"}),
        }
    )
    result = check(fake, (Scope.FUTURES,))
    assert result.report.codes == ["withdraw_enabled", "rate_limited"]
    assert result.report.status is Status.UNKNOWN
    assert result.retry_after == 7


# --------------------------------------------------------------------------- error table
ROW_STATUS = {-2014: 401, -2015: 401, -2017: 401, -2008: 401, -1002: 401, -1099: 401, -1003: 429}


@pytest.mark.parametrize(("code", "expected"), sorted(ERROR_TABLE.items()))
def test_error_table_row(code: int, expected: FindingCode) -> None:
    status = ROW_STATUS.get(code, 400)
    message = f"message for {code}"
    answers: dict[str, Any] = {"/sapi/v1/account/apiRestrictions": error(status, code, message)}
    if expected is FindingCode.CLOCK_SKEW:
        answers["/api/v3/time"] = ok({"serverTime": NOW_MS})
    fake = FakeBinance(answers)
    result = check(fake)
    assert result.report.codes == [expected.value]
    finding = result.report.findings[0]
    assert finding.exchange_code == code
    assert finding.exchange_message == message
    expected_status = Status.UNKNOWN if expected.severity.value == "transient" else Status.FAILING
    assert result.report.status is expected_status


def test_maintenance_code_1_with_http_200_is_exchange_unavailable() -> None:
    fake = FakeBinance({"/sapi/v1/account/apiRestrictions": ok({"code": 1, "msg": "System is under maintenance."})})
    report = check(fake).report
    assert report.codes == ["exchange_unavailable"]
    assert report.findings[0].exchange_message == "System is under maintenance."


@pytest.mark.parametrize(("status", "expected"), sorted(HTTP_STATUS_TABLE.items()))
def test_http_status_table_row(status: int, expected: FindingCode) -> None:
    fake = FakeBinance({"/sapi/v1/account/apiRestrictions": httpx.Response(status, text="<html>Forbidden</html>")})
    report = check(fake).report
    assert report.codes == [expected.value]
    assert report.findings[0].audience.value == "operator"
    assert report.status is Status.UNKNOWN


def test_key_rejected_on_restrictions_names_key_and_ip_not_permission() -> None:
    fake = FakeBinance(
        {"/sapi/v1/account/apiRestrictions": error(401, -2015, "Invalid API-key, IP, or permissions for action.")}
    )
    finding = check(fake).report.findings[0]
    assert finding.code is FindingCode.KEY_REJECTED
    assert EGRESS in finding.message
    assert "does not exist" in finding.message
    assert "lacks a permission" not in finding.message


def test_clock_skew_is_resynced_and_retried_once() -> None:
    skewed = error(400, -1021, "Timestamp for this request is outside of the recvWindow.")
    server_ms = NOW_MS + 30_000
    fake = FakeBinance(
        {
            "/sapi/v1/account/apiRestrictions": [skewed, ok(restrictions())],
            "/api/v3/time": ok({"serverTime": server_ms}),
        }
    )
    report = check(fake).report
    assert report.status is Status.HEALTHY
    assert fake.paths() == ["/sapi/v1/account/apiRestrictions", "/api/v3/time", "/sapi/v1/account/apiRestrictions"]
    retried = dict(parse_qsl(fake.requests[2].url.query.decode()))
    assert int(retried["timestamp"]) == server_ms


def test_clock_skew_twice_is_a_transient_clock_skew() -> None:
    skewed = error(400, -1021, "Timestamp for this request was 1000ms ahead of the server's time.")
    fake = FakeBinance({"/sapi/v1/account/apiRestrictions": skewed, "/api/v3/time": ok({"serverTime": NOW_MS})})
    report = check(fake).report
    assert report.codes == ["clock_skew"]
    assert report.status is Status.UNKNOWN
    assert report.findings[0].exchange_code == -1021


@pytest.mark.parametrize(
    ("status", "body", "headers", "expected"),
    [
        (
            429,
            {"code": -1003, "msg": "Too much request weight used; current limit is 6000 request weight per 1 MINUTE."},
            {"Retry-After": "42"},
            FindingCode.RATE_LIMITED,
        ),
        (
            418,
            {"code": -1003, "msg": "Way too much request weight used; IP banned until 1800000120000."},
            {"Retry-After": "120"},
            FindingCode.EGRESS_BLOCKED,
        ),
        (
            451,
            {"code": 0, "msg": "Service unavailable from a restricted location according to 'b. Eligibility'"},
            {},
            FindingCode.EGRESS_BLOCKED,
        ),
        (503, {"code": 1, "msg": "System is under maintenance."}, {}, FindingCode.EXCHANGE_UNAVAILABLE),
        (502, None, {}, FindingCode.EXCHANGE_UNAVAILABLE),
    ],
)
def test_base_transient_statuses_with_binance_bodies(
    status: int, body: dict[str, Any] | None, headers: dict[str, str], expected: FindingCode
) -> None:
    content = json.dumps(body).encode() if body else b"<html>Bad Gateway</html>"
    fake = FakeBinance({"/sapi/v1/account/apiRestrictions": httpx.Response(status, content=content, headers=headers)})
    adapter = adapter_for(fake)
    result = adapter.check(hmac_credentials(), [Scope.SPOT])
    assert result.report.codes == [expected.value]
    assert result.report.status is Status.UNKNOWN
    finding = result.report.findings[0]
    assert finding.exchange_code == (body or {}).get("code")
    assert finding.exchange_message == (body or {}).get("msg")
    if "Retry-After" in headers:
        assert result.retry_after == float(headers["Retry-After"])
        # The wait is honoured: the next check does not reach the exchange.
        again = adapter.check(hmac_credentials(), [Scope.SPOT])
        assert again.report.codes == [expected.value]
        assert len(fake.requests) == 1


def test_unknown_error_code_is_transient_not_a_verdict_on_the_key() -> None:
    fake = FakeBinance({"/sapi/v1/account/apiRestrictions": error(400, -9999, "Something new.")})
    report = check(fake).report
    assert report.codes == ["exchange_unavailable"]
    assert report.findings[0].exchange_code == -9999
    assert "unexpected" in report.findings[0].message


def test_non_json_success_is_transient() -> None:
    fake = FakeBinance({"/sapi/v1/account/apiRestrictions": httpx.Response(200, text="<html>ok</html>")})
    assert check(fake).report.codes == ["exchange_unavailable"]


def test_timeout_and_connection_failure_are_transient() -> None:
    def timeout(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    for handler, code in ((timeout, "timeout"), (refused, "exchange_unavailable")):
        client = httpx.Client(transport=httpx.MockTransport(handler))
        report = BinanceAdapter(transport=HttpxTransport(client), base_url="https://api.test", clock=lambda: NOW).check(
            hmac_credentials(), [Scope.SPOT]
        )
        assert report.report.codes == [code]


def test_bad_private_key_is_invalid_secret_without_a_request() -> None:
    fake = FakeBinance({})
    credentials = Credentials(API_KEY, Secret("-----BEGIN PRIVATE KEY-----\n" + CANARY), key_type=KeyType.ED25519)
    report = adapter_for(fake).check(credentials, [Scope.SPOT]).report
    assert report.codes == ["invalid_secret"]
    assert fake.requests == []
    assert CANARY not in json.dumps(report.to_dict())


def test_api_key_no_header_can_carry_is_invalid_without_a_request() -> None:
    fake = FakeBinance({})
    report = adapter_for(fake).check(Credentials("ключ", Secret(CANARY)), [Scope.SPOT]).report
    assert report.codes == ["invalid_api_key"]
    assert fake.requests == []


def test_ed25519_key_check_sends_a_verifiable_signature() -> None:
    private_key = ed25519.Ed25519PrivateKey.generate()
    pem = private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    fake = FakeBinance({"/sapi/v1/account/apiRestrictions": ok(restrictions())})
    report = adapter_for(fake).check(Credentials(API_KEY, Secret(pem), key_type=KeyType.ED25519), [Scope.SPOT]).report
    assert report.status is Status.HEALTHY
    unsigned, _, signature = fake.requests[0].url.query.decode().rpartition("&signature=")
    private_key.public_key().verify(base64.b64decode(unquote(signature)), unsigned.encode())


# --------------------------------------------------------------------------- rate budget constants
def test_check_cost_per_pool() -> None:
    assert RATE_PLAN.audit_check_cost() == {"sapi:/sapi/v1/account/apiRestrictions": 1}
    bind_with_futures = [API_RESTRICTIONS_PATH, FUTURES_ACCOUNT_CONFIG_PATH, ACCOUNT_PATH]
    assert RATE_PLAN.cost(bind_with_futures) == {"sapi:/sapi/v1/account/apiRestrictions": 1, "fapi": 5, "api": 20}
    assert set(RATE_PLAN.cost(bind_with_futures)) <= set(IP_LIMITS)
    assert IP_LIMITS["api"] == (6000, 60)
    assert IP_LIMITS["fapi"] == (2400, 60)


def test_expiry_warning_boundary_is_fourteen_days() -> None:
    for days, warned in ((14, True), (15, False)):
        expiry = int((datetime.fromtimestamp(NOW, UTC) + timedelta(days=days)).timestamp() * 1000)
        body = restrictions(ipRestrict=False, tradingAuthorityExpirationTime=expiry)
        codes = check(FakeBinance({"/sapi/v1/account/apiRestrictions": ok(body)})).report.codes
        assert ("trading_permission_expiring" in codes) is warned


def test_used_weight_headers_are_tracked_per_pool() -> None:
    fake = FakeBinance(
        {
            "/sapi/v1/account/apiRestrictions": ok(restrictions(), **{"X-SAPI-USED-IP-WEIGHT-1M": "17"}),
            "/fapi/v1/accountConfig": ok({"canTrade": True}, **{"X-MBX-USED-WEIGHT-1M": "55"}),
            "/api/v3/account": ok({"uid": 1}, **{"X-MBX-USED-WEIGHT-1M": "120", "X-MBX-USED-WEIGHT": "120"}),
        }
    )
    adapter = adapter_for(fake)
    adapter.check(hmac_credentials(), [Scope.FUTURES], identify_account=True)
    assert adapter.used_weight == {"sapi:/sapi/v1/account/apiRestrictions": 17, "fapi": 55, "api": 120}
