"""Slack Block Kit messages for the alert topic's messages (contract section 3).

Pure: a typed message (keyhealth.notify.model, parsed from the topic's JSON body) and its SNS subject in,
an incoming-webhook payload out. No AWS, no HTTP. Only what the message says is rendered (an incident's
remedy included: it travels on the incident, so Slack and the email say the same), and every value from it
is escaped: an exchange's verbatim error text must not be able to ping `<!channel>` or post a link.

Slack's limits (https://api.slack.com/reference/block-kit/blocks): header text 150 characters, section
text 3000, a field 2000 and 10 fields per section, 10 context elements, 50 blocks per message. Long
lists (findings, newly failing keys, incidents) are cut with "and N more" rather than dropped silently.
A type this module does not know is rendered generically: a new message type is never lost.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from keyhealth.notify.model import (
    AlertFinding,
    AlertMessage,
    AuditSummary,
    Incident,
    NewlyFailing,
    OrphansRemoved,
    PlannedIpMissing,
    StatusChanged,
    TradingExpiring,
    Undecryptable,
    UnknownAlert,
    Unreachable,
    from_body,
)

HEADER_LIMIT = 150
SECTION_LIMIT = 3000
FIELD_LIMIT = 2000
FIELDS_PER_SECTION = 10
CONTEXT_ELEMENTS = 10
BLOCK_LIMIT = 50
FALLBACK_LIMIT = 3000  # the notification text; enough for a phone's preview and a screen reader
MAX_FINDINGS = 10  # finding sections per message; the rest are named in one "and N more" line
MAX_INCIDENTS = 5  # incident sections in an audit summary
MAX_LIST_LINES = 20  # lines of a list section (newly failing keys)

_STATUS_EMOJI = {
    "healthy": ":large_green_circle:",
    "degraded": ":large_yellow_circle:",
    "failing": ":red_circle:",
    "unknown": ":white_circle:",
}
_SEVERITY_EMOJI = {
    "error": ":red_circle:",
    "warning": ":warning:",
    "transient": ":hourglass_flowing_sand:",
    "info": ":information_source:",
}
_SEVERITY_ORDER = {"error": 0, "warning": 1, "transient": 2, "info": 3}
_WHO_ACTS = {"user": "the key's owner", "operator": "ops"}  # the platform's operators

Names = Mapping[str, str]  # exchange id -> the exchange's own spelling of its name


def blocks_for(
    body: Mapping[str, Any], subject: str | None = None, *, exchange_names: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The webhook payload `{"text": fallback, "blocks": [...]}` for one topic message's JSON body."""
    return render(from_body(body), subject, exchange_names=exchange_names)


