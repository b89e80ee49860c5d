"""The health model: statuses, severities and the contract's JSON shape."""

from datetime import UTC, datetime

import pytest

from keyhealth.domain.model import (
    Audience,
    Finding,
    FindingCode,
    Permissions,
    Report,
    Severity,
    Status,
    status_of,
)

CONTRACT_SEVERITIES = {
    "invalid_api_key": "error",
    "invalid_secret": "error",
    "invalid_passphrase": "error",
    "ip_not_whitelisted": "error",
    "key_rejected": "error",
    "scope_not_permitted": "error",
    "trading_permission_expired": "error",
    "account_restricted": "error",
    "withdraw_enabled": "warning",
    "no_ip_restriction": "warning",
    "trading_permission_expiring": "warning",
    "inactivity_deletion_risk": "warning",
    "whitespace_trimmed": "info",
    "rate_limited": "transient",
    "exchange_unavailable": "transient",
    "timeout": "transient",
    "clock_skew": "transient",
    "egress_blocked": "transient",
    # Beyond the contract's list (issue 11): stored credentials that cannot be decrypted. Transient in the
    # contract's sense: `unknown`, the stored status kept, for operators.
    "credentials_unreadable": "transient",
    # Added by issue 12 (contract section 7): a whitelist lacking some of the egress IPs, or an announced one.
    "ip_whitelist_incomplete": "error",
    "planned_ip_missing": "warning",
}


def finding(code: FindingCode) -> Finding:
    return Finding(code=code, message="m", remedy="r")


def test_every_contract_code_exists_with_its_severity():
    assert {c.value: c.severity.value for c in FindingCode} == CONTRACT_SEVERITIES


def test_transient_findings_are_for_the_operator_and_the_rest_for_the_user():
    for code in FindingCode:
        expected = Audience.OPERATOR if code.severity is Severity.TRANSIENT else Audience.USER
        assert code.audience is expected, code


@pytest.mark.parametrize(
    ("codes", "status"),
    [
        ([], Status.HEALTHY),
        ([FindingCode.WHITESPACE_TRIMMED], Status.HEALTHY),
        ([FindingCode.WITHDRAW_ENABLED], Status.DEGRADED),
        ([FindingCode.WITHDRAW_ENABLED, FindingCode.INVALID_SECRET], Status.FAILING),
        ([FindingCode.TIMEOUT], Status.UNKNOWN),
        # A check cut short cannot vouch for a key: unknown beats a warning...
        ([FindingCode.NO_IP_RESTRICTION, FindingCode.RATE_LIMITED], Status.UNKNOWN),
        # ...but what we did learn for certain (an error) is still reported as failing.
        ([FindingCode.SCOPE_NOT_PERMITTED, FindingCode.TIMEOUT], Status.FAILING),
    ],
)
def test_status_follows_the_most_serious_finding(codes, status):
    assert status_of([finding(c) for c in codes]) is status


def test_report_serialises_to_the_contract_shape_and_back():
    report = Report(
        checked_at=datetime(2026, 11, 21, 2, 0, tzinfo=UTC),
        egress_ip="203.0.113.10",
        permissions=Permissions(read=True, spot=True, futures=None, withdraw=True),
        ip_restricted=True,
        ip_whitelist=("203.0.113.10",),
        findings=(Finding(FindingCode.WITHDRAW_ENABLED, "can withdraw", "untick it", -2015, "text"),),
    )
    data = report.to_dict()
    assert data == {
        "status": "degraded",
        "checked_at": "2026-11-21T02:00:00Z",
        "egress_ip": "203.0.113.10",
        "permissions": {
            "read": True,
            "spot": True,
            "futures": None,
            "margin": None,
            "withdraw": True,
            "transfer": None,
        },
        "ip_restricted": True,
        "ip_whitelist": ["203.0.113.10"],
        "trading_expires_at": None,
        "findings": [
            {
                "code": "withdraw_enabled",
                "severity": "warning",
                "audience": "user",
                "message": "can withdraw",
                "remedy": "untick it",
                "exchange_code": -2015,
                "exchange_message": "text",
            }
        ],
    }
    assert Report.from_dict(data) == report


def test_with_findings_puts_the_extra_finding_first_and_keeps_the_rest():
    report = Report(checked_at=datetime.now(UTC), egress_ip=None, findings=(finding(FindingCode.TIMEOUT),))
    extended = report.with_findings(finding(FindingCode.WHITESPACE_TRIMMED))
    assert extended.codes == ["whitespace_trimmed", "timeout"]
    assert report.codes == ["timeout"]
