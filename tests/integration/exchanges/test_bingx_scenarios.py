"""The scenario matrix: BingXAdapter against the running BingX simulator, over real HTTP from
the egress address. Per-key outcomes come from `seed_demo` (so the demo and the tests cannot
disagree); whole-exchange transient cases (rate limits, faults, timeout, clock skew) follow.
"""

from __future__ import annotations

import json

import httpx
import pytest

from keyhealth.adapters.http_transport import HttpxTransport, new_http_client
from keyhealth.domain.credentials import Credentials, Secret
from keyhealth.domain.exchange import CheckResult
from keyhealth.domain.model import Scope
from keyhealth.exchanges.bingx import RATE_LIMIT_RECOVERY_SECONDS, BingXAdapter
from simulators.base import DemoKey, Fault, SimRequest, SimResponse
from simulators.bingx import FUTURES, READ, SERVER_TIME, SPOT, BingXSimulator, seed_demo
from tests.conftest import EGRESS_IP, PLANNED_EGRESS, PLANNED_EGRESS_IP, SECOND_EGRESS_IP
from tests.support.clock import FakeClock

CANARY = "CANARYbingxSECRET"
START = 1_790_000_000.0


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


def adapter_for(
    url: str, client: httpx.Client, clock: FakeClock, egress: tuple[str, ...] = (EGRESS_IP,), planned=()
) -> BingXAdapter:
    return BingXAdapter(
        transport=HttpxTransport(client), base_url=url, egress_ips=egress, clock=clock, planned_ips=planned
    )


def seeded(sim: BingXSimulator) -> list[DemoKey]:
    """The demo keys of a stack with two egress IPs and one announced (the requests leave from the first)."""
    return seed_demo(sim, EGRESS_IP, other_egress_ips=(SECOND_EGRESS_IP,), planned_ips=(PLANNED_EGRESS_IP,))


def check_demo(adapter: BingXAdapter, demo: DemoKey, *, identify_account: bool = False) -> CheckResult:
    credentials = Credentials(demo.api_key, Secret(demo.api_secret))
    return adapter.check(credentials, [Scope(s) for s in demo.scopes], identify_account=identify_account)


def credentials_for(api_key: str, secret: str) -> Credentials:
    return Credentials(api_key, Secret(secret))


DEMO_LABELS = [demo.label for demo in seeded(BingXSimulator())]


# ----------------------------------------------------------------------------- per-key matrix
@pytest.mark.parametrize("envelope", [False, True], ids=["bare", "envelope"])
@pytest.mark.parametrize("label", DEMO_LABELS)
def test_demo_key_reports_what_seed_demo_expects(serve, egress_client, clock, label: str, envelope: bool) -> None:
    sim = BingXSimulator(clock=clock, envelope=envelope)
    demo = next(d for d in seeded(sim) if d.label == label)
    adapter = adapter_for(serve(sim), egress_client, clock, (EGRESS_IP, SECOND_EGRESS_IP), (PLANNED_EGRESS,))
    result = check_demo(adapter, demo)
    assert result.report.status.value == demo.expected_status
    assert tuple(result.report.codes) == demo.expected_codes


def test_demo_covers_every_finding_code_that_applies_to_bingx() -> None:
    seen = {code for demo in seeded(BingXSimulator()) for code in demo.expected_codes}
    assert seen == {
        "invalid_api_key",
        "invalid_secret",
        "ip_not_whitelisted",
        "ip_whitelist_incomplete",
        "planned_ip_missing",
        "scope_not_permitted",
        "account_restricted",
        "withdraw_enabled",
        "no_ip_restriction",
        "inactivity_deletion_risk",
    }
    statuses = {demo.expected_status for demo in seeded(BingXSimulator())}
    assert statuses == {"healthy", "degraded", "failing"}


