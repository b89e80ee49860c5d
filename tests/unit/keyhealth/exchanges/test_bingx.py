"""BingX adapter, without a network: signer vectors, the error table row by row, answer parsing.

Given a canned BingX answer (httpx.MockTransport), when the adapter checks a key, then the report
says exactly what the answer means.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Callable
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest

from keyhealth.adapters.http_transport import HttpxTransport
from keyhealth.domain.credentials import Credentials, Secret
from keyhealth.domain.exchange import CheckResult
from keyhealth.domain.model import Permissions, Scope
from keyhealth.exchanges.bingx import (
    API_PERMISSIONS_PATH,
    ERROR_TABLE,
    IP_LIMITS,
    RATE_LIMIT_RECOVERY_SECONDS,
    RATE_PLAN,
    SERVER_TIME_PATH,
    UID_PATH,
    BingXAdapter,
    param_string,
    parse_api_permissions,
    permissions_from_codes,
    sign,
    signed_query,
)
from tests.support.clock import FakeClock

EGRESS = "203.0.113.10"
API_KEY = "Ab12" * 16
SECRET = "CANARY-bingx-unit-secret-0123456789abcdef0123456789abcdef01234567"
NOW = 1_790_000_000.0

# exchanges.md 3.2, published BingX vectors (recomputed there).
SPOT_SECRET = "UuGuyEGt6ZEkpUObCYCmIfh0elYsZVh80jlYwpJuRZEw70t6vomMH7Sjmf94ztSI"
SWAP_SECRET = "mheO6dR8ovSsxZQCOYEFCtelpuxcWGTfHw7te326y6jOwq5WpvFQ9JNljoTwBXZGv5It07m9RXSPpDQEK2w"


# ----------------------------------------------------------------------------- signing
def test_spot_query_vector_matches_with_sorted_params() -> None:
    params = {"symbol": "ETHUSDT", "side": "BUY", "type": "MARKET", "quoteOrderQty": 20, "timestamp": 1649404670162}
    payload = param_string(params)
    assert payload == "quoteOrderQty=20&side=BUY&symbol=ETHUSDT&timestamp=1649404670162&type=MARKET"
    assert sign(SPOT_SECRET, payload) == "428a3c383bde514baff0d10d3c20e5adfaacaf799e324546dafe5ccc480dd827"


def test_spot_query_plus_body_vector_concatenates_without_separator() -> None:
    query = param_string({"quoteOrderQty": 20, "side": "BUY", "symbol": "ETHUSDT"})
    body = param_string({"timestamp": 1649404670162, "type": "MARKET"})
    assert sign(SPOT_SECRET, query + body) == "94e0b4925060a615e1e372d4c929015d4b59d3c89067dc0beeafcfb33a6d8d10"


def test_swap_unsorted_vector_is_signed_as_sent() -> None:
    pairs = [("symbol", "BTC-USDT"), ("timestamp", 1667872120843), ("side", "LONG"), ("leverage", 6)]
    payload = param_string(pairs, sort=False)
    assert payload == "symbol=BTC-USDT&timestamp=1667872120843&side=LONG&leverage=6"
    assert sign(SWAP_SECRET, payload) == "4f581ecdb1fa09b9d6e57886b6f70cffed17f82b93399722939e49a38edec2bf"


def test_swap_query_plus_body_vector() -> None:
    query = param_string([("symbol", "BTC-USDT"), ("timestamp", 1668159715051)], sort=False)
    body = param_string([("side", "LONG"), ("leverage", 6)], sort=False)
    assert sign(SWAP_SECRET, query + body) == "8b756b01e7a30f02e19c58a91ab01b29528694316b08a51ecb8dd072942bd47d"


def test_current_doc_example_does_not_reproduce_and_we_compute_the_recomputed_value() -> None:
    payload = param_string({"recvWindow": 0, "symbol": "BTC-USDT", "timestamp": 1696751141337})
    ours = sign(SWAP_SECRET, payload)
    assert ours != "1e63e8cfd1c04919881e60cf369e404b9b7c87d3a09bc300f1abfdcce7da57e8"  # the doc's error
    assert ours == "f8d883609dfd31c824feb4de865b071008dedb1d461451fa70847875c8e7a7a2"


def test_signed_query_signs_raw_values_but_url_encodes_them() -> None:
    query = signed_query({"timestamp": 1, "data": '{"a":[1]}'}, SPOT_SECRET)
    unsigned, signature = query.split("&signature=")
    assert unsigned == "data=%7B%22a%22%3A%5B1%5D%7D&timestamp=1"
    assert signature == sign(SPOT_SECRET, 'data={"a":[1]}&timestamp=1')
    assert signature == signature.lower()
    assert len(signature) == 64


# ----------------------------------------------------------------------------- harness
Responder = Callable[[httpx.Request], httpx.Response]


def permissions_answer(permissions: list[int], ips: list[str], *, envelope: bool = False) -> dict[str, object]:
    data = {"apiKey": API_KEY, "permissions": permissions, "ipAddresses": ips, "note": "bot"}
    return {"code": 0, "msg": "", "timestamp": 1, "data": data} if envelope else data


def make_adapter(
    responder: Responder, *, egress: tuple[str, ...] = (EGRESS,), clock: FakeClock | None = None
) -> tuple[BingXAdapter, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return responder(request)

    client = httpx.Client(transport=httpx.MockTransport(handler))
    adapter = BingXAdapter(
        transport=HttpxTransport(client),
        base_url="https://open-api.bingx.com/",
        egress_ips=egress,
        clock=clock or FakeClock(NOW),
    )
    return adapter, seen


def check(adapter: BingXAdapter, scopes: tuple[Scope, ...] = (Scope.SPOT,), **kwargs: bool) -> CheckResult:
    return adapter.check(Credentials(API_KEY, Secret(SECRET)), scopes, **kwargs)


def answering(body: object, status: int = 200, headers: dict[str, str] | None = None) -> Responder:
    def respond(request: httpx.Request) -> httpx.Response:
        if request.url.path == SERVER_TIME_PATH:
            return httpx.Response(200, json={"code": 0, "msg": "", "data": {"serverTime": int(NOW * 1000)}})
        return httpx.Response(status, json=body, headers=headers)

    return respond


# ----------------------------------------------------------------------------- the request
def test_check_sends_one_signed_apipermissions_request() -> None:
    adapter, seen = make_adapter(answering(permissions_answer([1, 2], [EGRESS])))
    check(adapter)
    (request,) = seen
    assert request.method == "GET"
    assert request.url.path == API_PERMISSIONS_PATH
    assert request.headers["X-BX-APIKEY"] == API_KEY
    query = request.url.query.decode()
    unsigned, signature = query.split("&signature=")
    assert dict(parse_qsl(unsigned)) == {"recvWindow": "5000", "timestamp": str(int(NOW * 1000))}
    assert signature == hmac.new(SECRET.encode(), unsigned.encode(), hashlib.sha256).hexdigest()


def test_module_exposes_rate_budget_constants() -> None:
    assert IP_LIMITS == {"account_group_requests": (2000, 10.0), "interface_requests": (300, 10.0)}
    assert RATE_PLAN.audit_check_cost() == {"account_group_requests": 1, f"interface:{API_PERMISSIONS_PATH}": 1}


# ----------------------------------------------------------------------------- parsing
@pytest.mark.parametrize("envelope", [False, True], ids=["bare", "envelope"])
def test_healthy_key_bound_to_egress_ip(envelope: bool) -> None:
    adapter, _ = make_adapter(answering(permissions_answer([1, 2, 3], [EGRESS, "198.51.100.7"], envelope=envelope)))
    result = check(adapter, (Scope.SPOT, Scope.FUTURES))
    report = result.report
    assert report.status.value == "healthy"
    assert report.codes == []
    assert report.permissions == Permissions(
        read=True, spot=True, futures=True, margin=None, withdraw=False, transfer=False
    )
    assert report.ip_restricted is True
    assert report.ip_whitelist == (EGRESS, "198.51.100.7")
    assert result.account_id is None


@pytest.mark.parametrize(
    ("codes", "expected"),
    [
        ([2], Permissions(read=True, spot=False, futures=False, margin=None, withdraw=False, transfer=False)),
        ([2, 4], Permissions(read=True, spot=False, futures=False, margin=None, withdraw=False, transfer=True)),
        ([2, 7], Permissions(read=True, spot=False, futures=False, margin=None, withdraw=False, transfer=True)),
        ([2, 5, 6], Permissions(read=True, spot=False, futures=False, margin=None, withdraw=True, transfer=False)),
        ([1, 3], Permissions(read=False, spot=True, futures=True, margin=None, withdraw=False, transfer=False)),
    ],
)
def test_permission_codes_map_to_permissions(codes: list[int], expected: Permissions) -> None:
    assert permissions_from_codes(codes) == expected


def test_parse_accepts_comma_separated_ip_text_and_string_codes() -> None:
    assert parse_api_permissions({"permissions": ["1", "2"], "ipAddresses": "1.2.3.4, 5.6.7.8"}) == (
        frozenset({1, 2}),
        ("1.2.3.4", "5.6.7.8"),
    )


@pytest.mark.parametrize("body", [[], {"apiKey": API_KEY}, {"permissions": "1,2"}])
def test_unexpected_answer_shape_is_transient(body: object) -> None:
    adapter, _ = make_adapter(answering(body))
    report = check(adapter).report
    assert report.codes == ["exchange_unavailable"]
    assert report.status.value == "unknown"


def test_unbound_trading_key_warns_about_ip_and_inactivity_deletion() -> None:
    adapter, _ = make_adapter(answering(permissions_answer([1, 2, 3], [])))
    report = check(adapter, (Scope.SPOT, Scope.FUTURES)).report
    assert report.status.value == "degraded"
    assert report.codes == ["no_ip_restriction", "inactivity_deletion_risk"]
    assert report.ip_restricted is False
    assert report.ip_whitelist == ()


@pytest.mark.parametrize("transfer_code", [4, 7])
def test_unbound_transfer_key_also_risks_deletion(transfer_code: int) -> None:
    adapter, _ = make_adapter(answering(permissions_answer([2, 1, transfer_code], [])))
    assert check(adapter).report.codes == ["no_ip_restriction", "inactivity_deletion_risk"]


def test_unbound_read_only_key_does_not_risk_deletion() -> None:
    adapter, _ = make_adapter(answering(permissions_answer([2], [])))
    report = check(adapter, ()).report
    assert report.codes == ["no_ip_restriction"]


def test_withdraw_permission_is_a_warning() -> None:
    adapter, _ = make_adapter(answering(permissions_answer([1, 2, 5], [EGRESS])))
    report = check(adapter).report
    assert report.status.value == "degraded"
    assert report.codes == ["withdraw_enabled"]


def test_missing_scope_fails() -> None:
    adapter, _ = make_adapter(answering(permissions_answer([1, 2], [EGRESS])))
    report = check(adapter, (Scope.SPOT, Scope.FUTURES)).report
    assert report.status.value == "failing"
    assert report.codes == ["scope_not_permitted"]
    assert "Perpetual Futures Trading" in report.findings[0].message


def test_every_egress_ip_must_be_bound() -> None:
    second = "203.0.113.11"
    adapter, _ = make_adapter(answering(permissions_answer([1, 2], [EGRESS])), egress=(EGRESS, second))
    report = check(adapter).report
    assert report.codes == ["ip_whitelist_incomplete"]  # this call came from EGRESS; trading from `second` fails
    assert second in report.findings[0].message
    assert EGRESS not in report.findings[0].message


def test_identify_account_reads_uid() -> None:
    def respond(request: httpx.Request) -> httpx.Response:
        if request.url.path == UID_PATH:
            return httpx.Response(200, json={"code": 0, "msg": "", "data": {"uid": 123456789}})
        return httpx.Response(200, json=permissions_answer([1, 2], [EGRESS]))

    adapter, seen = make_adapter(respond)
    result = check(adapter, identify_account=True)
    assert result.account_id == "123456789"
    assert [r.url.path for r in seen] == [API_PERMISSIONS_PATH, UID_PATH]
    assert "signature=" in str(seen[1].url)


def test_identify_account_is_skipped_for_a_failing_key() -> None:
    adapter, seen = make_adapter(answering(permissions_answer([2], [EGRESS])))
    result = check(adapter, (Scope.FUTURES,), identify_account=True)
    assert result.report.status.value == "failing"
    assert result.account_id is None
    assert len(seen) == 1


def test_header_unsafe_api_key_is_unknown_without_a_request() -> None:
    adapter, seen = make_adapter(answering(permissions_answer([2], [])))
    result = adapter.check(Credentials("bad key\n", Secret(SECRET)), [Scope.SPOT])
    assert result.report.codes == ["invalid_api_key"]
    assert seen == []


# ----------------------------------------------------------------------------- error table
EXPECTED_TABLE: list[tuple[int, str, str]] = [
    (100413, "invalid_api_key", "failing"),
    (100001, "invalid_secret", "failing"),
    (100419, "ip_not_whitelisted", "failing"),
    (100004, "scope_not_permitted", "failing"),
    (100421, "clock_skew", "unknown"),
    (100414, "account_restricted", "failing"),
    (100410, "rate_limited", "unknown"),
    (100500, "exchange_unavailable", "unknown"),
    (100503, "exchange_unavailable", "unknown"),
    (80012, "exchange_unavailable", "unknown"),
    (80001, "exchange_unavailable", "unknown"),
    (100400, "exchange_unavailable", "unknown"),
    (109400, "exchange_unavailable", "unknown"),
    (80014, "exchange_unavailable", "unknown"),
]


def test_error_table_has_exactly_the_expected_rows() -> None:
    assert {code: finding.value for code, finding in ERROR_TABLE.items()} == {c: f for c, f, _ in EXPECTED_TABLE}


@pytest.mark.parametrize("http_status", [200, 400])
@pytest.mark.parametrize(("bingx_code", "finding", "status"), EXPECTED_TABLE)
def test_error_row(bingx_code: int, finding: str, status: str, http_status: int) -> None:
    body = {"code": bingx_code, "msg": f"message {bingx_code}", "timestamp": 1}
    adapter, _ = make_adapter(answering(body, http_status))
    report = check(adapter).report
    assert report.codes == [finding]
    assert report.status.value == status
    assert report.findings[0].exchange_code == bingx_code
    assert report.findings[0].exchange_message == f"message {bingx_code}"
    assert report.permissions == Permissions()


def test_string_code_is_read_as_int() -> None:
    adapter, _ = make_adapter(answering({"code": "100413", "msg": "Incorrect apiKey"}))
    assert check(adapter).report.codes == ["invalid_api_key"]


def test_unknown_nonzero_code_under_http_200_is_an_error_but_transient(all_logs: pytest.LogCaptureFixture) -> None:
    adapter, _ = make_adapter(answering({"code": 999999, "msg": "something new"}))
    report = check(adapter).report
    assert report.codes == ["exchange_unavailable"]
    assert report.findings[0].exchange_code == 999999
    assert "unmapped error code 999999" in all_logs.text


def test_mapped_server_code_is_not_logged_as_unmapped(all_logs: pytest.LogCaptureFixture) -> None:
    adapter, _ = make_adapter(answering({"code": 100500, "msg": "internal error"}))
    assert check(adapter).report.codes == ["exchange_unavailable"]
    assert "unmapped" not in all_logs.text


@pytest.mark.parametrize(
    "body",
    [None, "text", 5, {"permissions": [None]}, {"permissions": ["x"]}, {"permissions": [1], "ipAddresses": 7}],
)
def test_odd_json_never_raises(body: object) -> None:
    adapter, _ = make_adapter(answering(body))
    assert check(adapter).report.codes == ["exchange_unavailable"]


def test_permission_error_names_read() -> None:
    adapter, _ = make_adapter(answering({"code": 100004, "msg": "Permission denied"}))
    assert "'Read'" in check(adapter).report.findings[0].message


def test_ip_error_names_the_ip_bingx_saw() -> None:
    second = "203.0.113.11"
    msg = f"your current request IP is {second} does not match IP whitelist , please go to https://bingx.com"
    adapter, _ = make_adapter(answering({"code": 100419, "msg": msg}), egress=(EGRESS, second))
    finding = check(adapter).report.findings[0]
    assert f"{second} is not among them" in finding.message


def test_malformed_request_codes_are_logged_for_operators(all_logs: pytest.LogCaptureFixture) -> None:
    adapter, _ = make_adapter(answering({"code": 109400, "msg": "Invalid parameters, err:x"}))
    finding = check(adapter).report.findings[0]
    assert finding.audience.value == "operator"
    assert "platform bug" in finding.message
    assert any("109400" in r.getMessage() and r.levelno == logging.WARNING for r in all_logs.records)
    assert SECRET not in all_logs.text


def test_non_json_answer_is_transient() -> None:
    adapter, _ = make_adapter(lambda request: httpx.Response(200, text="<html>oops</html>"))
    assert check(adapter).report.codes == ["exchange_unavailable"]


def test_codeless_4xx_is_transient() -> None:
    adapter, _ = make_adapter(answering({"error": "nope"}, 403))
    assert check(adapter).report.codes == ["exchange_unavailable"]


# ----------------------------------------------------------------------------- clock
def test_clock_skew_is_corrected_once_from_server_time() -> None:
    server_ms = int(NOW * 1000) + 30_000
    timestamps: list[int] = []

    def respond(request: httpx.Request) -> httpx.Response:
        if request.url.path == SERVER_TIME_PATH:
            return httpx.Response(200, json={"code": 0, "msg": "", "data": {"serverTime": server_ms}})
        timestamp = int(dict(parse_qsl(request.url.query.decode()))["timestamp"])
        timestamps.append(timestamp)
        if abs(timestamp - server_ms) > 5000:
            return httpx.Response(200, json={"code": 100421, "msg": "Null timestamp or timestamp mismatch"})
        return httpx.Response(200, json=permissions_answer([1, 2], [EGRESS]))

    adapter, seen = make_adapter(respond)
    report = check(adapter).report
    assert report.status.value == "healthy"
    assert [urlsplit(str(r.url)).path for r in seen] == [API_PERMISSIONS_PATH, SERVER_TIME_PATH, API_PERMISSIONS_PATH]
    assert timestamps == [int(NOW * 1000), server_ms]


def test_clock_skew_that_persists_after_resync_is_transient() -> None:
    adapter, seen = make_adapter(answering({"code": 100421, "msg": "Null timestamp or timestamp mismatch"}))
    report = check(adapter).report
    assert report.codes == ["clock_skew"]
    assert report.status.value == "unknown"
    assert len(seen) == 3


def test_broken_server_time_answer_is_transient() -> None:
    def respond(request: httpx.Request) -> httpx.Response:
        if request.url.path == SERVER_TIME_PATH:
            return httpx.Response(200, json={"code": 0, "data": {}})
        return httpx.Response(200, json={"code": 100421, "msg": "Null timestamp or timestamp mismatch"})

    adapter, _ = make_adapter(respond)
    assert check(adapter).report.codes == ["exchange_unavailable"]


# ----------------------------------------------------------------------------- HTTP-level
def test_429_without_retry_after_cools_down_for_the_documented_five_minutes() -> None:
    clock = FakeClock(NOW)
    adapter, seen = make_adapter(lambda request: httpx.Response(429, text="Too Many Requests"), clock=clock)
    first = check(adapter)
    assert first.report.codes == ["rate_limited"]
    assert first.report.status.value == "unknown"
    assert first.retry_after == RATE_LIMIT_RECOVERY_SECONDS
    clock.now += 60
    second = check(adapter)
    assert second.report.codes == ["rate_limited"]
    assert second.retry_after == pytest.approx(RATE_LIMIT_RECOVERY_SECONDS - 60)
    assert len(seen) == 1  # not asked again while restricted: that would earn a 418
    clock.now += RATE_LIMIT_RECOVERY_SECONDS
    check(adapter)
    assert len(seen) == 2


def test_429_with_retry_after_uses_it() -> None:
    adapter, _ = make_adapter(lambda request: httpx.Response(429, headers={"Retry-After": "7"}))
    assert check(adapter).retry_after == 7


def test_418_is_egress_blocked() -> None:
    adapter, _ = make_adapter(lambda request: httpx.Response(418, text="banned"))
    result = check(adapter)
    assert result.report.codes == ["egress_blocked"]
    assert result.report.findings[0].audience.value == "operator"
    assert result.retry_after == RATE_LIMIT_RECOVERY_SECONDS


@pytest.mark.parametrize(("status", "code"), [(451, "egress_blocked"), (503, "exchange_unavailable")])
def test_transient_http_statuses(status: int, code: str) -> None:
    adapter, _ = make_adapter(answering({"code": 100503, "msg": "busy"}, status))
    report = check(adapter).report
    assert report.codes == [code]
    assert report.status.value == "unknown"


def test_connection_failure_and_timeout_are_transient() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    assert check(make_adapter(refuse)[0]).report.codes == ["exchange_unavailable"]
    assert check(make_adapter(slow)[0]).report.codes == ["timeout"]


def test_secret_never_appears_in_reports_or_logs(all_logs: pytest.LogCaptureFixture) -> None:
    bodies: list[object] = [
        permissions_answer([1, 2, 5], []),
        {"code": 100001, "msg": "Signature verification failed"},
        {"code": 80014, "msg": "Invalid parameters"},
        {"code": 100421, "msg": "Null timestamp or timestamp mismatch"},
    ]
    for body in bodies:
        adapter, _ = make_adapter(answering(body))
        result = check(adapter, identify_account=True)
        assert SECRET not in json.dumps(result.report.to_dict())
        assert SECRET not in repr(result)
    assert SECRET not in all_logs.text
