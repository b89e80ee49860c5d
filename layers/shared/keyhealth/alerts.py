"""Alert messages for the SNS topic (contract section 3), built from domain objects.

One JSON body for machines (Slack notifier, queues) and one readable text for email,
sent together as an SNS message with per-protocol bodies.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from keyhealth.binding import Binding
from keyhealth.model import Report, Status, format_time

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


def status_changed(binding: Binding, previous: Status, report: Report) -> Alert:
    """A binding's status changed (on verify, rotate or audit)."""
    codes = [f.code.value for f in report.findings if f.severity.value in ("error", "warning")]
    reason = f" ({', '.join(codes)})" if codes else ""
    subject = _subject(
        f"keyhealth: {binding.exchange.value} binding {binding.binding_id} "
        f"{previous.value} -> {binding.status.value}{reason}"
    )
    findings = [f.to_dict() for f in report.findings]
    body = {
        "type": "binding_status_changed",
        "binding_id": binding.binding_id,
        "tenant": binding.tenant,
        "user_id": binding.user_id,
        "exchange": binding.exchange.value,
        "api_key_masked": binding.api_key_masked,
        "previous_status": previous.value,
        "status": binding.status.value,
        "findings": findings,
        "checked_at": format_time(report.checked_at),
    }
    lines = [
        f"The {binding.exchange.display_name} key {binding.api_key_masked} of user {binding.user_id} "
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
            "exchange": binding.exchange.value,
            "status": binding.status.value,
        },
    )
