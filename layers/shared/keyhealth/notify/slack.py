"""Slack Block Kit messages for the alert topic's messages (contract section 3).

Pure: a message's JSON body (and its SNS subject) in, an incoming-webhook payload out. No AWS, no HTTP.
Only what the body says is rendered, and every value from it is escaped: an exchange's verbatim
error text must not be able to ping `<!channel>` or post a link.

Slack's limits (https://api.slack.com/reference/block-kit/blocks): header text 150 characters, section
text 3000, a field 2000 and 10 fields per section, 10 context elements, 50 blocks per message. Long
lists (findings, newly failing keys, incidents) are cut with "and N more" rather than dropped silently.
A type this module does not know is rendered generically: a new message type is never lost.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

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

# What ops does about an incident: many keys of one exchange failing the same way at once is
# the platform's problem (egress IP, exchange outage), not that many users' mistakes.
_INCIDENT_REMEDY = {
    "ip_not_whitelisted": "Check that the egress IPs (GET /egress-ips, the NAT gateways' Elastic IPs) have not "
    "changed. If they did, restore them; only if that is impossible, ask users to whitelist the new ones.",
    "key_rejected": "Check that the egress IPs have not changed (the exchange rejects keys whose whitelist "
    "misses our IP this way), then the exchange's status page and API announcements.",
    "egress_blocked": "The exchange refuses our egress IP (region block or ban): check where the NAT "
    "gateways' Elastic IPs are located and whether the exchange announced a restriction.",
    "exchange_unavailable": "Check the exchange's status page; the next audit checks these keys again.",
    "timeout": "Check the exchange's status page and the NAT gateways; the next audit checks these keys again.",
    "rate_limited": "The exchange throttles our egress IP: lower AUDIT_BUDGET_SHARE or spread the audit, "
    "and check whether trading traffic on the same IP grew.",
    "clock_skew": "Compare the exchange's server time with ours; the next audit checks these keys again.",
}
_DEFAULT_INCIDENT_REMEDY = "Check the exchange's status page and API announcements for a change affecting keys."


def blocks_for(
    body: dict[str, Any], subject: str | None = None, *, exchange_names: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The webhook payload `{"text": fallback, "blocks": [...]}` for one topic message.

    `exchange_names` (id -> the exchange's own spelling) names exchanges a message carries no
    name for (a summary's rows, an older message); the message's own names win.
    """
    carried = body.get("exchange_names")
    body = {**body, "exchange_names": {**(exchange_names or {}), **(carried if isinstance(carried, dict) else {})}}
    render = _RENDERERS.get(str(body.get("type")), _generic)
    try:
        title, blocks = render(body)
    except (AttributeError, KeyError, TypeError, ValueError):
        # A known type with an unexpected shape still reaches Slack, as it came.
        title, blocks = _generic(body)
    fallback = subject or title
    return {"text": _clip(_escape(fallback), FALLBACK_LIMIT), "blocks": _within_block_limit(blocks)}


# --- one renderer per message type: (fallback title, blocks) ---------------------------------------------


def _status_changed(body: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    exchange = _exchange_name(body.get("exchange"), body)
    previous, status = str(body.get("previous_status", "?")), str(body.get("status", "?"))
    key, user = body.get("api_key_masked"), body.get("user_id")
    title = f"{exchange} key {key} of user {user}: {previous} → {status}"
    happened = {
        "failing": "is now *failing*: it cannot do what the platform needs.",
        "degraded": "is now *degraded*: usable, with warnings.",
        "healthy": "is *healthy* again.",
        "unknown": "could not be checked: the exchange did not answer.",
    }.get(status, f"went from *{_escape(previous)}* to *{_escape(status)}*.")
    findings = _findings(body.get("findings"))
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
                ("Binding", _code(body.get("binding_id"))),
                ("User", _code(user)),
                ("Status change", f"{_escape(previous)} → *{_escape(status)}*"),
                ("Key", _code(key)),
                ("Tenant", _code(body.get("tenant"))),
            ]
        ),
        *_finding_blocks(findings),
        _context([f"Checked {_escape(body.get('checked_at') or 'at an unknown time')}", "keyhealth"]),
    ]
    return title, blocks


