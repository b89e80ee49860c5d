"""The scenario matrix: BinanceAdapter against the running Binance simulator, from the egress IP.

Per-key cases come from `seed_demo`, so the demo keys and these tests cannot disagree;
whole-exchange transient cases (rate limits, faults, timeout, clock skew) are added here.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime

import httpx
import pytest

from keyhealth.adapters.http_transport import HttpxTransport, new_http_client
from keyhealth.audit.model import EGRESS_OUTCOMES, with_egress_outcome
from keyhealth.bindings.model import Binding
from keyhealth.domain.credentials import Credentials, KeyType, Secret
from keyhealth.domain.exchange import CheckResult
from keyhealth.domain.model import Scope, Status
from keyhealth.exchanges import binance as binance_module
from keyhealth.exchanges.binance import BinanceAdapter
from simulators.base import DemoKey, Fault
from simulators.binance import BinanceSimulator, seed_demo
from tests.conftest import EGRESS_IP, SECOND_EGRESS_IP
from tests.support.clock import FakeClock

START = 1_800_000_000.0
CANARY = "CANARY0binance0secret0CANARY0binance0secret0CANARY0binance00042"


class RunawayClock(FakeClock):
    """An exchange clock that gains 10 s every time it is read: no offset can be measured."""

    def __call__(self) -> float:
        self.now += 10.0
        return self.now


DEMO_CLOCK = FakeClock(START)
DEMO_SIM = BinanceSimulator(clock=DEMO_CLOCK)
DEMO_KEYS = seed_demo(DEMO_SIM, EGRESS_IP)


def adapter(url: str, client: httpx.Client, clock: Callable[[], float]) -> BinanceAdapter:
    # The local stack may run two servers; one serves both base URLs here.
    return BinanceAdapter(
        transport=HttpxTransport(client), base_url=url, futures_base_url=url, egress_ips=[EGRESS_IP], clock=clock
    )


def credentials_of(demo: DemoKey, secret: str | None = None) -> Credentials:
    return Credentials(demo.api_key, Secret(secret or demo.api_secret), key_type=KeyType(demo.key_type))


def check_demo(binance: BinanceAdapter, demo: DemoKey, secret: str | None = None) -> CheckResult:
    return binance.check(credentials_of(demo, secret), [Scope(s) for s in demo.scopes], identify_account=True)


def healthy_sim(clock: Callable[[], float], **kwargs) -> tuple[BinanceSimulator, Credentials]:
    sim = BinanceSimulator(clock=clock, **kwargs)
    sim.add_key("H" * 64, uid=7, secret=CANARY, ip_whitelist=(EGRESS_IP,), enable_futures=True)
    return sim, Credentials("H" * 64, Secret(CANARY))


# --------------------------------------------------------------------------- per-key matrix
@pytest.mark.parametrize("demo", DEMO_KEYS, ids=[d.label for d in DEMO_KEYS])
def test_demo_key_reports_expected_status_and_codes(demo: DemoKey, serve, egress_client) -> None:
    binance = adapter(serve(DEMO_SIM), egress_client, DEMO_CLOCK)
    report = check_demo(binance, demo).report
    assert report.status.value == demo.expected_status, report.to_dict()
    assert sorted(report.codes) == sorted(demo.expected_codes), report.to_dict()
    assert report.egress_ip == EGRESS_IP
    assert report.ip_whitelist is None  # Binance never reveals the list


def test_demo_covers_every_binance_key_finding() -> None:
    covered = {code for demo in DEMO_KEYS for code in demo.expected_codes}
    assert covered == {
        "invalid_api_key",
        "invalid_secret",
        "key_rejected",
        "scope_not_permitted",
        "trading_permission_expired",
        "trading_permission_expiring",
        "account_restricted",
        "withdraw_enabled",
        "no_ip_restriction",
    }
    assert {d.expected_status for d in DEMO_KEYS} == {"healthy", "degraded", "failing"}
    assert {d.key_type for d in DEMO_KEYS} == {"hmac", "ed25519", "rsa"}


def test_healthy_key_report_details(serve, egress_client) -> None:
    demo = next(d for d in DEMO_KEYS if d.label == "healthy")
    result = check_demo(adapter(serve(DEMO_SIM), egress_client, DEMO_CLOCK), demo)
    report = result.report
    assert report.permissions.to_dict() == {
        "read": True,
        "spot": True,
        "futures": True,
        "margin": False,
        "withdraw": False,
        "transfer": False,
    }
    assert report.ip_restricted is True
    assert report.trading_expires_at is None
    assert result.account_id == str(DEMO_SIM.keys[demo.api_key].uid)


def test_expiring_key_reports_when(serve, egress_client) -> None:
    demo = next(d for d in DEMO_KEYS if d.label == "trading-expiring")
    report = check_demo(adapter(serve(DEMO_SIM), egress_client, DEMO_CLOCK), demo).report
    expires_ms = DEMO_SIM.keys[demo.api_key].trading_expires_ms()
    assert report.trading_expires_at is not None
    assert int(report.trading_expires_at.timestamp() * 1000) == expires_ms
    assert report.ip_restricted is False


# --------------------------------------------------------------------------- whole-exchange cases
def test_rate_limited_then_waits_then_banned_when_ignoring(serve, egress_client) -> None:
    clock = FakeClock(START)
    sim, credentials = healthy_sim(clock, limits={"sapi": 2})
    url = serve(sim)
    binance = adapter(url, egress_client, clock)
    for _ in range(2):
        assert binance.check(credentials, [Scope.SPOT]).report.status is Status.HEALTHY
    limited = binance.check(credentials, [Scope.SPOT])
    assert limited.report.codes == ["rate_limited"]
    assert limited.report.status is Status.UNKNOWN
    assert limited.retry_after == 60
    finding = limited.report.findings[0]
    assert finding.exchange_code == -1003
    assert finding.exchange_message.startswith("Too much request weight used; current limit is 2 request weight")

    # The adapter honours Retry-After: it does not ask again, so the IP is not banned.
    sent = sim.stats["requests"]
    assert binance.check(credentials, [Scope.SPOT]).report.codes == ["rate_limited"]
    assert sim.stats["requests"] == sent

    # A second adapter instance (another worker) that ignores it gets the egress IP banned.
    banned = adapter(url, egress_client, clock).check(credentials, [Scope.SPOT])
    assert banned.report.codes == ["egress_blocked"]
    assert banned.report.status is Status.UNKNOWN
    assert banned.retry_after == 120
    assert banned.report.findings[0].audience.value == "operator"
    assert sim.stats[f"http_418:{EGRESS_IP}"] == 1

    clock.now += 180
    assert binance.check(credentials, [Scope.SPOT]).report.status is Status.HEALTHY


@pytest.mark.parametrize(
    ("fault", "code", "exchange_code"),
    [
        (Fault.MAINTENANCE, "exchange_unavailable", 1),
        (Fault.UNAVAILABLE, "exchange_unavailable", -1008),
        (Fault.GEO_BLOCKED, "egress_blocked", 0),
        (Fault.RESET, "exchange_unavailable", None),
    ],
)
def test_faults_are_transient(fault: Fault, code: str, exchange_code, serve, egress_client) -> None:
    clock = FakeClock(START)
    sim, credentials = healthy_sim(clock)
    sim.fault = fault
    report = adapter(serve(sim), egress_client, clock).check(credentials, [Scope.SPOT]).report
    assert report.codes == [code]
    assert report.status is Status.UNKNOWN
    assert report.findings[0].exchange_code == exchange_code


def test_waf_block_is_egress_blocked(serve, egress_client) -> None:
    clock = FakeClock(START)
    sim, credentials = healthy_sim(clock)
    sim.waf_blocked_ips.add(EGRESS_IP)
    report = adapter(serve(sim), egress_client, clock).check(credentials, [Scope.SPOT]).report
    assert report.codes == ["egress_blocked"]
    assert report.status is Status.UNKNOWN


def test_timeout_when_the_exchange_is_slower_than_the_read_timeout(serve, egress_client) -> None:
    clock = FakeClock(START)
    sim, credentials = healthy_sim(clock, latency=(1.3, 1.3))  # egress_client reads for 1 s
    report = adapter(serve(sim), egress_client, clock).check(credentials, [Scope.SPOT]).report
    assert report.codes == ["timeout"]
    assert report.status is Status.UNKNOWN


def test_clock_skew_is_corrected_with_the_exchange_time(serve, egress_client) -> None:
    clock = FakeClock(START)
    sim, credentials = healthy_sim(clock, time_offset_ms=45_000)
    binance = adapter(serve(sim), egress_client, clock)
    assert binance.check(credentials, [Scope.SPOT, Scope.FUTURES]).report.status is Status.HEALTHY
    assert sim.stats["http_400"] == 1  # one -1021, then /api/v3/time and the retry
    assert binance.check(credentials, [Scope.SPOT]).report.status is Status.HEALTHY
    assert sim.stats["http_400"] == 1  # the offset is kept


def test_clock_skew_that_cannot_be_corrected(serve, egress_client) -> None:
    sim, credentials = healthy_sim(RunawayClock(START))
    report = adapter(serve(sim), egress_client, FakeClock(START)).check(credentials, [Scope.SPOT]).report
    assert report.codes == ["clock_skew"]
    assert report.status is Status.UNKNOWN
    assert report.findings[0].exchange_code == -1021


# --------------------------------------------------------------------------- canary
def test_canary_secret_never_leaks(serve, egress_client, all_logs) -> None:
    clock = FakeClock(START)
    sim = BinanceSimulator(clock=clock)
    demo_keys = seed_demo(sim, EGRESS_IP)
    url = serve(sim)
    binance = adapter(url, egress_client, clock)
    outputs: list[str] = []
    pem_bodies: list[str] = []
    for demo in demo_keys:
        stored = sim.keys.get(demo.api_key)
        secret = None
        if demo.key_type == "hmac":
            secret = CANARY
            if stored is not None and stored.secret == demo.api_secret:
                stored.secret = CANARY  # the key's real secret is the canary
        else:
            pem_bodies.extend(line for line in demo.api_secret.splitlines() if "PRIVATE KEY" not in line)
        try:
            result = check_demo(binance, demo, secret)
        except Exception as error:  # check() must not raise; if it does, its text must not leak either
            outputs.append(repr(error))
            raise
        assert result.report.status.value == demo.expected_status, demo.label
        outputs.append(json.dumps(result.report.to_dict()))
        outputs.append(repr(result))

    # Transient paths with the canary too: clock skew, rate limit, maintenance.
    transient_sim, credentials = healthy_sim(clock, time_offset_ms=30_000, limits={"sapi": 1})
    url = serve(transient_sim)
    for _ in range(2):
        outputs.append(json.dumps(adapter(url, egress_client, clock).check(credentials, [Scope.SPOT]).report.to_dict()))
    transient_sim.fault = Fault.MAINTENANCE
    outputs.append(json.dumps(adapter(url, egress_client, clock).check(credentials, [Scope.SPOT]).report.to_dict()))
    outputs.append(repr(credentials))

    logs = all_logs.text + "".join(repr(record.__dict__) for record in all_logs.records)
    for text in [*outputs, logs]:
        assert CANARY not in text
        for body in pem_bodies:
            assert body not in text


# ----------------------------------------------------------- per-IP outcomes (Binance hides the whitelist)
def test_a_key_rejected_from_one_egress_ip_that_answered_from_another_is_ip_whitelist_incomplete(
    serve, egress_client
) -> None:
    # Given a restricted key that lists only the first egress IP, and workers leaving from both
    clock = FakeClock(START)
    sim = BinanceSimulator(clock=clock)
    key = sim.add_key("W" * 64, uid=8, secret=CANARY, ip_whitelist=(EGRESS_IP,), enable_futures=True)
    url = serve(sim)
    both = (EGRESS_IP, SECOND_EGRESS_IP)
    first = BinanceAdapter(
        transport=HttpxTransport(egress_client), base_url=url, futures_base_url=url, egress_ips=both, clock=clock
    )
    with new_http_client(source_address=SECOND_EGRESS_IP, connect_timeout=1.0, read_timeout=1.0) as client:
        second = BinanceAdapter(
            transport=HttpxTransport(client), base_url=url, futures_base_url=url, egress_ips=both[::-1], clock=clock
        )
        credentials = Credentials(key.api_key, Secret(CANARY))
        binding = stored_binding()
        ui = binance_module.SPEC.ui
        # When the audit checks it from the first IP (it answers: Binance shows no whitelist, nothing to say)
        answered = first.check(credentials, [Scope.SPOT], thorough=False).report
        report, outcomes = with_egress_outcome(binding, answered, EGRESS_IP, ui)
        assert (report.status, report.codes, report.ip_whitelist) == (Status.HEALTHY, [], None)
        binding = replace(binding, extra={EGRESS_OUTCOMES: outcomes})
        # and the next day from the second, which Binance refuses with its ambiguous -2015
        clock.now += 86_400
        refused = second.check(credentials, [Scope.SPOT], thorough=False).report
        assert refused.codes == ["key_rejected"]
        report, outcomes = with_egress_outcome(binding, refused, SECOND_EGRESS_IP, ui)
    # Then the report names exactly the missing IP, in Binance's words, instead of a vague rejection
    assert (report.status, report.codes) == (Status.FAILING, ["ip_whitelist_incomplete"])
    finding = report.findings[0]
    assert SECOND_EGRESS_IP in finding.message
    assert EGRESS_IP not in finding.message
    assert finding.remedy.startswith(
        f"Add {SECOND_EGRESS_IP} to the key's IP whitelist on Binance (Account, API Management"
    )
    assert set(outcomes) == {EGRESS_IP, SECOND_EGRESS_IP}
    # and when the first IP checks it again, the key still lacks the second: still reported
    binding = replace(binding, extra={EGRESS_OUTCOMES: outcomes})
    clock.now += 86_400
    again, _ = with_egress_outcome(
        binding, first.check(credentials, [Scope.SPOT], thorough=False).report, EGRESS_IP, ui
    )
    assert again.codes == ["ip_whitelist_incomplete"]
    # a week after the second IP's refusal, with no check from it since, it is forgotten
    clock.now += 7 * 86_400
    later, _ = with_egress_outcome(
        binding, first.check(credentials, [Scope.SPOT], thorough=False).report, EGRESS_IP, ui
    )
    assert later.codes == []


def test_a_key_rejected_from_every_egress_ip_stays_key_rejected(serve, egress_client) -> None:
    clock = FakeClock(START)
    sim = BinanceSimulator(clock=clock)
    sim.add_key("X" * 64, uid=9, secret=CANARY, ip_whitelist=("203.0.113.99",))
    url = serve(sim)
    checker = BinanceAdapter(
        transport=HttpxTransport(egress_client), base_url=url, futures_base_url=url, egress_ips=[EGRESS_IP], clock=clock
    )
    refused = checker.check(Credentials("X" * 64, Secret(CANARY)), [Scope.SPOT], thorough=False).report
    report, outcomes = with_egress_outcome(stored_binding(), refused, EGRESS_IP, binance_module.SPEC.ui)
    assert report.codes == ["key_rejected"]
    assert outcomes == {EGRESS_IP: {"ok": False, "at": outcomes[EGRESS_IP]["at"]}}


def stored_binding() -> Binding:
    now = datetime.fromtimestamp(START, UTC)
    return Binding(
        binding_id="bnd_01JWHITELIST",
        tenant="123456789012:role/platform",
        user_id="u-1",
        exchange="binance",
        label=None,
        key_type=KeyType.HMAC,
        api_key_masked="WWWW...WWWW",
        api_key_hash="0" * 64,
        scopes=(Scope.SPOT,),
        status=Status.HEALTHY,
        created_at=now,
        updated_at=now,
        secret_id="keyhealth/bnd_01JWHITELIST",
    )