def test_healthy_report_details_and_account_id(serve, egress_client, clock) -> None:
    sim = BingXSimulator(clock=clock)
    key = sim.add_key(uid=31337, secret="s" * 64, permissions=(READ, SPOT, FUTURES), ip_addresses=(EGRESS_IP,))
    result = adapter_for(serve(sim), egress_client, clock).check(
        credentials_for(key.api_key, key.secret), [Scope.SPOT, Scope.FUTURES], identify_account=True
    )
    assert result.report.status.value == "healthy"
    assert result.account_id == "31337"
    assert result.report.to_dict()["permissions"] == {
        "read": True,
        "spot": True,
        "futures": True,
        "margin": None,
        "withdraw": False,
        "transfer": False,
    }
    assert result.report.ip_whitelist == (EGRESS_IP,)
    assert result.report.egress_ip == EGRESS_IP


def test_second_egress_ip_missing_from_the_binding(serve, egress_client, clock) -> None:
    sim = BingXSimulator(clock=clock)
    key = sim.add_key(secret="s" * 64, permissions=(READ, SPOT), ip_addresses=(EGRESS_IP,))
    adapter = adapter_for(serve(sim), egress_client, clock, egress=(EGRESS_IP, SECOND_EGRESS_IP))
    report = adapter.check(credentials_for(key.api_key, key.secret), [Scope.SPOT]).report
    assert report.status.value == "failing"
    assert report.codes == ["ip_whitelist_incomplete"]
    assert SECOND_EGRESS_IP in report.findings[0].message
    assert f"Add {SECOND_EGRESS_IP} to the key's IP whitelist on BingX (Account, API Management, Edit, IP address" in (
        report.findings[0].remedy
    )


def test_a_planned_egress_ip_missing_names_the_ip_and_its_day(serve, egress_client, clock) -> None:
    sim = BingXSimulator(clock=clock)
    key = sim.add_key(secret="s" * 64, permissions=(READ, SPOT), ip_addresses=(EGRESS_IP,))
    adapter = adapter_for(serve(sim), egress_client, clock, planned=(PLANNED_EGRESS,))
    report = adapter.check(credentials_for(key.api_key, key.secret), [Scope.SPOT]).report
    assert (report.status.value, report.codes) == ("degraded", ["planned_ip_missing"])
    finding = report.findings[0]
    assert f"{PLANNED_EGRESS_IP} (from 2027-01-15)" in finding.message
    assert finding.remedy.startswith(f"Before 2027-01-15, add {PLANNED_EGRESS_IP} to the key's IP whitelist on BingX")
    # an unrestricted key needs nothing added for the switch (its own finding is the lack of any restriction)
    open_key = sim.add_key(secret="t" * 64, permissions=(READ, SPOT))
    open_report = adapter.check(credentials_for(open_key.api_key, open_key.secret), [Scope.SPOT]).report
    assert "planned_ip_missing" not in open_report.codes


def test_not_whitelisted_message_names_the_ip_bingx_saw(serve, egress_client, clock) -> None:
    sim = BingXSimulator(clock=clock)
    key = sim.add_key(secret="s" * 64, permissions=(READ, SPOT), ip_addresses=("198.51.100.1",))
    adapter = adapter_for(serve(sim), egress_client, clock, egress=(EGRESS_IP, SECOND_EGRESS_IP))
    finding = adapter.check(credentials_for(key.api_key, key.secret), [Scope.SPOT]).report.findings[0]
    assert finding.code.value == "ip_not_whitelisted"
    assert finding.exchange_code == 100419
    assert f"Add {EGRESS_IP} to" in finding.remedy


# ----------------------------------------------------------------------------- rate limits
def test_ip_limit_429_is_rate_limited_and_the_adapter_then_waits(serve, egress_client, clock) -> None:
    sim = BingXSimulator(clock=clock, interface_limit=1)
    key = sim.add_key(secret="s" * 64, permissions=(READ, SPOT), ip_addresses=(EGRESS_IP,))
    adapter = adapter_for(serve(sim), egress_client, clock)
    credentials = credentials_for(key.api_key, key.secret)
    assert adapter.check(credentials, [Scope.SPOT]).report.status.value == "healthy"
    limited = adapter.check(credentials, [Scope.SPOT])
    assert limited.report.codes == ["rate_limited"]
    assert limited.report.status.value == "unknown"
    assert limited.retry_after == RATE_LIMIT_RECOVERY_SECONDS
    requests_before = sim.stats["requests"]
    assert adapter.check(credentials, [Scope.SPOT]).report.codes == ["rate_limited"]
    assert sim.stats["requests"] == requests_before  # waiting, so no 418
    assert sim.stats.get(f"ip_418:{EGRESS_IP}", 0) == 0
    clock.now += RATE_LIMIT_RECOVERY_SECONDS + 1
    assert adapter.check(credentials, [Scope.SPOT]).report.status.value == "healthy"