def _unreachable(body: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    exchange = _exchange_name(body.get("exchange"), body)
    key, user, streak = body.get("api_key_masked"), body.get("user_id"), body.get("unknown_streak", "several")
    title = f"{exchange} key {key} of user {user}: unreachable for {streak} audits"
    findings = _findings(body.get("findings"))
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
                ("Binding", _code(body.get("binding_id"))),
                ("User", _code(user)),
                ("Status", f"unknown for {_escape(streak)} audits"),
                ("Key", _code(key)),
                ("Tenant", _code(body.get("tenant"))),
            ]
        ),
        *_finding_blocks(findings),
        _context([f"Checked {_escape(body.get('checked_at') or 'at an unknown time')}", "keyhealth"]),
    ]
    return title, blocks


def _expiring(body: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    exchange = _exchange_name(body.get("exchange"), body)
    key, user, days = body.get("api_key_masked"), body.get("user_id"), body.get("days_left")
    in_days = "soon" if days is None else f"in {days} day{'' if days == 1 else 's'}"
    title = f"{exchange} key {key} of user {user}: trading rights expire {in_days}"
    expires = body.get("expires_at") or "soon"
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
                ("Binding", _code(body.get("binding_id"))),
                ("User", _code(user)),
                ("Expires", _escape(expires)),
                ("Key", _code(key)),
                ("Tenant", _code(body.get("tenant"))),
            ]
        ),
        _context(["keyhealth"]),
    ]
    return title, blocks


