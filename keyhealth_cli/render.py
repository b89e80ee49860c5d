"""What the commands print: tables, bindings and reports, API errors, audit summaries, the progress bar."""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from keyhealth_cli.api import Answer


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(c) for c in header], *[["-" if c is None else str(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    out = [line.format(*cells[0]), line.format(*("-" * w for w in widths))]
    out += [line.format(*r) for r in cells[1:]]
    return "\n".join(x.rstrip() for x in out)


def describe_report(report: dict[str, Any] | None) -> list[str]:
    if not report:
        return []
    perms = report.get("permissions") or {}
    shown = ", ".join(f"{k}={'yes' if v else 'no' if v is not None else '?'}" for k, v in perms.items())
    out = [
        f"status       {report.get('status')}   (checked {report.get('checked_at')} from {report.get('egress_ip')})",
        f"permissions  {shown or '-'}",
        f"ip           restricted={report.get('ip_restricted')}  whitelist={report.get('ip_whitelist')}",
    ]
    if report.get("trading_expires_at"):
        out.append(f"trading      expires {report['trading_expires_at']}")
    findings = report.get("findings") or []
    out.append("findings     " + ("none" if not findings else ""))
    for f in findings:
        out.append(f"  - {f.get('code')} ({f.get('severity')}, {f.get('audience')})")
        out.append(textwrap.fill(f.get("message") or "", 110, initial_indent="      ", subsequent_indent="      "))
        if f.get("remedy"):
            out.append(
                textwrap.fill("Fix: " + f["remedy"], 110, initial_indent="      ", subsequent_indent="           ")
            )
        if f.get("exchange_code") is not None:
            out.append(f"      exchange said: {f.get('exchange_code')} {f.get('exchange_message') or ''}".rstrip())
    return out


def describe_binding(binding: dict[str, Any]) -> list[str]:
    return [
        f"binding      {binding.get('binding_id')}  ({binding.get('status')})",
        f"user         {binding.get('user_id')}   exchange {binding.get('exchange')}   label {binding.get('label')}",
        f"key          {binding.get('api_key_masked')} ({binding.get('key_type')})   "
        f"scopes {','.join(binding.get('scopes') or [])}",
        f"updated      {binding.get('updated_at')}   last checked {binding.get('last_checked_at')}",
    ]


def error_line(answer: Answer) -> str:
    body = answer.body
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        extra = f" (binding {error['binding_id']})" if error.get("binding_id") else ""
        field = f" [{error['field']}]" if error.get("field") else ""
        return f"{answer.status} {error.get('code')}: {error.get('message')}{field}{extra}"
    if isinstance(body, dict) and body.get("message"):
        return f"{answer.status} {body['message']}"
    return f"{answer.status} {str(body)[:200]}"


def render_summary(summary: dict[str, Any]) -> str:
    counts = summary["counts"]
    out = [
        f"audit {summary['run_id']}: {counts['total']} checked in {summary.get('duration_seconds')} s: "
        f"{counts['healthy']} healthy, {counts['degraded']} degraded, {counts['failing']} failing, "
        f"{counts['unknown']} unknown",
    ]
    rows = [
        (exchange, r["total"], r["healthy"], r["degraded"], r["failing"], r["unknown"])
        for exchange, r in sorted(summary.get("by_exchange", {}).items())
    ]
    if rows:
        out.append(table(("exchange", "checked", "healthy", "degraded", "failing", "unknown"), rows))
    for item in summary.get("newly_failing") or []:
        out.append(f"newly failing: {json.dumps(item)}")
    for item in summary.get("incidents") or []:
        out.append(f"INCIDENT: {json.dumps(item)}")
    return "\n".join(out)


def progress(done: int, total: int, finished: bool, *, label: str = "audit", verb: str = "checked") -> None:
    """A progress bar on stderr (the audit's, the migration's), when stderr is a terminal."""
    if not sys.stderr.isatty():
        return
    width = 30
    filled = width if finished else (width * done // total if total else 0)
    bar = "#" * filled + "-" * (width - filled)
    sys.stderr.write(f"\r{label} [{bar}] {done}/{total} {verb}{' done' if finished else ''}   ")
    sys.stderr.flush()


def describe_webhook(webhook: dict[str, Any]) -> list[str]:
    """A webhook as `webhook set` and `webhook show` print it: where its events go (never its secret)."""
    return [
        f"webhook      {webhook.get('url')}",
        f"events       {', '.join(webhook.get('events') or []) or '-'}",
        f"created      {webhook.get('created_at')}   updated {webhook.get('updated_at')}",
    ]


def describe_secret(secret: str) -> list[str]:
    """A new signing secret: the one line that shows it (the only place the CLI prints it), and what it is for."""
    return [
        f"secret       {secret}",
        "             shown once, never again: store it now where your platform verifies deliveries'",
        "             Keyhealth-Signature headers with it (docs/webhooks.md)",
    ]


def describe_delivery(webhook: dict[str, Any]) -> list[str]:
    """GET /webhook's delivery health: healthy or failing since when and why, what was given up on, a rotation."""
    if webhook.get("failing_since"):
        health = f"FAILING since {webhook['failing_since']}: {webhook.get('last_error') or 'no error recorded'}"
    elif webhook.get("last_delivered_at"):
        health = "healthy"
    else:
        health = "healthy (nothing delivered yet)"
    out = [f"delivery     {health}", f"last ok      {webhook.get('last_delivered_at') or 'never'}"]
    dead = webhook.get("dead_lettered") or 0
    if dead:
        last = webhook.get("last_dead_lettered_at")
        out.append(f"dead-letter  {dead} event(s) given up after the retry window (last {last}): see keyhealth events")
    else:
        out.append("dead-letter  none")
    if webhook.get("previous_secret_expires_at"):
        out.append(
            f"rotation     the previous secret also signs (a second v1=) until {webhook['previous_secret_expires_at']}"
        )
    return out


def event_summary(event: dict[str, Any]) -> str:
    """One event in a few words, by its type: "healthy -> failing", "7 days left", ..."""
    kind = event.get("type")
    codes = ",".join(str(f.get("code")) for f in event.get("findings") or [] if isinstance(f, dict))
    if kind == "binding.status_changed":
        change = f"{event.get('previous_status')} -> {event.get('status')}"
        return f"{change} ({codes})" if codes else change
    if kind == "binding.trading_permission_expiring":
        days = event.get("days_left")
        return f"{days} day{'' if days == 1 else 's'} left (expires {event.get('expires_at')})"
    if kind == "binding.unreachable":
        streak = event.get("unknown_streak")
        return f"unknown {streak} checks in a row" if streak else "the exchange could not be reached"
    if kind == "binding.deleted":
        return f"unbound {event.get('deleted_at') or ''}".rstrip()
    if kind == "binding.planned_ip_missing":
        return (
            f"a planned egress IP is not whitelisted ({codes})" if codes else "a planned egress IP is not whitelisted"
        )
    if kind == "ping":
        return "test event (keyhealth webhook test)"
    return "-"


def events_table(events: Sequence[dict[str, Any]]) -> str:
    rows = [(e.get("id"), e.get("created_at"), e.get("type"), e.get("binding_id"), event_summary(e)) for e in events]
    return table(("id", "created_at", "type", "binding_id", "summary"), rows)
