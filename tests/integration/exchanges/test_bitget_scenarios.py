"""The scenario matrix: BitgetAdapter against the running Bitget simulator, from the egress IP.

Per-key cases come from `seed_demo`, so the demo (`make run`) and these tests cannot
disagree; whole-exchange transient cases (throttling, faults, timeout, clock) follow.
"""

from __future__ import annotations

import json
import time

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from keyhealth.adapters.http_transport import HttpxTransport
from keyhealth.domain.credentials import Credentials, KeyType, Secret
from keyhealth.domain.exchange import CheckResult
from keyhealth.domain.model import Scope
from keyhealth.exchanges import bitget as bitget_module
from keyhealth.exchanges.base import CheckAborted, ReportDraft
from keyhealth.exchanges.bitget import BitgetAdapter
from simulators.base import DemoKey, Fault
from simulators.bitget import BitgetSimulator, seed_demo
from tests.conftest import EGRESS_IP, PLANNED_EGRESS, PLANNED_EGRESS_IP, SECOND_EGRESS_IP
from tests.support.clock import FakeClock

BOTH = frozenset({Scope.SPOT, Scope.FUTURES})
PASSPHRASE = "ScenarioPass1"
SECRET = "scenario-secret-0001"


def adapter(url: str, client, *, egress_ips=(EGRESS_IP,), clock=time.time, planned=()) -> BitgetAdapter:
    return BitgetAdapter(
        transport=HttpxTransport(client), base_url=url, egress_ips=egress_ips, clock=clock, planned_ips=planned
    )


def seeded(sim: BitgetSimulator) -> list[DemoKey]:
    """The demo keys of a stack with two egress IPs and one announced (the requests leave from the first)."""
    return seed_demo(sim, EGRESS_IP, other_egress_ips=(SECOND_EGRESS_IP,), planned_ips=(PLANNED_EGRESS_IP,))


def creds(api_key: str, secret: str = SECRET, passphrase: str = PASSPHRASE, key_type=KeyType.HMAC) -> Credentials:
    return Credentials(api_key=api_key, api_secret=Secret(secret), passphrase=Secret(passphrase), key_type=key_type)


def add_key(sim: BitgetSimulator, *, unified: bool = False, **kwargs):
    kwargs.setdefault("secret", SECRET)
    kwargs.setdefault("passphrase", PASSPHRASE)
    kwargs.setdefault("ips", (EGRESS_IP,))
    return sim.add_key(sim.add_account(unified=unified), **kwargs)


def assert_report(result: CheckResult, status: str, codes: list[str]) -> None:
    assert (result.report.status.value, result.report.codes) == (status, codes)


# ------------------------------------------------------------------ per-key: the demo keys
DEMO_LABELS = [key.label for key in seeded(BitgetSimulator())]


@pytest.mark.parametrize("label", DEMO_LABELS)
def test_demo_key_reports_what_it_expects(label, serve, egress_client):
    sim = BitgetSimulator()
    demo: DemoKey = next(k for k in seeded(sim) if k.label == label)
    url = serve(sim)

    checker = adapter(url, egress_client, egress_ips=(EGRESS_IP, SECOND_EGRESS_IP), planned=(PLANNED_EGRESS,))
    result = checker.check(
        creds(demo.api_key, demo.api_secret, demo.passphrase or ""),
        {Scope(s) for s in demo.scopes},
        identify_account=True,
    )

    assert_report(result, demo.expected_status, list(demo.expected_codes))
    if result.report.permissions.read:
        # the key answered: its account id came with the answer, at no extra cost
        assert result.account_id in {a.user_id for a in sim.accounts.values()}
        assert sim.stats["requests"] == (2 if "uta" in label else 1)


def test_demo_covers_every_per_key_code_that_applies_to_bitget():
    codes = {code for key in seeded(BitgetSimulator()) for code in key.expected_codes}
    statuses = {key.expected_status for key in seeded(BitgetSimulator())}

    assert codes == {
        "invalid_api_key",
        "invalid_secret",
        "invalid_passphrase",
        "ip_not_whitelisted",
        "ip_whitelist_incomplete",
        "planned_ip_missing",
        "scope_not_permitted",
        "account_restricted",
        "withdraw_enabled",
        "no_ip_restriction",
    }
    assert statuses == {"healthy", "degraded", "failing"}


def test_demo_secrets_are_deterministic():
    first = seed_demo(BitgetSimulator(), EGRESS_IP)
    second = seed_demo(BitgetSimulator(seed=99), EGRESS_IP)

    assert [(k.api_key, k.api_secret, k.passphrase) for k in first] == [
        (k.api_key, k.api_secret, k.passphrase) for k in second
    ]


# ------------------------------------------------------------------ per-key: beyond the demo
def test_uta_whitelist_and_account_id_come_from_v3(serve, egress_client):
    sim = BitgetSimulator()
    key = add_key(sim, unified=True, ips=(EGRESS_IP, "198.51.100.9"), authorities=("stor", "stow"))
    url = serve(sim)

    result = adapter(url, egress_client).check(creds(key.api_key), {Scope.SPOT}, identify_account=True)

    assert_report(result, "healthy", [])
    assert result.account_id == key.account.user_id
    assert result.report.ip_whitelist == (EGRESS_IP, "198.51.100.9")
    assert result.report.permissions.margin is None  # the v3 vocabulary cannot say


