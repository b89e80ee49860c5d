"""Notify test helpers: a Block Kit checker (Slack's documented limits), alert bodies of every type as
older messages carry them (no `exchange_name`, no incident `remedy`), and alerts built by the real
publisher code (`keyhealth.notify.model`) from domain objects."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from keyhealth.bindings.model import Binding
from keyhealth.domain.credentials import KeyType
from keyhealth.domain.findings import make_finding
from keyhealth.domain.model import FindingCode, PlannedEgressIp, Report, Scope, Status
from keyhealth.exchanges.registry import Exchange, spec
from keyhealth.notify import model as alerts
from keyhealth.notify.model import Alert, status_changed

CHECKED_AT = datetime(2026, 11, 21, 2, 0, tzinfo=UTC)
EGRESS = ("203.0.113.10",)
BLOCK_TYPES = {"header", "section", "divider", "context", "actions", "image", "rich_text", "input", "file", "video"}


def block_kit_problems(payload: Any) -> list[str]:
    """What Slack would refuse (`invalid_blocks`) in a webhook payload; empty when valid."""
    problems: list[str] = []
    if not isinstance(payload, dict):
        return ["payload is not a JSON object"]
    if not isinstance(payload.get("text"), str) or not payload["text"].strip():
        problems.append("text (the notification fallback) is missing")
    blocks = payload.get("blocks")
    if not isinstance(blocks, list) or not 1 <= len(blocks) <= 50:
        return [*problems, "blocks must be a list of 1 to 50 blocks"]
    for i, block in enumerate(blocks):
        kind = block.get("type") if isinstance(block, dict) else None
        if kind not in BLOCK_TYPES:
            problems.append(f"block {i} has no valid type: {kind!r}")
        elif kind == "header":
            text = block.get("text") or {}
            if text.get("type") != "plain_text" or not 1 <= len(text.get("text") or "") <= 150:
                problems.append(f"block {i}: header needs plain_text of 1 to 150 characters")
        elif kind == "section":
            text, fields = block.get("text"), block.get("fields")
            if text is None and not fields:
                problems.append(f"block {i}: section needs text or fields")
            if text is not None and (
                text.get("type") not in ("mrkdwn", "plain_text") or not 1 <= len(text.get("text") or "") <= 3000
            ):
                problems.append(f"block {i}: section text must be 1 to 3000 characters")
            if fields is not None and (
                not 1 <= len(fields) <= 10 or any(not 1 <= len(f.get("text") or "") <= 2000 for f in fields)
            ):
                problems.append(f"block {i}: 1 to 10 fields of at most 2000 characters")
        elif kind == "context":
            elements = block.get("elements") or []
            if not 1 <= len(elements) <= 10 or any(not e.get("text") for e in elements):
                problems.append(f"block {i}: context needs 1 to 10 non-empty elements")
    return problems


def all_text(payload: dict[str, Any]) -> str:
    """Every string in the payload, for "does it say X" assertions."""
    parts: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, str):
            parts.append(value)
        elif isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    walk(payload)
    return "\n".join(parts)


def binding(
    status: Status = Status.HEALTHY,
    *,
    exchange: Exchange = Exchange.BINANCE,
    user_id: str = "u-42",
    unknown_streak: int = 0,
) -> Binding:
    return Binding(
        binding_id="bnd_01JSLACKTEST",
        tenant="111111111111:role/platform-backend",
        user_id=user_id,
        exchange=exchange,
        label="grid bot",
        key_type=KeyType.HMAC,
        api_key_masked="vmPU...A4Ge",
        api_key_hash="0" * 64,
        scopes=(Scope.SPOT, Scope.FUTURES),
        status=status,
        created_at=CHECKED_AT,
        updated_at=CHECKED_AT,
        secret_id="arn:aws:secretsmanager:eu-west-1:123456789012:secret:keyhealth/test/bnd_01JSLACKTEST-AbCdEf",
        unknown_streak=unknown_streak,
    )


def report(*codes: FindingCode, exchange: Exchange = Exchange.BINANCE, exchange_message: str | None = None) -> Report:
    findings = tuple(
        make_finding(
            code,
            spec(exchange).ui,
            egress_ips=EGRESS,
            scopes=["futures"],
            exchange_code=-2015 if exchange_message else None,
            exchange_message=exchange_message,
        )
        for code in codes
    )
    return Report(checked_at=CHECKED_AT, egress_ip=EGRESS[0], findings=findings)


def status_change(
    previous: Status = Status.HEALTHY,
    *codes: FindingCode,
    exchange: Exchange = Exchange.BINANCE,
    user_id: str = "u-42",
    exchange_message: str | None = None,
) -> Alert:
    """The alert keyhealth publishes when a binding's status changes, from domain objects."""
    checked = report(*codes, exchange=exchange, exchange_message=exchange_message)
    changed = binding(checked.status, exchange=exchange, user_id=user_id)
    return status_changed(changed, previous, checked, exchange_name=spec(exchange).display_name)


