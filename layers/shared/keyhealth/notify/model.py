"""Alert messages for the SNS topic (contract section 3), built from domain objects.

`exchange_name` is the exchange's own spelling of its name (its spec's display name).

One JSON body for machines (Slack notifier, queues) and one readable text for email,
sent together as an SNS message with per-protocol bodies.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from keyhealth.bindings.model import Binding
from keyhealth.domain.model import Report, Status, format_time

SUBJECT_LIMIT = 100  # SNS refuses longer subjects

_SEVERITY_OF_STATUS = {
    Status.FAILING: "critical",
    Status.DEGRADED: "warning",
    Status.UNKNOWN: "warning",
    Status.HEALTHY: "info",
}


@dataclass(frozen=True)
class Alert:
    subject: str
    body: dict[str, Any]
    text: str  # what a person reads in an email
    attributes: dict[str, str]  # type, severity, exchange, status: for subscription filters

    def sns_message(self) -> str:
        """The per-protocol message: JSON by default, readable text for email."""
        return json.dumps({"default": json.dumps(self.body), "email": self.text})


def _subject(text: str) -> str:
    return text if len(text) <= SUBJECT_LIMIT else text[: SUBJECT_LIMIT - 3] + "..."


def status_changed(binding: Binding, previous: Status, report: Report, *, exchange_name: str) -> Alert:
    """A binding's status changed (on verify, rotate or audit)."""
    codes = [f.code.value for f in report.findings if f.severity.value in ("error", "warning")]
    reason = f" ({', '.join(codes)})" if codes else ""
    subject = _subject(
        f"keyhealth: {binding.exchange} binding {binding.binding_id} {previous.value} -> {binding.status.value}{reason}"
    )
    findings = [f.to_dict() for f in report.findings]
    body = {
        "type": "binding_status_changed",
        "binding_id": binding.binding_id,
        "tenant": binding.tenant,
        "user_id": binding.user_id,
        "exchange": binding.exchange,
        "exchange_name": exchange_name,
        "api_key_masked": binding.api_key_masked,
        "previous_status": previous.value,
        "status": binding.status.value,
        "findings": findings,
        "checked_at": format_time(report.checked_at),
    }
    lines = [
        f"The {exchange_name} key {binding.api_key_masked} of user {binding.user_id} "
        f"went from {previous.value} to {binding.status.value}.",
        "",
    ]
    for finding in report.findings:
        lines += [f"- {finding.code.value} ({finding.severity.value}): {finding.message}", f"  Fix: {finding.remedy}"]
    lines += [
        "",
        f"Binding: {binding.binding_id}  Tenant: {binding.tenant}  Checked: {format_time(report.checked_at)}",
    ]
    return Alert(
        subject=subject,
        body=body,
        text="\n".join(lines),
        attributes={
            "type": "binding_status_changed",
            "severity": _SEVERITY_OF_STATUS[binding.status],
            "exchange": binding.exchange,
            "status": binding.status.value,
        },
    )


def _binding_alert(
    kind: str, binding: Binding, exchange_name: str, severity: str, subject: str, lines: list[str], **body: Any
) -> Alert:
    return Alert(
        subject=_subject(subject),
        body={
            "type": kind,
            "binding_id": binding.binding_id,
            "tenant": binding.tenant,
            "user_id": binding.user_id,
            "exchange": binding.exchange,
            "exchange_name": exchange_name,
            "api_key_masked": binding.api_key_masked,
            **body,
        },
        text="\n".join([*lines, "", f"Binding: {binding.binding_id}  Tenant: {binding.tenant}"]),
        attributes={
            "type": kind,
            "severity": severity,
            "exchange": binding.exchange,
            "status": binding.status.value,
        },
    )


