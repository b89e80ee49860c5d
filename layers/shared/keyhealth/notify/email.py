"""The email of an alert: its subject (also the SNS subject, which Slack shows as the notification text)
and the readable text email subscribers get, rendered from the typed messages of keyhealth.notify.model.

Pure: a message in, text out. A field an older message lacks is shown as "?".
"""

from __future__ import annotations

import json
from typing import Any

from keyhealth.notify.model import (
    SUBJECT_LIMIT,
    AlertMessage,
    AuditSummary,
    Incident,
    OrphansRemoved,
    PlannedIpMissing,
    StatusChanged,
    TradingExpiring,
    Undecryptable,
    UnknownAlert,
    Unreachable,
)


def subject(message: AlertMessage) -> str:
    """The subject, cut to what SNS accepts."""
    match message:
        case StatusChanged():
            codes = [f.code for f in message.findings if f.severity in ("error", "warning")]
            reason = f" ({', '.join(map(_shown, codes))})" if codes else ""
            text = (
                f"keyhealth: {_shown(message.exchange)} binding {_shown(message.binding_id)} "
                f"{_shown(message.previous_status)} -> {_shown(message.status)}{reason}"
            )
        case Undecryptable():
            text = (
                f"keyhealth: {_shown(message.exchange)} binding {_shown(message.binding_id)} unchecked: "
                "its stored credentials cannot be decrypted"
            )
        case Unreachable():
            text = (
                f"keyhealth: {_shown(message.exchange)} binding {_shown(message.binding_id)} unchecked "
                f"{_shown(message.unknown_streak)} audits in a row"
            )
        case PlannedIpMissing():
            text = (
                f"keyhealth: {_shown(message.exchange)} binding {_shown(message.binding_id)} is not ready for a "
                "planned egress IP"
            )
        case TradingExpiring():
            text = (
                f"keyhealth: {_shown(message.exchange)} binding {_shown(message.binding_id)} trading rights lapse "
                f"in {_shown(message.days_left)} days"
            )
        case Incident() if message.egress_ip is not None:
            state = "RECOVERED" if message.recovered_at else "INCIDENT"
            text = (
                f"keyhealth: {state} {_shown(message.exchange)} {_shown(message.code)} from egress IP "
                f"{_shown(message.egress_ip)}"
            )
        case Incident():
            text = (
                f"keyhealth: INCIDENT {_shown(message.exchange)} {_shown(message.code)}: {_shown(message.count)} "
                f"of {_shown(message.total)} bindings"
            )
        case AuditSummary():
            counts = message.counts
            text = (
                f"keyhealth: audit {_shown(message.run_id)}: {_shown(counts.get('total'))} checked, "
                f"{_shown(counts.get('failing'))} failing, {_shown(message.newly_failing_count)} newly failing"
            )
        case OrphansRemoved():
            failed = f", {_shown(message.failed)} failed" if message.failed else ""
            text = f"keyhealth: orphan sweep removed {_shown(message.count)} stored credentials{failed}"
        case UnknownAlert():
            text = f"keyhealth: {message.type}"
    return text if len(text) <= SUBJECT_LIMIT else text[: SUBJECT_LIMIT - 3] + "..."


def text(message: AlertMessage) -> str:
    """What a person reads in the email."""
    match message:
        case StatusChanged():
            lines = _status_changed(message)
        case Undecryptable():
            lines = _undecryptable(message)
        case Unreachable():
            lines = _unreachable(message)
        case PlannedIpMissing():
            lines = _planned_ip_missing(message)
        case TradingExpiring():
            lines = _trading_expiring(message)
        case Incident():
            lines = _incident(message)
        case AuditSummary():
            lines = _audit_summary(message)
        case OrphansRemoved():
            lines = _orphans_removed(message)
        case UnknownAlert():
            details = json.dumps(message.to_body(), indent=2, sort_keys=True, ensure_ascii=False, default=str)
            lines = [f"A keyhealth alert of type {message.type}:", "", details]
    return "\n".join(lines)


