"""What every adapter inherits: transient failures, Retry-After, and the clock correction.

A minimal fake exchange exercises the base class through httpx.MockTransport: it accepts
a request only when its `timestamp` is within 5 s of the fake exchange's clock.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from keyhealth.adapters.http_transport import HttpxTransport
from keyhealth.domain.credentials import Credentials, Secret
from keyhealth.domain.http import HttpRequest, HttpResponse
from keyhealth.domain.model import Audience, FindingCode, Permissions, Scope, Status
from keyhealth.exchanges import binance, bitget
from keyhealth.exchanges.base import ExchangeAdapter, ExchangeError, ReportDraft
from tests.support.clock import FakeClock

CREDS = Credentials("fake-key-0001", Secret("CANARY-base-secret"))


class FakeExchange:
    """Answers /check and /time; `respond` overrides /check for one test."""

    def __init__(self, clock: FakeClock, offset_ms: int = 0) -> None:
        self.clock = clock
        self.offset_ms = offset_ms
        self.respond: Any = None
        self.calls: list[str] = []

    def server_ms(self) -> int:
        return int(self.clock() * 1000) + self.offset_ms

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls.append(request.url.path)
        if request.url.path == "/time":
            return httpx.Response(200, json={"serverTime": self.server_ms()})
        if self.respond is not None:
            return self.respond(request) if callable(self.respond) else self.respond
        timestamp = int(request.url.params["timestamp"])
        if abs(timestamp - self.server_ms()) > 5000:
            return httpx.Response(400, json={"code": 9, "msg": "Timestamp outside window"})
        return httpx.Response(200, json={"code": 0, "read": True, "ip_restricted": True})


class FakeAdapter(ExchangeAdapter):
    spec = binance.SPEC  # any spec: the base only reads its name and UI words

    def _inspect(self, credentials, scopes, draft: ReportDraft, identify_account) -> None:
        payload = self._call(lambda ts: HttpRequest("GET", f"{self.base_url}/check?timestamp={ts}"))
        draft.permissions = Permissions(read=payload["read"], spot=True)
        draft.ip_restricted = payload["ip_restricted"]
        draft.assess_common(scopes)

    def _raise_for_error(self, response: HttpResponse) -> Any:
        body = response.json()
        if body.get("code") == 9:
            raise ExchangeError(FindingCode.CLOCK_SKEW, exchange_code=9, exchange_message=body["msg"])
        return body

    def _server_time_ms(self) -> int:
        return self._send(HttpRequest("GET", f"{self.base_url}/time")).json()["serverTime"]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1_800_000_000.0)


@pytest.fixture
def exchange(clock) -> FakeExchange:
    return FakeExchange(clock)


@pytest.fixture
def adapter(exchange, clock) -> FakeAdapter:
    client = httpx.Client(transport=httpx.MockTransport(exchange))
    return FakeAdapter(
        transport=HttpxTransport(client), base_url="https://fake.test", egress_ips=["203.0.113.10"], clock=clock
    )


def check(adapter: FakeAdapter):
    return adapter.check(CREDS, {Scope.SPOT})


def test_a_good_answer_is_a_healthy_report(adapter):
    result = check(adapter)
    assert result.report.status is Status.HEALTHY
    assert result.report.egress_ip == "203.0.113.10"
    assert result.retry_after is None


def test_a_read_timeout_is_transient(adapter, exchange):
    def hang(request):
        raise httpx.ReadTimeout("read timed out", request=request)

    exchange.respond = hang
    result = check(adapter)
    assert result.report.codes == ["timeout"]
    assert result.report.status is Status.UNKNOWN
    assert result.report.status is Status.UNKNOWN


def test_a_connection_failure_is_transient(adapter, exchange):
    def refuse(request):
        raise httpx.ConnectError("connection refused", request=request)

    exchange.respond = refuse
    assert check(adapter).report.codes == ["exchange_unavailable"]


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (429, "rate_limited"),
        (418, "egress_blocked"),
        (451, "egress_blocked"),
        (500, "exchange_unavailable"),
        (502, "exchange_unavailable"),
        (503, "exchange_unavailable"),
    ],
)
def test_universal_http_statuses_are_transient_and_the_operators_problem(adapter, exchange, status, code):
    exchange.respond = httpx.Response(status, json={"code": -1003, "msg": "verbatim text"})
    report = check(adapter).report
    assert report.codes == [code]
    assert report.status is Status.UNKNOWN
    finding = report.findings[0]
    assert finding.audience is Audience.OPERATOR
    assert (finding.exchange_code, finding.exchange_message) == (-1003, "verbatim text")


def test_a_non_json_error_page_is_still_classified(adapter, exchange):
    exchange.respond = httpx.Response(502, text="<html>Bad gateway</html>")
    report = check(adapter).report
    assert report.codes == ["exchange_unavailable"]
    assert report.findings[0].exchange_code is None


def test_retry_after_is_honoured_without_asking_again_until_it_passes(adapter, exchange, clock):
    exchange.respond = httpx.Response(429, headers={"Retry-After": "30"}, json={"code": -1003, "msg": "slow down"})
    first = check(adapter)
    assert first.retry_after == 30
    calls = len(exchange.calls)

    clock.now += 10
    second = check(adapter)
    assert second.report.codes == ["rate_limited"]
    assert second.retry_after == pytest.approx(20)
    assert len(exchange.calls) == calls  # the exchange was not asked again

    exchange.respond = None
    clock.now += 21
    assert check(adapter).report.status is Status.HEALTHY
    assert len(exchange.calls) == calls + 1


def test_clock_skew_is_measured_corrected_and_remembered(adapter, exchange):
    exchange.offset_ms = 10 * 60 * 1000  # the exchange runs 10 minutes ahead of us
    assert check(adapter).report.status is Status.HEALTHY
    assert exchange.calls == ["/check", "/time", "/check"]

    exchange.calls.clear()
    assert check(adapter).report.status is Status.HEALTHY
    assert exchange.calls == ["/check"]  # the offset was kept for later checks


def test_uncorrectable_clock_skew_is_reported_after_one_retry(adapter, exchange):
    exchange.respond = httpx.Response(400, json={"code": 9, "msg": "Timestamp outside window"})
    report = check(adapter).report
    assert report.codes == ["clock_skew"]
    assert report.findings[0].exchange_code == 9
    assert exchange.calls == ["/check", "/time", "/check"]


def test_common_assessment_flags_scopes_ip_and_withdraw():
    draft = ReportDraft(
        ui=bitget.SPEC.ui,
        egress_ips=("203.0.113.10", "203.0.113.11"),
        checked_at=datetime.now(UTC),
        permissions=Permissions(read=True, spot=True, futures=False, withdraw=True),
        ip_restricted=True,
        ip_whitelist=("203.0.113.10",),
    )
    draft.assess_common({Scope.SPOT, Scope.FUTURES})
    report = draft.finish()
    assert report.codes == ["scope_not_permitted", "ip_whitelist_incomplete", "withdraw_enabled"]
    assert "203.0.113.11" in report.findings[1].remedy
    assert "203.0.113.10" not in report.findings[1].remedy