def unreachable_alert(exchange: Exchange = Exchange.BINGX, streak: int = 3) -> Alert:
    """The alert the audit publishes on the third unanswered check in a row, from domain objects."""
    unchecked = binding(Status.HEALTHY, exchange=exchange, unknown_streak=streak)
    checked = report(FindingCode.EGRESS_BLOCKED, exchange=exchange)
    return alerts.unreachable(unchecked, checked, exchange_name=spec(exchange).display_name)


PLANNED = PlannedEgressIp("203.0.113.20", date(2027, 1, 15))


def planned_ip_missing_alert(exchange: Exchange = Exchange.BITGET) -> Alert:
    """The alert the audit publishes when a key first lacks an announced egress IP, from domain objects."""
    finding = make_finding(FindingCode.PLANNED_IP_MISSING, spec(exchange).ui, egress_ips=EGRESS, planned=[PLANNED])
    checked = Report(checked_at=CHECKED_AT, egress_ip=EGRESS[0], findings=(finding,))
    return alerts.planned_ip_missing(
        binding(Status.DEGRADED, exchange=exchange), checked, exchange_name=spec(exchange).display_name
    )


def expiring_alert(days_left: int = 5, exchange: Exchange = Exchange.BINANCE) -> Alert:
    """The reminder the audit publishes before trading rights lapse, from domain objects."""
    expires = CHECKED_AT + timedelta(days=days_left)
    reminded = binding(Status.DEGRADED, exchange=exchange)
    return alerts.trading_expiring(reminded, expires, days_left, exchange_name=spec(exchange).display_name)


def incident_body(**overrides: Any) -> dict[str, Any]:
    return {
        "type": "incident",
        "run_id": "run_01JAUDIT",
        "exchange": "binance",
        "code": "ip_not_whitelisted",
        "count": 87,
        "total": 100,
        "share": 0.87,
        "likely_cause": "The egress IP changed, or Binance stopped accepting it.",
        "detected_at": "2026-11-21T02:10:00Z",
        **overrides,
    }


def audit_summary_body(newly_failing: int = 3, incidents: int = 1) -> dict[str, Any]:
    counts = {"total": 120, "healthy": 100, "degraded": 10, "failing": 8, "unknown": 2}
    return {
        "type": "audit_summary",
        "run_id": "run_01JAUDIT",
        "started_at": "2026-11-21T02:00:00Z",
        "finished_at": "2026-11-21T02:01:30Z",
        "duration_seconds": 90.0,
        "checks_per_second": 1.33,
        "counts": counts,
        "by_exchange": {
            "binance": {"total": 100, "healthy": 85, "degraded": 8, "failing": 6, "unknown": 1},
            "bitget": {"total": 20, "healthy": 15, "degraded": 2, "failing": 2, "unknown": 1},
        },
        "newly_failing": [
            {
                "binding_id": f"bnd_{i:04d}",
                "tenant": "111111111111:role/platform-backend",
                "user_id": f"user-{i}",
                "exchange": "binance",
                "codes": ["ip_not_whitelisted"],
            }
            for i in range(newly_failing)
        ],
        "incidents": [incident_body(count=80 + i) for i in range(incidents)],
    }


def unreachable_body() -> dict[str, Any]:
    finding = make_finding(FindingCode.EGRESS_BLOCKED, spec(Exchange.BINGX).ui, egress_ips=EGRESS)
    return {
        "type": "binding_unreachable",
        "binding_id": "bnd_01JUNREACH",
        "tenant": "111111111111:role/platform-backend",
        "user_id": "u-7",
        "exchange": "bingx",
        "api_key_masked": "abcd...wxyz",
        "unknown_streak": 3,
        "findings": [finding.to_dict()],
        "checked_at": "2026-11-21T02:00:00Z",
    }


def expiring_body(days_left: int = 5) -> dict[str, Any]:
    return {
        "type": "trading_permission_expiring",
        "binding_id": "bnd_01JEXPIRE",
        "tenant": "111111111111:role/platform-backend",
        "user_id": "u-9",
        "exchange": "binance",
        "api_key_masked": "efgh...ijkl",
        "expires_at": "2026-11-26T00:00:00Z",
        "days_left": days_left,
    }