def test_rsa_key_is_checked_like_an_hmac_key(serve, egress_client):
    sim = BitgetSimulator()
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    private_pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    other_pem = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        .private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        .decode()
    )
    key = add_key(sim, secret=None, rsa_public_key_pem=public_pem)
    url = serve(sim)
    bitget = adapter(url, egress_client)

    good = bitget.check(creds(key.api_key, private_pem, key_type=KeyType.RSA), BOTH)
    # no wait needed: a wrong signature is refused before the per-UID limit is counted
    wrong = bitget.check(creds(key.api_key, other_pem, key_type=KeyType.RSA), BOTH)

    assert_report(good, "healthy", [])
    assert_report(wrong, "failing", ["invalid_secret"])


def test_every_egress_ip_must_be_whitelisted(serve, egress_client):
    sim = BitgetSimulator()
    key = add_key(sim, ips=(EGRESS_IP,))
    url = serve(sim)

    result = adapter(url, egress_client, egress_ips=(EGRESS_IP, SECOND_EGRESS_IP)).check(creds(key.api_key), BOTH)

    # This call came from EGRESS_IP, which is listed; the platform's calls from the second one would be refused.
    assert_report(result, "failing", ["ip_whitelist_incomplete"])
    assert SECOND_EGRESS_IP in result.report.findings[0].message
    assert EGRESS_IP not in result.report.findings[0].message
    assert "on Bitget (API Management, Edit, IP whitelist)" in result.report.findings[0].remedy
    assert result.report.ip_whitelist == (EGRESS_IP,)


def test_malformed_key_is_unknown_to_bitget(serve, egress_client):
    url = serve(BitgetSimulator())

    result = adapter(url, egress_client).check(creds("not-a-bitget-key"), BOTH)

    assert_report(result, "failing", ["invalid_api_key"])
    assert result.report.findings[0].exchange_code == "40006"


# ------------------------------------------------------------------ whole exchange: transient
def test_uid_throttling_is_transient(serve, egress_client):
    clock = FakeClock(time.time())
    sim = BitgetSimulator(clock=clock)
    key = add_key(sim)
    url = serve(sim)
    bitget = adapter(url, egress_client, clock=clock)

    first = bitget.check(creds(key.api_key), BOTH)
    second = bitget.check(creds(key.api_key), BOTH)
    clock.now += 1
    third = bitget.check(creds(key.api_key), BOTH)

    assert_report(first, "healthy", [])
    assert_report(second, "unknown", ["rate_limited"])
    assert second.report.findings[0].exchange_code == "429"
    assert_report(third, "healthy", [])


def test_ip_lockout_is_transient_for_every_key(serve, egress_client):
    clock = FakeClock(time.time())
    sim = BitgetSimulator(clock=clock, ip_requests_per_minute=2)
    keys = [add_key(sim) for _ in range(4)]
    url = serve(sim)
    bitget = adapter(url, egress_client, clock=clock)

    results = [bitget.check(creds(k.api_key), BOTH) for k in keys]

    assert [r.report.status.value for r in results] == ["healthy", "healthy", "unknown", "unknown"]
    assert results[3].report.codes == ["rate_limited"]
    assert sim.stats["ip_lockouts"] == 1


@pytest.mark.parametrize(
    ("fault", "code", "exchange_code"),
    [
        (Fault.MAINTENANCE, "exchange_unavailable", "40015"),
        (Fault.UNAVAILABLE, "exchange_unavailable", None),
        (Fault.GEO_BLOCKED, "egress_blocked", None),
        (Fault.RESET, "exchange_unavailable", None),
    ],
)
def test_faults_are_transient(serve, egress_client, fault, code, exchange_code):
    sim = BitgetSimulator()
    key = add_key(sim)
    sim.fault = fault
    url = serve(sim)

    result = adapter(url, egress_client).check(creds(key.api_key), BOTH)

    assert_report(result, "unknown", [code])
    assert result.report.findings[0].exchange_code == exchange_code
    assert result.report.findings[0].audience.value == "operator"


def test_slow_exchange_is_a_timeout(serve, egress_client):
    sim = BitgetSimulator(latency=(1.2, 1.2))  # above the client's 1 s read timeout
    key = add_key(sim)
    url = serve(sim)

    result = adapter(url, egress_client).check(creds(key.api_key), BOTH)

    assert_report(result, "unknown", ["timeout"])


def test_clock_skew_is_corrected_once_and_then_remembered(serve, egress_client):
    clock = FakeClock(time.time())
    sim = BitgetSimulator(clock=clock, time_offset_ms=90_000)  # Bitget 90 s ahead of us
    first_key, second_key = add_key(sim), add_key(sim)
    url = serve(sim)
    bitget = adapter(url, egress_client, clock=clock)

    first = bitget.check(creds(first_key.api_key), BOTH)
    requests_after_first = sim.stats["requests"]
    second = bitget.check(creds(second_key.api_key), BOTH)

    assert_report(first, "healthy", [])
    assert requests_after_first == 3  # refused (40008), server time, retried
    assert_report(second, "healthy", [])
    assert sim.stats["requests"] == 4  # the measured offset is kept