def test_ip_ban_418_is_egress_blocked(serve, egress_client, clock) -> None:
    sim = BingXSimulator(clock=clock, interface_limit=1)
    key = sim.add_key(secret="s" * 64, permissions=(READ, SPOT), ip_addresses=(EGRESS_IP,))
    url = serve(sim)
    credentials = credentials_for(key.api_key, key.secret)
    adapter_for(url, egress_client, clock).check(credentials, [Scope.SPOT])
    adapter_for(url, egress_client, clock).check(credentials, [Scope.SPOT])  # 429
    result = adapter_for(url, egress_client, clock).check(credentials, [Scope.SPOT])  # another instance: 418
    assert result.report.codes == ["egress_blocked"]
    assert result.report.status.value == "unknown"
    assert result.report.findings[0].audience.value == "operator"
    assert sim.stats[f"ip_418:{EGRESS_IP}"] == 1


def test_uid_throttle_100410_is_rate_limited(serve, egress_client, clock) -> None:
    sim = BingXSimulator(clock=clock)
    key = sim.add_key(secret="s" * 64, permissions=(READ, SPOT), ip_addresses=(EGRESS_IP,))
    adapter = adapter_for(serve(sim), egress_client, clock)
    credentials = credentials_for(key.api_key, key.secret)
    adapter.check(credentials, [Scope.SPOT])
    adapter.check(credentials, [Scope.SPOT])
    report = adapter.check(credentials, [Scope.SPOT]).report
    assert report.codes == ["rate_limited"]
    assert report.findings[0].exchange_code == 100410
    assert report.status.value == "unknown"


# ----------------------------------------------------------------------------- faults
@pytest.mark.parametrize(
    ("fault", "code", "exchange_code"),
    [
        (Fault.MAINTENANCE, "exchange_unavailable", 100503),
        (Fault.UNAVAILABLE, "exchange_unavailable", None),
        (Fault.GEO_BLOCKED, "egress_blocked", None),
        (Fault.RESET, "exchange_unavailable", None),
    ],
)
def test_faults_are_transient(serve, egress_client, clock, fault: Fault, code: str, exchange_code: int | None) -> None:
    sim = BingXSimulator(clock=clock)
    key = sim.add_key(secret="s" * 64, permissions=(READ, SPOT), ip_addresses=(EGRESS_IP,))
    sim.fault = fault
    report = (
        adapter_for(serve(sim), egress_client, clock)
        .check(credentials_for(key.api_key, key.secret), [Scope.SPOT])
        .report
    )
    assert report.codes == [code]
    assert report.status.value == "unknown"
    assert report.findings[0].exchange_code == exchange_code


def test_timeout_when_bingx_answers_after_the_read_timeout(serve, egress_client, clock) -> None:
    sim = BingXSimulator(clock=clock, latency=(1.3, 1.3))
    key = sim.add_key(secret="s" * 64, permissions=(READ, SPOT), ip_addresses=(EGRESS_IP,))
    report = (
        adapter_for(serve(sim), egress_client, clock)
        .check(credentials_for(key.api_key, key.secret), [Scope.SPOT])
        .report
    )
    assert report.codes == ["timeout"]
    assert report.status.value == "unknown"


# ----------------------------------------------------------------------------- clock skew
@pytest.mark.parametrize("offset_ms", [30_000, -30_000])
def test_clock_skew_is_corrected_by_one_resync(serve, egress_client, clock, offset_ms: int) -> None:
    sim = BingXSimulator(clock=clock, time_offset_ms=offset_ms)
    key = sim.add_key(secret="s" * 64, permissions=(READ, SPOT), ip_addresses=(EGRESS_IP,))
    adapter = adapter_for(serve(sim), egress_client, clock)
    report = adapter.check(credentials_for(key.api_key, key.secret), [Scope.SPOT]).report
    assert report.status.value == "healthy"
    assert sim.stats["code_100421"] == 1
    assert adapter.now_ms() == pytest.approx(sim.server_time_ms(), abs=50)
    adapter.check(credentials_for(key.api_key, key.secret), [Scope.SPOT])
    assert sim.stats["code_100421"] == 1  # the offset is kept for later checks