def _incident(body: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    exchange = _exchange_name(body.get("exchange"), body)
    code, count, total = str(body.get("code", "?")), body.get("count", "?"), body.get("total", "?")
    title = f"Incident: {count} of {total} {exchange} keys failing with {code}"
    blocks = [
        _header(f":rotating_light: {title}"),
        _section(_incident_text(body, exchange)),
        *_fields(
            [
                ("Exchange", _escape(exchange)),
                ("Code", _code(code)),
                ("Affected", f"{_escape(count)} of {_escape(total)} keys{_share(body.get('share'))}"),
                ("Audit run", _code(body.get("run_id"))),
            ]
        ),
        _context([f"Detected {_escape(body.get('detected_at') or 'at an unknown time')}", "keyhealth"]),
    ]
    return title, blocks


def _incident_text(incident: dict[str, Any], exchange: str) -> str:
    code = str(incident.get("code", "?"))
    lines = [
        f"{_escape(incident.get('count', '?'))} of {_escape(incident.get('total', '?'))} {_escape(exchange)} keys"
        f"{_share(incident.get('share'))} failed with {_code(code)} in one audit: one cause on the platform's "
        "or the exchange's side, not that many users' mistakes."
    ]
    if incident.get("likely_cause"):
        lines.append(f"*Likely cause:* {_escape(incident['likely_cause'])}")
    lines.append(f"*What to do:* {_escape(_INCIDENT_REMEDY.get(code, _DEFAULT_INCIDENT_REMEDY))}")
    return "\n".join(lines)


def _audit_summary(body: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    counts = body.get("counts") or {}
    total = counts.get("total", "?")
    title = f"keyhealth audit: {counts.get('failing', 0)} failing, {counts.get('degraded', 0)} degraded of {total} keys"
    incidents = [i for i in body.get("incidents") or [] if isinstance(i, dict)]
    newly_failing = [n for n in body.get("newly_failing") or [] if isinstance(n, dict)]
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
        f"Audit run {_code(body.get('run_id'))} checked {_escape(total)} keys"
        f"{_optional(' in {}s', body.get('duration_seconds'))}"
        f"{_optional(' ({} checks/s)', body.get('checks_per_second'))}: "
        f"{_counts(counts)}."
    )
    blocks = [
        _header(f"{emoji} {title}"),
        _section(f"{run}\n\n*What to do:* {todo}"),
    ]
    by_exchange = body.get("by_exchange") or {}
    if isinstance(by_exchange, dict):
        blocks += _fields(
            [(_escape(_exchange_name(name, body)), _counts(c)) for name, c in sorted(by_exchange.items())]
        )
    for incident in incidents[:MAX_INCIDENTS]:
        exchange = _exchange_name(incident.get("exchange"), {**body, **incident})
        blocks.append(
            _section(f":rotating_light: *Incident on {_escape(exchange)}*\n{_incident_text(incident, exchange)}")
        )
    if len(incidents) > MAX_INCIDENTS:
        blocks.append(_context([f"and {len(incidents) - MAX_INCIDENTS} more incidents"]))
    if newly_failing:
        lines = [
            f"{_escape(_exchange_name(n.get('exchange'), body))} {_code(n.get('binding_id'))} of user "
            f"{_code(n.get('user_id'))}: {', '.join(_code(c) for c in n.get('codes') or []) or 'no code'}"
            for n in newly_failing
        ]
        blocks.append(_list_section(f"*Newly failing ({len(newly_failing)})*", lines, "keys"))
    blocks.append(
        _context(
            [
                f"Started {_escape(body.get('started_at') or '?')}",
                f"finished {_escape(body.get('finished_at') or '?')}",
                "keyhealth",
            ]
        )
    )
    return title, blocks


def _generic(body: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    kind = str(body.get("type") or "alert")
    title = f"keyhealth: {kind}"
    known = [
        ("Exchange", _escape(_exchange_name(body["exchange"], body)) if body.get("exchange") else None),
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


_RENDERERS: dict[str, Callable[[dict[str, Any]], tuple[str, list[dict[str, Any]]]]] = {
    "binding_status_changed": _status_changed,
    "binding_unreachable": _unreachable,
    "trading_permission_expiring": _expiring,
    "incident": _incident,
    "audit_summary": _audit_summary,
}


# --- findings ----------------------------------------------------------------------------------------------


def _findings(raw: Any) -> list[dict[str, Any]]:
    findings = [f for f in raw or [] if isinstance(f, dict)]
    return sorted(findings, key=lambda f: _SEVERITY_ORDER.get(str(f.get("severity")), len(_SEVERITY_ORDER)))


def _what_to_do(findings: Sequence[dict[str, Any]]) -> str | None:
    """The most severe actionable finding's remedy, saying who acts."""
    actionable = [f for f in findings if f.get("remedy") and f.get("severity") != "info"]
    if not actionable:
        return None
    first = actionable[0]
    who = _WHO_ACTS.get(str(first.get("audience")))
    text = f"*What to do{f' ({who})' if who else ''}:* {_escape(first['remedy'])}"
    others = len(actionable) - 1
    if others:
        text += f"\n{_plural(others, 'other finding')} below {'has its' if others == 1 else 'have their'} own fix."
    return text


def _finding_text(finding: dict[str, Any]) -> str:
    severity = str(finding.get("severity", "?"))
    who = _WHO_ACTS.get(str(finding.get("audience")))
    lines = [
        f"{_SEVERITY_EMOJI.get(severity, ':grey_question:')} {_code(finding.get('code'))} "
        f"({_escape(severity)}{f', for {who}' if who else ''})"
    ]
    if finding.get("message"):
        lines.append(_escape(finding["message"]))
    if finding.get("remedy"):
        lines.append(f"*Fix:* {_escape(finding['remedy'])}")
    if finding.get("exchange_code") is not None or finding.get("exchange_message"):
        said = " ".join(
            part
            for part in (
                _code(finding.get("exchange_code")) if finding.get("exchange_code") is not None else "",
                _escape(finding.get("exchange_message") or ""),
            )
            if part
        )
        lines.append(f"_The exchange said:_ {said}")
    return "\n".join(lines)


def _finding_blocks(findings: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    if not findings:
        return []
    blocks: list[dict[str, Any]] = [{"type": "divider"}]
    blocks += [_section(_finding_text(f)) for f in findings[:MAX_FINDINGS]]
    rest = findings[MAX_FINDINGS:]
    if rest:
        codes = ", ".join(_escape(f.get("code", "?")) for f in rest)
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


def _exchange_name(value: Any, body: dict[str, Any]) -> str:
    """The exchange's own spelling of its name, as the alert carries it (`exchange_name`, or the
    summary's `exchange_names`); the bare id when an older message lacks it."""
    if body.get("exchange") == value and isinstance(body.get("exchange_name"), str):
        return str(body["exchange_name"])
    names = body.get("exchange_names")
    if isinstance(names, dict) and isinstance(names.get(value), str):
        return str(names[value])
    return str(value or "unknown exchange")


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _share(value: Any) -> str:
    return f" ({value:.0%})" if isinstance(value, int | float) and not isinstance(value, bool) else ""


def _optional(template: str, value: Any) -> str:
    return "" if value is None else template.format(_escape(value))


def _counts(counts: Any) -> str:
    if not isinstance(counts, dict):
        return _escape(counts)
    order = ("healthy", "degraded", "failing", "unknown")
    return ", ".join(f"{_escape(counts.get(name, 0))} {name}" for name in order)