def _status_changed(message: StatusChanged) -> list[str]:
    lines = [
        f"The {_exchange(message)} key {_shown(message.api_key_masked)} of user {_shown(message.user_id)} "
        f"went from {_shown(message.previous_status)} to {_shown(message.status)}.",
        "",
    ]
    for finding in message.findings:
        lines += [
            f"- {_shown(finding.code)} ({_shown(finding.severity)}): {_shown(finding.message)}",
            f"  Fix: {_shown(finding.remedy)}",
        ]
    return [
        *lines,
        "",
        f"Binding: {_shown(message.binding_id)}  Tenant: {_shown(message.tenant)}  "
        f"Checked: {_shown(message.checked_at)}",
    ]


def _unreachable(message: Unreachable) -> list[str]:
    return [
        f"keyhealth could not check the {_exchange(message)} key {_shown(message.api_key_masked)} of user "
        f"{_shown(message.user_id)} in the last {_shown(message.unknown_streak)} audits; its last known status is "
        f"{_shown(message.status)}.",
        "",
        *[f"- {_shown(f.code)}: {_shown(f.message)}" for f in message.findings],
        "",
        "What to do: this is the platform's side (network, exchange outage, egress IP); see the findings.",
        "",
        _binding_line(message),
    ]


def _undecryptable(message: Undecryptable) -> list[str]:
    return [
        f"keyhealth could not decrypt the credentials it stores for the {_exchange(message)} key "
        f"{_shown(message.api_key_masked)} of user {_shown(message.user_id)}, so it did not check the key; its "
        f"last known status, {_shown(message.status)}, is kept until it can.",
        "",
        *[f"- {_shown(f.code)}: {_shown(f.message)} {_shown(f.remedy)}" for f in message.findings],
        "",
        "What to do: this is the platform's side (the KMS key, its policy, the stored item); the key's owner "
        "sees the binding unchanged.",
        "",
        _binding_line(message),
    ]


def _planned_ip_missing(message: PlannedIpMissing) -> list[str]:
    return [
        f"The {_exchange(message)} key {_shown(message.api_key_masked)} of user {_shown(message.user_id)} does not "
        "whitelist an egress IP the platform is about to use; it works today and breaks for those requests then.",
        "",
        *[f"- {_shown(f.message)}\n  Fix: {_shown(f.remedy)}" for f in message.findings],
        "",
        "What to do: tell the key's owner the fix above before the date; the key is checked again daily.",
        "",
        _binding_line(message),
    ]


def _trading_expiring(message: TradingExpiring) -> list[str]:
    return [
        f"The {_exchange(message)} key {_shown(message.api_key_masked)} of user {_shown(message.user_id)} loses its "
        f"trading permission on {_shown(message.expires_at)} ({_shown(message.days_left)} days), because it has "
        "no IP restriction.",
        "",
        "What to do: ask the user to restrict the key to the platform's egress IPs; restricted keys do not lapse.",
        "",
        _binding_line(message),
    ]


def _incident(message: Incident) -> list[str]:
    if message.egress_ip is not None:
        return _egress_incident(message)
    lines = [
        f"{_shown(message.count)} of {_shown(message.total)} {_shown(message.exchange)} bindings checked in audit "
        f"{_shown(message.run_id)} ({_percent(message.share)}) came back {_shown(message.code)}."
    ]
    if message.likely_cause:
        lines.append(f"Likely cause: {message.likely_cause}.")
    return [
        *lines,
        "",
        f"What to do: {message.remedy}",
        "Individual alerts for these bindings were folded into this one.",
    ]


def _egress_incident(message: Incident) -> list[str]:
    if message.recovered_at:
        return [
            f"{_shown(message.exchange)} answers the egress IP {_shown(message.egress_ip)} again "
            f"(down since {_shown(message.detected_at)}, recovered {_shown(message.recovered_at)}).",
            "",
            "Nothing to do; the audit's checks from this IP go on.",
        ]
    return [
        f"{_shown(message.exchange)} refuses or does not answer the egress IP {_shown(message.egress_ip)} "
        f"({_shown(message.code)}), seen by the egress canary at {_shown(message.detected_at)}: the audit's checks "
        "from this IP will come back unknown until it answers again; the other IPs go on.",
        f"Likely cause: {message.likely_cause}." if message.likely_cause else "",
        "",
        f"What to do: {message.remedy}",
    ]