class LyingTimeSimulator(BingXSimulator):
    """A BingX whose public time endpoint disagrees with its account servers by a minute."""

    def handle(self, request: SimRequest) -> SimResponse:
        response = super().handle(request)
        if request.path == SERVER_TIME and response.status == 200:
            response.body["data"]["serverTime"] -= 60_000
        return response


def test_clock_skew_that_cannot_be_corrected_is_transient(serve, egress_client, clock) -> None:
    sim = LyingTimeSimulator(clock=clock, time_offset_ms=30_000)
    key = sim.add_key(secret="s" * 64, permissions=(READ, SPOT), ip_addresses=(EGRESS_IP,))
    report = (
        adapter_for(serve(sim), egress_client, clock)
        .check(credentials_for(key.api_key, key.secret), [Scope.SPOT])
        .report
    )
    assert report.codes == ["clock_skew"]
    assert report.status.value == "unknown"
    assert report.findings[0].exchange_code == 100421
    assert sim.stats["code_100421"] == 2


# ----------------------------------------------------------------------------- secrets
def test_canary_secret_never_leaks(serve, egress_client, clock, all_logs: pytest.LogCaptureFixture) -> None:
    """Every scenario, with a recognisable secret: not in logs, exception texts or reports."""
    outputs: list[str] = []
    sim = BingXSimulator(clock=clock)
    demos = seed_demo(sim, EGRESS_IP, secret_prefix=CANARY)
    assert all(demo.api_secret.startswith(CANARY) for demo in demos)
    url = serve(sim)
    adapter = adapter_for(url, egress_client, clock, egress=(EGRESS_IP, SECOND_EGRESS_IP))
    for demo in demos:
        result = check_demo(adapter, demo, identify_account=True)
        outputs += [json.dumps(result.report.to_dict()), repr(result), str(result.account_id)]
    canary_key = sim.add_key(secret=CANARY + "x" * 40, permissions=(READ, SPOT), ip_addresses=(EGRESS_IP,))
    credentials = credentials_for(canary_key.api_key, canary_key.secret)
    outputs.append(repr(credentials))
    for fault in Fault:
        sim.fault = fault
        result = adapter_for(url, egress_client, clock).check(credentials, [Scope.SPOT])
        outputs.append(json.dumps(result.report.to_dict()))
    sim.fault = None
    skewed = LyingTimeSimulator(clock=clock, time_offset_ms=30_000, interface_limit=2)
    skewed.add_key(api_key=canary_key.api_key, secret=canary_key.secret, ip_addresses=(EGRESS_IP,))
    skewed_url = serve(skewed)
    for _ in range(3):  # clock skew (two requests), then 429, then 418
        result = adapter_for(skewed_url, egress_client, clock).check(credentials, [Scope.SPOT])
        outputs.append(json.dumps(result.report.to_dict()))
    try:
        raise RuntimeError(f"check failed for {credentials}")
    except RuntimeError as error:
        outputs.append(str(error))
    assert all(CANARY not in text for text in outputs)
    assert CANARY not in all_logs.text
    assert all(CANARY not in str(record.args) for record in all_logs.records)


def test_egress_client_really_leaves_from_the_egress_ip(serve, clock) -> None:
    """Guard for the matrix above: a client from another address is refused by a bound key."""
    sim = BingXSimulator(clock=clock)
    key = sim.add_key(secret="s" * 64, permissions=(READ, SPOT), ip_addresses=(EGRESS_IP,))
    with new_http_client(source_address=SECOND_EGRESS_IP, read_timeout=1.0) as other:
        report = (
            adapter_for(serve(sim), other, clock).check(credentials_for(key.api_key, key.secret), [Scope.SPOT]).report
        )
    assert report.codes == ["ip_not_whitelisted"]