class DriftingClock(FakeClock):
    """A local clock that jumps 40 s every time it is read: no offset can fix it."""

    def __call__(self) -> float:
        self.now += 40
        return self.now


def test_clock_skew_that_cannot_be_corrected_is_transient(serve, egress_client):
    sim = BitgetSimulator()
    key = add_key(sim)
    url = serve(sim)

    result = adapter(url, egress_client, clock=DriftingClock(time.time())).check(creds(key.api_key), BOTH)

    assert_report(result, "unknown", ["clock_skew"])
    assert result.report.findings[0].exchange_code == "40008"


# ------------------------------------------------------------------ secrets never leak
CANARY_SECRET = "CANARY-S3CRET-bitget-7f3a9c"
CANARY_PASSPHRASE = "CanaryPass7f3a9c"


def test_canary_credentials_never_appear_in_logs_errors_or_reports(serve, egress_client, all_logs):
    right_secret, right_passphrase = "the-real-secret-xyz", "RealPass123"
    seen: list[str] = []
    sim = BitgetSimulator()
    url = serve(sim)

    def key(**kwargs):
        return add_key(sim, secret=right_secret, passphrase=right_passphrase, **kwargs).api_key

    scenarios = [
        # (api key, secret, passphrase): healthy with canaries as the real credentials
        (add_key(sim, secret=CANARY_SECRET, passphrase=CANARY_PASSPHRASE).api_key, CANARY_SECRET, CANARY_PASSPHRASE),
        (key(), CANARY_SECRET, right_passphrase),  # wrong secret
        (key(), right_secret, CANARY_PASSPHRASE),  # wrong passphrase
        ("bg_" + "e" * 32, CANARY_SECRET, CANARY_PASSPHRASE),  # unknown key
        ("not-a-key", CANARY_SECRET, CANARY_PASSPHRASE),  # malformed key
        (add_key(sim, secret=CANARY_SECRET, passphrase=CANARY_PASSPHRASE, ips=("203.0.113.1",)).api_key,
         CANARY_SECRET, CANARY_PASSPHRASE),  # IP refused
        (add_key(sim, secret=CANARY_SECRET, passphrase=CANARY_PASSPHRASE, unified=True, ips=()).api_key,
         CANARY_SECRET, CANARY_PASSPHRASE),  # UTA fallback, degraded
        ("bg_" + "f" * 32, "-----BEGIN PRIVATE KEY-----\n" + CANARY_SECRET + "\n-----END PRIVATE KEY-----",
         CANARY_PASSPHRASE),  # an unreadable RSA key (key_type set below)
    ]  # fmt: skip
    bitget = adapter(url, egress_client)
    for index, (api_key, secret, passphrase) in enumerate(scenarios):
        key_type = KeyType.RSA if index == len(scenarios) - 1 else KeyType.HMAC
        credentials = creds(api_key, secret, passphrase, key_type)
        result = bitget.check(credentials, BOTH, identify_account=True)
        seen += [json.dumps(result.report.to_dict()), repr(result), repr(credentials), str(credentials)]
        # the exceptions that end a check, caught where they are raised
        draft = ReportDraft(ui=bitget_module.SPEC.ui, egress_ips=(EGRESS_IP,), checked_at=result.report.checked_at)
        try:
            bitget._inspect(credentials, BOTH, draft, True)
        except CheckAborted as stop:
            seen += [str(stop), repr(stop), repr(stop.finding), str(stop.__context__), str(stop.__cause__)]

    # throttled, faulted and clock-skewed checks with canary credentials
    clocked = FakeClock(time.time())
    for simulator in (
        BitgetSimulator(clock=clocked, time_offset_ms=120_000),
        BitgetSimulator(clock=clocked),
    ):
        canary_key = add_key(simulator, secret=CANARY_SECRET, passphrase=CANARY_PASSPHRASE).api_key
        url = serve(simulator)
        for _ in range(2):  # the second one is throttled
            result = adapter(url, egress_client, clock=clocked).check(
                creds(canary_key, CANARY_SECRET, CANARY_PASSPHRASE), BOTH
            )
            seen.append(json.dumps(result.report.to_dict()))
    simulator.fault = Fault.MAINTENANCE
    result = adapter(url, egress_client).check(creds(canary_key, CANARY_SECRET, CANARY_PASSPHRASE), BOTH)
    seen.append(json.dumps(result.report.to_dict()))

    assert all_logs.records, "the check should have logged something (httpx) for this test to mean anything"
    seen += [all_logs.text] + [record.getMessage() for record in all_logs.records]
    seen += [repr(record.args) for record in all_logs.records]
    for text in seen:
        assert CANARY_SECRET not in text
        assert CANARY_PASSPHRASE not in text