def _audit_summary(message: AuditSummary) -> list[str]:
    counts = message.counts
    lines = [
        f"Audit {_shown(message.run_id)} checked {_counted(counts, 'total')} bindings in "
        f"{_shown(message.duration_seconds)} s ({_shown(message.checks_per_second)} checks/s): "
        f"{_counted(counts, 'healthy')} healthy, {_counted(counts, 'degraded')} degraded, "
        f"{_counted(counts, 'failing')} failing, {_counted(counts, 'unknown')} unknown.",
        f"Newly failing: {_shown(message.newly_failing_count)}. Incidents: {len(message.incidents)}.",
        "",
    ]
    for exchange, row in message.by_exchange.items():
        lines.append(
            f"- {exchange}: {_counted(row, 'total')} checked, {_counted(row, 'healthy')} healthy, "
            f"{_counted(row, 'degraded')} degraded, {_counted(row, 'failing')} failing, "
            f"{_counted(row, 'unknown')} unknown"
        )
    for item in message.incidents:
        lines.append(
            f"- INCIDENT {_shown(item.exchange)} {_shown(item.code)}: {_shown(item.count)} bindings "
            f"({_shown(item.likely_cause)})"
        )
    for exchange, count in (message.planned_ip_missing or {}).items():
        lines.append(f"- {_shown(exchange)}: {_shown(count)} keys lack a planned egress IP (not ready for the switch)")
    return lines


def _orphans_removed(message: OrphansRemoved) -> list[str]:
    prefix = _shown(message.secret_prefix)
    lines = [
        f"The daily orphan sweep checked {_shown(message.checked)} stored credentials (secrets named "
        f"{prefix}<binding id>) and scheduled the deletion of {_shown(message.count)} that no binding points to. "
        f"Secrets Manager removes them after {_shown(message.recovery_days)} days; until then "
        f"`aws secretsmanager restore-secret --secret-id {prefix}<binding id>` brings one back.",
        "",
        "Why: a bind whose binding write and compensating delete both failed leaves its secret behind (logged as "
        '"orphan secret left after a failed bind"). They held credentials no binding ever used.',
    ]
    lines += _id_list("Removed", message.binding_ids, message.count)
    if message.failed:
        lines += [
            "",
            f"{_shown(message.failed)} could not be checked or removed (a storage error): the next sweep tries "
            "them again; the sweeper's log says which call failed.",
            *_id_list("Not done", message.failed_binding_ids, message.failed),
        ]
    if message.complete is False:
        lines += ["", "The listing of the secrets failed part-way: the sweep stopped there (the function failed too)."]
    return [
        *lines,
        "",
        "What to do: nothing when these match the double-fault log lines. Many at once, or secrets of bindings that "
        "exist, would mean the sweeper read the wrong table: restore them and check its TABLE_NAME.",
        f"Swept: {_shown(message.swept_at)}",
    ]


def _id_list(title: str, binding_ids: tuple[str, ...], count: int | None) -> list[str]:
    if not binding_ids:
        return []
    rest = (count or 0) - len(binding_ids)
    more = [f"  and {rest} more"] if rest > 0 else []
    return ["", f"{title}:", *[f"- {binding_id}" for binding_id in binding_ids], *more]


def _binding_line(message: Unreachable | Undecryptable | PlannedIpMissing | TradingExpiring) -> str:
    return f"Binding: {_shown(message.binding_id)}  Tenant: {_shown(message.tenant)}"


def _exchange(message: StatusChanged | Unreachable | Undecryptable | PlannedIpMissing | TradingExpiring) -> str:
    """The exchange's own spelling of its name; its id when an older message carries none."""
    return message.exchange_name if message.exchange_name is not None else _shown(message.exchange)


def _shown(value: Any) -> str:
    return "?" if value is None else str(value)


def _counted(counts: dict[str, int], name: str) -> str:
    return _shown(counts.get(name))


def _percent(share: float | None) -> str:
    return "?" if share is None else f"{share * 100:.0f}%"