def unreachable(binding: Binding, report: Report, *, exchange_name: str) -> Alert:
    """The exchange could not be asked about this key in several audits in a row."""
    reasons = [f"- {f.code.value}: {f.message}" for f in report.findings]
    return _binding_alert(
        "binding_unreachable",
        binding,
        exchange_name,
        "warning",
        f"keyhealth: {binding.exchange} binding {binding.binding_id} unchecked "
        f"{binding.unknown_streak} audits in a row",
        [
            f"keyhealth could not check the {exchange_name} key {binding.api_key_masked} of user "
            f"{binding.user_id} in the last {binding.unknown_streak} audits; its last known status is "
            f"{binding.status.value}.",
            "",
            *reasons,
            "",
            "What to do: this is the platform's side (network, exchange outage, egress IP); see the findings.",
        ],
        unknown_streak=binding.unknown_streak,
        findings=[f.to_dict() for f in report.findings],
        checked_at=format_time(report.checked_at),
    )


def trading_expiring(binding: Binding, expires_at: Any, days_left: int, *, exchange_name: str) -> Alert:
    """A reminder that trading rights lapse soon (sent at 14, 7 and 1 days, once each)."""
    when = format_time(expires_at)
    return _binding_alert(
        "trading_permission_expiring",
        binding,
        exchange_name,
        "warning",
        f"keyhealth: {binding.exchange} binding {binding.binding_id} trading rights lapse in {days_left} days",
        [
            f"The {exchange_name} key {binding.api_key_masked} of user {binding.user_id} loses its "
            f"trading permission on {when} ({days_left} days), because it has no IP restriction.",
            "",
            "What to do: ask the user to restrict the key to the platform's egress IPs; restricted keys do not lapse.",
        ],
        expires_at=when,
        days_left=days_left,
    )


def incident(body: dict[str, Any]) -> Alert:
    """Many bindings of one exchange failed the same way in one audit run."""
    share = f"{body['share'] * 100:.0f}%"
    return Alert(
        subject=_subject(
            f"keyhealth: INCIDENT {body['exchange']} {body['code']}: {body['count']} of {body['total']} bindings"
        ),
        body=body,
        text="\n".join(
            [
                f"{body['count']} of {body['total']} {body['exchange']} bindings checked in audit {body['run_id']} "
                f"({share}) came back {body['code']}.",
                f"Likely cause: {body['likely_cause']}.",
                "",
                "What to do: fix the cause on the platform's side; individual alerts for these bindings were "
                "folded into this one.",
            ]
        ),
        attributes={"type": "incident", "severity": "critical", "exchange": body["exchange"], "status": "failing"},
    )


def audit_summary(body: dict[str, Any]) -> Alert:
    counts = body["counts"]
    worst = "critical" if body["incidents"] else "warning" if body["newly_failing_count"] else "info"
    lines = [
        f"Audit {body['run_id']} checked {counts['total']} bindings in {body['duration_seconds']} s "
        f"({body['checks_per_second']} checks/s): {counts['healthy']} healthy, {counts['degraded']} degraded, "
        f"{counts['failing']} failing, {counts['unknown']} unknown.",
        f"Newly failing: {body['newly_failing_count']}. Incidents: {len(body['incidents'])}.",
        "",
    ]
    for exchange, row in body["by_exchange"].items():
        lines.append(
            f"- {exchange}: {row['total']} checked, {row['healthy']} healthy, {row['degraded']} degraded, "
            f"{row['failing']} failing, {row['unknown']} unknown"
        )
    for item in body["incidents"]:
        lines.append(f"- INCIDENT {item['exchange']} {item['code']}: {item['count']} bindings ({item['likely_cause']})")
    return Alert(
        subject=_subject(
            f"keyhealth: audit {body['run_id']}: {counts['total']} checked, {counts['failing']} failing, "
            f"{body['newly_failing_count']} newly failing"
        ),
        body=body,
        text="\n".join(lines),
        attributes={"type": "audit_summary", "severity": worst, "exchange": "all", "status": "summary"},
    )
