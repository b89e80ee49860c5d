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