def render(
    message: AlertMessage, subject: str | None = None, *, exchange_names: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The webhook payload `{"text": fallback, "blocks": [...]}` for one typed message.

    `exchange_names` (id -> the exchange's own spelling) names exchanges a message carries no
    name for (a summary's rows, an older message); the message's own names win.
    """
    names = {**(exchange_names or {}), **_carried_names(message)}
    try:
        title, blocks = _layout(message, names)
    except (AttributeError, KeyError, TypeError, ValueError) as problem:
        # A message this module cannot lay out still reaches Slack, as it came.
        title, blocks = _generic(UnknownAlert(message.to_body(), type(problem).__name__), names)
    fallback = subject or title
    return {"text": _clip(_escape(fallback), FALLBACK_LIMIT), "blocks": _within_block_limit(blocks)}


def _layout(message: AlertMessage, names: Names) -> tuple[str, list[dict[str, Any]]]:
    match message:
        case StatusChanged():
            return _status_changed(message, names)
        case Undecryptable():
            return _undecryptable(message, names)
        case Unreachable():
            return _unreachable(message, names)
        case PlannedIpMissing():
            return _planned_ip_missing(message, names)
        case TradingExpiring():
            return _expiring(message, names)
        case Incident():
            return _incident(message, names)
        case AuditSummary():
            return _audit_summary(message, names)
        case OrphansRemoved():
            return _orphans_removed(message)
        case UnknownAlert():
            return _generic(message, names)


def _carried_names(message: AlertMessage) -> dict[str, str]:
    if isinstance(message, AuditSummary):
        return dict(message.exchange_names or {})
    if isinstance(message, UnknownAlert):
        carried = message.body.get("exchange_names")
        if isinstance(carried, dict):
            return {k: v for k, v in carried.items() if isinstance(k, str) and isinstance(v, str)}
    return {}


# --- one renderer per message type: (fallback title, blocks) ---------------------------------------------


def _status_changed(message: StatusChanged, names: Names) -> tuple[str, list[dict[str, Any]]]:
    exchange = _exchange_name(message.exchange, message.exchange_name, names)
    previous, status = _or(message.previous_status, "?"), _or(message.status, "?")
    key, user = message.api_key_masked, message.user_id
    title = f"{exchange} key {key} of user {user}: {previous} → {status}"
    happened = {
        "failing": "is now *failing*: it cannot do what the platform needs.",
        "degraded": "is now *degraded*: usable, with warnings.",
        "healthy": "is *healthy* again.",
        "unknown": "could not be checked: the exchange did not answer.",
    }.get(status, f"went from *{_escape(previous)}* to *{_escape(status)}*.")
    findings = _by_severity(message.findings)
    todo = _what_to_do(findings) or (
        "*What to do:* nothing, the key passes every check."
        if status == "healthy"
        else "*What to do:* see the findings below."
    )
    blocks = [
        _header(f"{_STATUS_EMOJI.get(status, ':bell:')} {title}"),
        _section(f"The {_escape(exchange)} key {_code(key)} of user {_code(user)} {happened}\n\n{todo}"),
        *_fields(
            [
                ("Exchange", _escape(exchange)),
                ("Binding", _code(message.binding_id)),
                ("User", _code(user)),
                ("Status change", f"{_escape(previous)} → *{_escape(status)}*"),
                ("Key", _code(key)),
                ("Tenant", _code(message.tenant)),
            ]
        ),
        *_finding_blocks(findings),
        _context([f"Checked {_escape(message.checked_at or 'at an unknown time')}", "keyhealth"]),
    ]
    return title, blocks


def _unreachable(message: Unreachable, names: Names) -> tuple[str, list[dict[str, Any]]]:
    exchange = _exchange_name(message.exchange, message.exchange_name, names)
    key, user, streak = message.api_key_masked, message.user_id, _or(message.unknown_streak, "several")
    title = f"{exchange} key {key} of user {user}: unreachable for {streak} audits"
    findings = _by_severity(message.findings)
    todo = _what_to_do(findings) or (
        "*What to do (ops):* check the exchange's status and whether it refuses our egress IP."
    )
    blocks = [
        _header(f":grey_question: {title}"),
        _section(
            f"keyhealth could not ask {_escape(exchange)} about the key {_code(key)} of user {_code(user)} "
            f"in {_escape(streak)} audits in a row, so its health is unknown.\n\n{todo}"
        ),
        *_fields(
            [
                ("Exchange", _escape(exchange)),
                ("Binding", _code(message.binding_id)),
                ("User", _code(user)),
                ("Status", f"unknown for {_escape(streak)} audits"),
                ("Key", _code(key)),
                ("Tenant", _code(message.tenant)),
            ]
        ),
        *_finding_blocks(findings),
        _context([f"Checked {_escape(message.checked_at or 'at an unknown time')}", "keyhealth"]),
    ]
    return title, blocks


def _undecryptable(message: Undecryptable, names: Names) -> tuple[str, list[dict[str, Any]]]:
    exchange = _exchange_name(message.exchange, message.exchange_name, names)
    key, user = message.api_key_masked, message.user_id
    title = f"{exchange} key {key} of user {user}: stored credentials cannot be decrypted"
    findings = _by_severity(message.findings)
    todo = _what_to_do(findings) or "*What to do (ops):* check the credentials' KMS key and its key policy."
    blocks = [
        _header(f":lock: {title}"),
        _section(
            f"keyhealth could not decrypt the credentials it stores for the {_escape(exchange)} key {_code(key)} "
            f"of user {_code(user)}, so it did not check the key; its last known status is kept.\n\n{todo}"
        ),
        *_fields(
            [
                ("Exchange", _escape(exchange)),
                ("Binding", _code(message.binding_id)),
                ("User", _code(user)),
                ("Status", f"{_escape(message.status or 'unknown')} (last known)"),
                ("Key", _code(key)),
                ("Tenant", _code(message.tenant)),
            ]
        ),
        *_finding_blocks(findings),
        _context([f"Checked {_escape(message.checked_at or 'at an unknown time')}", "keyhealth"]),
    ]
    return title, blocks


def _planned_ip_missing(message: PlannedIpMissing, names: Names) -> tuple[str, list[dict[str, Any]]]:
    exchange = _exchange_name(message.exchange, message.exchange_name, names)
    key, user = message.api_key_masked, message.user_id
    title = f"{exchange} key {key} of user {user}: not ready for a planned egress IP"
    findings = _by_severity(message.findings)
    blocks = [
        _header(f":calendar: {title}"),
        _section(
            f"The {_escape(exchange)} key {_code(key)} of user {_code(user)} does not whitelist an egress IP the "
            "platform is about to use: it works today and breaks for those requests then."
        ),
        *_fields(
            [
                ("Exchange", _escape(exchange)),
                ("Binding", _code(message.binding_id)),
                ("User", _code(user)),
                ("Status", _escape(message.status or "unknown")),
                ("Key", _code(key)),
                ("Tenant", _code(message.tenant)),
            ]
        ),
        *_finding_blocks(findings),
        _context([f"Checked {_escape(message.checked_at or 'at an unknown time')}", "keyhealth"]),
    ]
    return title, blocks


def _expiring(message: TradingExpiring, names: Names) -> tuple[str, list[dict[str, Any]]]:
    exchange = _exchange_name(message.exchange, message.exchange_name, names)
    key, user, days = message.api_key_masked, message.user_id, message.days_left
    in_days = "soon" if days is None else f"in {days} day{'' if days == 1 else 's'}"
    title = f"{exchange} key {key} of user {user}: trading rights expire {in_days}"
    expires = message.expires_at or "soon"
    blocks = [
        _header(f":hourglass_flowing_sand: {title}"),
        _section(
            f"The {_escape(exchange)} key {_code(key)} of user {_code(user)} loses its trading permission "
            f"on {_escape(expires)} ({_escape(in_days)}). After that it cannot trade and turns *failing* "
            f"(`trading_permission_expired`).\n\n*What to do:* the key's owner renews the trading permission "
            f"in {_escape(exchange)}'s API management before then; restricting the key to the platform's "
            f"egress IPs keeps it from lapsing again."
        ),
        *_fields(
            [
                ("Exchange", _escape(exchange)),
                ("Binding", _code(message.binding_id)),
                ("User", _code(user)),
                ("Expires", _escape(expires)),
                ("Key", _code(key)),
                ("Tenant", _code(message.tenant)),
            ]
        ),
        _context(["keyhealth"]),
    ]
    return title, blocks


def _incident(message: Incident, names: Names) -> tuple[str, list[dict[str, Any]]]:
    exchange = _exchange_name(message.exchange, message.exchange_name, names)
    if message.egress_ip is not None:
        return _egress_incident(message, exchange)
    code, count, total = _or(message.code, "?"), _or(message.count, "?"), _or(message.total, "?")
    title = f"Incident: {count} of {total} {exchange} keys failing with {code}"
    blocks = [
        _header(f":rotating_light: {title}"),
        _section(_incident_text(message, exchange)),
        *_fields(
            [
                ("Exchange", _escape(exchange)),
                ("Code", _code(code)),
                ("Affected", f"{_escape(count)} of {_escape(total)} keys{_share(message.share)}"),
                ("Audit run", _code(message.run_id)),
            ]
        ),
        _context([f"Detected {_escape(message.detected_at or 'at an unknown time')}", "keyhealth"]),
    ]
    return title, blocks


def _egress_incident(message: Incident, exchange: str) -> tuple[str, list[dict[str, Any]]]:
    ip, code = _or(message.egress_ip, "?"), _or(message.code, "?")
    if message.recovered_at:
        title = f"{exchange} answers egress IP {ip} again"
        text = f"Down since {_escape(_or(message.detected_at, '?'))}, recovered {_escape(message.recovered_at)}."
        emoji = ":white_check_mark:"
    else:
        title = f"Incident: {exchange} refuses egress IP {ip} ({code})"
        text = (
            f"The egress canary sees {_escape(exchange)} refusing or not answering {_code(ip)}: the audit's checks "
            "from this IP come back unknown until it answers again; the other IPs go on."
            + (f"\n*Likely cause:* {_escape(message.likely_cause)}" if message.likely_cause else "")
            + f"\n*What to do:* {_escape(message.remedy)}"
        )
        emoji = ":rotating_light:"
    blocks = [
        _header(f"{emoji} {title}"),
        _section(text),
        *_fields([("Exchange", _escape(exchange)), ("Egress IP", _code(ip)), ("Code", _code(code))]),
        _context([f"Detected {_escape(message.detected_at or 'at an unknown time')}", "keyhealth egress canary"]),
    ]
    return title, blocks


def _incident_text(incident: Incident, exchange: str) -> str:
    lines = [
        f"{_escape(_or(incident.count, '?'))} of {_escape(_or(incident.total, '?'))} {_escape(exchange)} keys"
        f"{_share(incident.share)} failed with {_code(_or(incident.code, '?'))} in one audit: one cause on the "
        "platform's or the exchange's side, not that many users' mistakes."
    ]
    if incident.likely_cause:
        lines.append(f"*Likely cause:* {_escape(incident.likely_cause)}")
    lines.append(f"*What to do:* {_escape(incident.remedy)}")
    return "\n".join(lines)


def _audit_summary(message: AuditSummary, names: Names) -> tuple[str, list[dict[str, Any]]]:
    counts = message.counts
    total = counts.get("total", "?")
    title = f"keyhealth audit: {counts.get('failing', 0)} failing, {counts.get('degraded', 0)} degraded of {total} keys"
    incidents, newly_failing = message.incidents, message.newly_failing
    if incidents:
        emoji, todo = (
            ":rotating_light:",
            "Look at the incidents first: they are the platform's to fix, and they explain many of the failures.",
        )
    elif newly_failing:
        emoji, todo = ":red_circle:", "Tell the owners of the newly failing keys; each key's own alert says how."
    else:
        emoji, todo = ":large_green_circle:", "Nothing: no key started failing."
    run = (
        f"Audit run {_code(message.run_id)} checked {_escape(total)} keys"
        f"{_optional(' in {}s', message.duration_seconds)}"
        f"{_optional(' ({} checks/s)', message.checks_per_second)}: "
        f"{_counts(counts)}."
    )
    blocks = [
        _header(f"{emoji} {title}"),
        _section(f"{run}\n\n*What to do:* {todo}"),
        *_fields(
            [
                (_escape(_exchange_name(name, None, names)), _counts(row))
                for name, row in sorted(message.by_exchange.items())
            ]
        ),
    ]
    for incident in incidents[:MAX_INCIDENTS]:
        exchange = _exchange_name(incident.exchange, incident.exchange_name, names)
        blocks.append(
            _section(f":rotating_light: *Incident on {_escape(exchange)}*\n{_incident_text(incident, exchange)}")
        )
    if len(incidents) > MAX_INCIDENTS:
        blocks.append(_context([f"and {len(incidents) - MAX_INCIDENTS} more incidents"]))
    if newly_failing:
        lines = [_newly_failing_line(n, names) for n in newly_failing]
        blocks.append(_list_section(f"*Newly failing ({len(newly_failing)})*", lines, "keys"))
    blocks.append(
        _context(
            [
                f"Started {_escape(message.started_at or '?')}",
                f"finished {_escape(message.finished_at or '?')}",
                "keyhealth",
            ]
        )
    )
    return title, blocks


def _newly_failing_line(binding: NewlyFailing, names: Names) -> str:
    codes = ", ".join(_code(c) for c in binding.codes) or "no code"
    return (
        f"{_escape(_exchange_name(binding.exchange, None, names))} {_code(binding.binding_id)} of user "
        f"{_code(binding.user_id)}: {codes}"
    )


def _orphans_removed(message: OrphansRemoved) -> tuple[str, list[dict[str, Any]]]:
    count, failed = _or(message.count, "?"), message.failed or 0
    title = f"Orphan sweep: {count} stored credentials no binding points to scheduled for deletion"
    if failed:
        title += f", {failed} not done"
    prefix = _code(f"{message.secret_prefix or '?'}<binding id>")
    days = _or(message.recovery_days, "?")
    text = (
        f"The daily orphan sweep scheduled the deletion of {_escape(count)} secrets ({prefix}) that no binding "
        f"points to: the credentials of binds whose binding write and compensating delete both failed. Secrets "
        f"Manager removes them after {_escape(days)} days; `restore-secret` brings one back until then."
    )
    if failed:
        text += f"\n{_escape(failed)} could not be checked or removed (a storage error): the next sweep tries again."
    if message.complete is False:
        text += "\nThe listing of the secrets failed part-way: the sweep stopped there."
    text += (
        "\n\n*What to do:* nothing when these match the `orphan secret left after a failed bind` log lines. "
        "Many at once, or secrets of bindings that exist, would mean the sweeper read the wrong table: restore "
        "them and check its `TABLE_NAME`."
    )
    blocks = [
        _header(f":broom: {title}"),
        _section(text),
        *_fields(
            [
                ("Scheduled for deletion", _escape(count)),
                ("Not done", _escape(failed)),
                ("Checked", _escape(_or(message.checked, "?"))),
                ("Recovery window", f"{_escape(days)} days"),
            ]
        ),
    ]
    for heading, ids, total in (
        ("Scheduled for deletion", message.binding_ids, message.count),
        ("Not done", message.failed_binding_ids, message.failed),
    ):
        if ids:
            blocks.append(
                _list_section(f"*{heading} ({_escape(_or(total, len(ids)))})*", [_code(i) for i in ids], "ids")
            )
            if (total or 0) > len(ids):  # the alert lists the first ones only
                blocks.append(_context([f"and {(total or 0) - len(ids)} more, named in the sweeper's log"]))
    blocks.append(_context([f"Swept {_escape(message.swept_at or 'at an unknown time')}", "keyhealth"]))
    return title, blocks


def _generic(message: UnknownAlert, names: Names) -> tuple[str, list[dict[str, Any]]]:
    body = message.body
    kind = message.type
    title = f"keyhealth: {kind}"
    exchange = body.get("exchange")
    own_name = body.get("exchange_name")
    known = [
        (
            "Exchange",
            _escape(
                _exchange_name(exchange, own_name if isinstance(own_name, str) else None, names)
                if isinstance(exchange, str)
                else exchange
            )
            if exchange
            else None,
        ),
        ("Binding", _code(body["binding_id"]) if body.get("binding_id") else None),
        ("User", _code(body["user_id"]) if body.get("user_id") else None),
        ("Status", _escape(body["status"]) if body.get("status") else None),
    ]
    details = json.dumps(body, indent=1, sort_keys=True, ensure_ascii=False, default=str)
    blocks = [
        _header(f":bell: {title}"),
        _section(
            f"A keyhealth alert of type {_code(kind)}. This notifier has no layout for it yet, "
            "so it shows the message as it came.\n\n*What to do:* read the details below."
        ),
        *_fields([(label, value) for label, value in known if value]),
        _section(_code_block(details)),
        _context([f"type {_escape(kind)}", "keyhealth"]),
    ]
    return title, blocks


# --- findings ----------------------------------------------------------------------------------------------


def _by_severity(findings: Sequence[AlertFinding]) -> list[AlertFinding]:
    return sorted(findings, key=lambda f: _SEVERITY_ORDER.get(str(f.severity), len(_SEVERITY_ORDER)))


def _what_to_do(findings: Sequence[AlertFinding]) -> str | None:
    """The most severe actionable finding's remedy, saying who acts."""
    actionable = [f for f in findings if f.remedy and f.severity != "info"]
    if not actionable:
        return None
    first = actionable[0]
    who = _WHO_ACTS.get(str(first.audience))
    text = f"*What to do{f' ({who})' if who else ''}:* {_escape(first.remedy)}"
    others = len(actionable) - 1
    if others:
        text += f"\n{_plural(others, 'other finding')} below {'has its' if others == 1 else 'have their'} own fix."
    return text


def _finding_text(finding: AlertFinding) -> str:
    severity = _or(finding.severity, "?")
    who = _WHO_ACTS.get(str(finding.audience))
    lines = [
        f"{_SEVERITY_EMOJI.get(severity, ':grey_question:')} {_code(finding.code)} "
        f"({_escape(severity)}{f', for {who}' if who else ''})"
    ]
    if finding.message:
        lines.append(_escape(finding.message))
    if finding.remedy:
        lines.append(f"*Fix:* {_escape(finding.remedy)}")
    if finding.exchange_code is not None or finding.exchange_message:
        said = " ".join(
            part
            for part in (
                _code(finding.exchange_code) if finding.exchange_code is not None else "",
                _escape(finding.exchange_message or ""),
            )
            if part
        )
        lines.append(f"_The exchange said:_ {said}")
    return "\n".join(lines)


def _finding_blocks(findings: Sequence[AlertFinding]) -> list[dict[str, Any]]:
    if not findings:
        return []
    blocks: list[dict[str, Any]] = [{"type": "divider"}]
    blocks += [_section(_finding_text(f)) for f in findings[:MAX_FINDINGS]]
    rest = findings[MAX_FINDINGS:]
    if rest:
        codes = ", ".join(_escape(_or(f.code, "?")) for f in rest)
        blocks.append(_context([f"and {len(rest)} more findings: {codes}"]))
    return blocks


# --- Block Kit pieces, each within Slack's limits ------------------------------------------------------------


def _header(text: str) -> dict[str, Any]:
    return {"type": "header", "text": {"type": "plain_text", "text": _clip(text, HEADER_LIMIT), "emoji": True}}


def _section(mrkdwn: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": _clip(mrkdwn or " ", SECTION_LIMIT)}}


def _fields(pairs: Iterable[tuple[str, str]]) -> list[dict[str, Any]]:
    """Sections of up to 10 fields each (none when there is nothing to show)."""
    fields = [{"type": "mrkdwn", "text": _clip(f"*{label}*\n{value}", FIELD_LIMIT)} for label, value in pairs]
    return [
        {"type": "section", "fields": fields[i : i + FIELDS_PER_SECTION]}
        for i in range(0, len(fields), FIELDS_PER_SECTION)
    ]


def _context(texts: Sequence[str]) -> dict[str, Any]:
    elements = [{"type": "mrkdwn", "text": _clip(t, SECTION_LIMIT)} for t in texts if t][:CONTEXT_ELEMENTS]
    return {"type": "context", "elements": elements or [{"type": "mrkdwn", "text": "keyhealth"}]}


def _list_section(title: str, lines: Sequence[str], noun: str) -> dict[str, Any]:
    """A bulleted list cut at MAX_LIST_LINES lines or the section limit, whichever comes first."""
    text = title
    shown = 0
    for line in lines[:MAX_LIST_LINES]:
        more_room = len(f"\n…and {len(lines)} more {noun}")
        if len(text) + len(line) + 3 + more_room > SECTION_LIMIT:
            break
        text += f"\n• {line}"
        shown += 1
    if shown < len(lines):
        text += f"\n…and {len(lines) - shown} more {noun}"
    return _section(text)


def _within_block_limit(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if len(blocks) <= BLOCK_LIMIT:
        return blocks
    kept = blocks[: BLOCK_LIMIT - 1]
    return [*kept, _context([f"and {len(blocks) - len(kept)} more blocks"])]


# --- text ----------------------------------------------------------------------------------------------------


def _escape(value: Any) -> str:
    """mrkdwn control characters (https://api.slack.com/reference/surfaces/formatting#escaping)."""
    return str(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _code(value: Any) -> str:
    if value is None or value == "":
        return "n/a"
    text = _escape(value).replace("`", "'")  # a backtick would end the code span early
    return f"`{text}`"


def _code_block(text: str) -> str:
    inner = _clip(_escape(text).replace("```", "'''"), SECTION_LIMIT - 6)
    return f"```{inner}```"


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _exchange_name(exchange: str | None, own: str | None, names: Names) -> str:
    """The exchange's own spelling of its name, as the message carries it (`own`, or the summary's
    names) or the notifier knows it; the bare id when an older message lacks it."""
    if own is not None:
        return own
    if exchange is not None and exchange in names:
        return names[exchange]
    return str(exchange or "unknown exchange")


def _or(value: Any, default: Any) -> Any:
    return default if value is None else value


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _share(value: Any) -> str:
    return f" ({value:.0%})" if isinstance(value, int | float) and not isinstance(value, bool) else ""


def _optional(template: str, value: Any) -> str:
    return "" if value is None else template.format(_escape(value))


def _counts(counts: Mapping[str, int]) -> str:
    order = ("healthy", "degraded", "failing", "unknown")
    return ", ".join(f"{_escape(counts.get(name, 0))} {name}" for name in order)
