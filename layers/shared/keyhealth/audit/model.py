"""What the audit decides, as pure functions: which alerts a check deserves, which failures
are one incident, and the run's summary. No AWS, no HTTP."""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from hashlib import blake2b
from typing import Any

from keyhealth.bindings.model import Binding
from keyhealth.domain.exchange import ExchangeName, ExchangeUi
from keyhealth.domain.findings import make_finding
from keyhealth.domain.model import FindingCode, Report, Severity, Status, format_time, parse_time
from keyhealth.notify import model as alerts
from keyhealth.notify.model import Alert

EXPIRY_REMINDER_DAYS = (14, 7, 1)
UNREACHABLE_AFTER = 3  # audits in a row the exchange could not be asked before ops hear of it
INCIDENT_MIN_COUNT = 3
INCIDENT_MIN_SHARE = 0.5
NEWLY_FAILING_LISTED = 100  # the summary lists at most this many; the count is always exact


@dataclass(frozen=True)
class AuditTask:
    """One SQS message: one binding to check in one run, from one egress IP (None: the stack has one)."""

    run_id: str
    exchange: ExchangeName
    tenant: str
    binding_id: str
    egress_ip: str | None = None

    def to_json(self) -> str:
        data = {"run_id": self.run_id, "exchange": self.exchange, "tenant": self.tenant, "binding_id": self.binding_id}
        if self.egress_ip is not None:
            data["egress_ip"] = self.egress_ip
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> AuditTask:
        data = json.loads(text)
        return cls(data["run_id"], str(data["exchange"]), data["tenant"], data["binding_id"], data.get("egress_ip"))


#: Keys the egress spread apart from the day slot and the shards (each independent of the others).
_EGRESS_PERSON = b"keyhealth.egress"


def egress_for(binding_id: str, egress_ips: Sequence[str], day: int) -> str | None:
    """The egress IP a binding is checked from on UTC day `day` (days since the epoch): spread evenly over
    the IPs by a keyed hash of its id, and one IP further each day, so that every IP checks every key within
    len(egress_ips) days (Binance hides a key's whitelist: only a check from each IP shows it lists them all).
    None when the stack has no egress IP list (tests, one unnamed IP)."""
    if not egress_ips:
        return None
    digest = blake2b(binding_id.encode(), digest_size=8, person=_EGRESS_PERSON).digest()
    return egress_ips[(int.from_bytes(digest, "big") + day) % len(egress_ips)]


@dataclass(frozen=True)
class HeldAlert:
    """An alert kept until the run ends, so that correlated ones can fold into an incident."""

    binding_id: str
    exchange: ExchangeName
    code: str  # the finding code that explains it (for incident folding)
    kind: str  # binding_status_changed | binding_unreachable | credentials_unreadable | trading_permission_expiring
    alert: Alert
    newly_failing: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "binding_id": self.binding_id,
            "exchange": self.exchange,
            "code": self.code,
            "kind": self.kind,
            "newly_failing": self.newly_failing,
            "alert": {
                "subject": self.alert.subject,
                "body": self.alert.body,
                "text": self.alert.text,
                "attributes": self.alert.attributes,
            },
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HeldAlert:
        a = data["alert"]
        return cls(
            binding_id=data["binding_id"],
            exchange=str(data["exchange"]),
            code=data["code"],
            kind=data["kind"],
            newly_failing=bool(data.get("newly_failing")),
            alert=Alert(subject=a["subject"], body=a["body"], text=a["text"], attributes=a["attributes"]),
        )


def main_code(report: Report) -> str:
    """The code that best explains a report: its first error, else its first transient finding."""
    for severity in (Severity.ERROR, Severity.TRANSIENT, Severity.WARNING):
        for finding in report.findings:
            if finding.severity is severity:
                return finding.code.value
    return "none"


@dataclass
class Assessment:
    """The outcome of recording one audit check."""

    binding: Binding  # as it must be stored
    held: list[HeldAlert] = field(default_factory=list)
    counters: Counter[str] = field(default_factory=Counter)


def assess(before: Binding, report: Report, now: datetime, *, exchange_name: str) -> Assessment:
    """Record `report` on `before`: the binding to store, the alerts it deserves, the counters.

    A transient result never changes the stored status (contract, "Finding codes"); the third
    unknown in a row raises one `binding_unreachable`; expiring trading rights are reminded
    of at 14, 7 and 1 days, once each.
    """
    after = before.recorded(report, now=now)
    exchange = before.exchange
    code = main_code(report)
    result = Assessment(binding=after)
    result.counters[f"checked.{exchange}"] += 1
    result.counters[f"status.{exchange}.{report.status.value}"] += 1
    if report.status is Status.UNKNOWN:
        result.counters[f"transient.{exchange}.{code}"] += 1
    if after.status is not before.status:
        newly_failing = after.status is Status.FAILING
        if newly_failing:
            result.counters[f"newly_failing.{exchange}.{code}"] += 1
        result.held.append(
            HeldAlert(
                binding_id=after.binding_id,
                exchange=after.exchange,
                code=code,
                kind="binding_status_changed",
                alert=alerts.status_changed(after, before.status, report, exchange_name=exchange_name),
                newly_failing=newly_failing,
            )
        )
    if report.credentials_unreadable and not before.credentials_unreadable:
        result.held.append(
            HeldAlert(
                after.binding_id,
                after.exchange,
                code,
                "credentials_unreadable",
                alerts.credentials_unreadable(after, report, exchange_name=exchange_name),
            )
        )
    if after.unknown_streak == UNREACHABLE_AFTER and before.unknown_streak != UNREACHABLE_AFTER:
        result.held.append(
            HeldAlert(
                after.binding_id,
                after.exchange,
                code,
                "binding_unreachable",
                alerts.unreachable(after, report, exchange_name=exchange_name),
            )
        )
    planned = FindingCode.PLANNED_IP_MISSING.value
    if planned in report.codes:
        result.counters[f"planned_ip_missing.{exchange}"] += 1  # the summary's keys not ready for the switch
        found_before = before.last_report is not None and planned in before.last_report.codes
        if not found_before:
            result.held.append(
                HeldAlert(
                    after.binding_id,
                    after.exchange,
                    planned,
                    "planned_ip_missing",
                    alerts.planned_ip_missing(after, report, exchange_name=exchange_name),
                )
            )
    reminder, extra = _expiry_reminder(after, report, now, exchange_name)
    if extra is not None:
        result.binding = replace(after, extra={**after.extra, "expiry_reminders": extra})
    if reminder is not None:
        result.held.append(
            HeldAlert(
                after.binding_id, after.exchange, "trading_permission_expiring", "trading_permission_expiring", reminder
            )
        )
    return result


# ------------------------------------------------------------------- per-IP outcomes
#: Binding.extra key: the last outcome of a check from each egress IP ({ip: {"ok": bool, "at": time}}).
EGRESS_OUTCOMES = "egress_outcomes"
#: How long an outcome counts: the audit moves each binding one IP further a day, so with up to 4 IPs every
#: IP has checked it within 4 days; a week keeps one missed day from forgetting what an IP found.
EGRESS_MEMORY = timedelta(days=7)
_REJECTIONS = frozenset({FindingCode.KEY_REJECTED.value, FindingCode.IP_NOT_WHITELISTED.value})


def with_egress_outcome(
    before: Binding, report: Report, egress_ip: str | None, ui: ExchangeUi
) -> tuple[Report, dict[str, dict[str, Any]] | None]:
    """The report and the binding's per-IP outcomes after a check from `egress_ip`, for an exchange that
    hides a key's whitelist (Binance: `ip_whitelist` is never known). A key the exchange rejected from one
    egress IP while it answered from another within EGRESS_MEMORY lacks those IPs on its whitelist, so the
    report says `ip_whitelist_incomplete` naming them (instead of the ambiguous `key_rejected`: the key
    exists, another IP proved it). None: nothing to remember (one IP, a revealed whitelist, no answer)."""
    if egress_ip is None or report.ip_whitelist is not None or report.status is Status.UNKNOWN:
        return report, None
    rejected = bool(_REJECTIONS & set(report.codes))
    accepted = report.permissions.read is True
    if not (rejected or accepted):
        return report, None
    now = report.checked_at
    outcomes = {ip: dict(o) for ip, o in (before.extra.get(EGRESS_OUTCOMES) or {}).items()}
    outcomes[egress_ip] = {"ok": accepted and not rejected, "at": format_time(now)}
    recent = {ip: o for ip, o in outcomes.items() if (at := parse_time(o.get("at"))) and now - at <= EGRESS_MEMORY}
    missing = sorted(ip for ip, o in recent.items() if not o.get("ok"))
    if not missing or not any(o.get("ok") for o in recent.values()):
        return report, outcomes
    findings = [f for f in report.findings if f.code.value not in _REJECTIONS]
    detail = "The key answered from another of the platform's egress IPs, so it exists: these IPs are missing."
    findings.append(make_finding(FindingCode.IP_WHITELIST_INCOMPLETE, ui, missing_ips=missing, detail=detail))
    return replace(report, findings=tuple(findings)), outcomes


#: Binding.extra key: how the run that checked the binding last had found it (see `as_found_by`).
RUN_MARK = "audit_run"


def as_found_by(binding: Binding, run_id: str) -> Binding:
    """The binding as run `run_id` found it before checking it.

    A task can be checked twice in one run: its first check was stored, then the worker died
    before the run recorded it, and the message came back. The second check is assessed against
    the state the run first found, not the one its first check stored, so the run still sees each
    transition once (and holds its alert once). Only while nobody else wrote the binding since:
    a verify or rotate in between is a state of its own.
    """
    mark = binding.extra.get(RUN_MARK)
    if not isinstance(mark, dict) or mark.get("run_id") != run_id or mark.get("version") != binding.version:
        return binding
    try:
        status, unknown_streak = Status(mark["status"]), int(mark["unknown_streak"])
    except (KeyError, TypeError, ValueError):  # not a mark this code wrote: the binding as it is
        return binding
    extra = {k: v for k, v in binding.extra.items() if k not in (RUN_MARK, "expiry_reminders")}
    if mark.get("expiry_reminders") is not None:
        extra["expiry_reminders"] = mark["expiry_reminders"]
    return replace(binding, status=status, unknown_streak=unknown_streak, extra=extra)


def marked(after: Binding, found: Binding, run_id: str, *, version: int) -> Binding:
    """`after`, as it is stored at `version`, remembering how run `run_id` had found it (`found`)."""
    mark: dict[str, Any] = {
        "run_id": run_id,
        "version": version,
        "status": found.status.value,
        "unknown_streak": found.unknown_streak,
    }
    if (reminders := found.extra.get("expiry_reminders")) is not None:
        mark["expiry_reminders"] = reminders
    return replace(after, extra={**after.extra, RUN_MARK: mark})


def _expiry_reminder(
    binding: Binding, report: Report, now: datetime, exchange_name: str
) -> tuple[Alert | None, dict[str, Any] | None]:
    if report.trading_expires_at is None:
        return None, None
    # Whole seconds on both sides: `now` is stored to the second, and sub-second noise must not
    # turn "10 days left" into 11.
    expires = report.trading_expires_at.replace(microsecond=0)
    if expires <= now:
        return None, None
    days_left = (expires - now).total_seconds() / 86400
    state = binding.extra.get("expiry_reminders") or {}
    sent = set(state.get("sent", [])) if state.get("expires_at") == format_time(expires) else set()
    due = [d for d in EXPIRY_REMINDER_DAYS if days_left <= d and d not in sent]
    if not due:
        return None, None
    sent.update(due)  # crossing 14 and 7 at once (e.g. a new binding) reminds once, not twice
    state = {"expires_at": format_time(expires), "sent": sorted(sent, reverse=True)}
    return alerts.trading_expiring(binding, expires, math.ceil(days_left), exchange_name=exchange_name), state


# ------------------------------------------------------------------------------ incidents
LIKELY_CAUSES = {
    "ip_not_whitelisted": "the platform's egress IP changed, or users whitelisted another address",
    "key_rejected": "the platform's egress IP changed (Binance reports it as an invalid key, IP or permission)",
    "egress_blocked": "the exchange blocks the egress IP (a ban, or a restricted location: check the region)",
    "exchange_unavailable": "the exchange is down or in maintenance",
    "timeout": "the exchange, or the network path to it, is not answering",
    "rate_limited": "the egress IP is throttled: other traffic shares it, or AUDIT_BUDGET_SHARE is too high",
    "clock_skew": "the platform's clock is off",
    "invalid_api_key": "the exchange invalidated many keys at once (a security event or a policy change)",
    "account_restricted": "the exchange restricted many accounts at once",
}


@dataclass(frozen=True)
class Incident:
    run_id: str
    exchange: ExchangeName
    code: str
    count: int
    total: int
    detected_at: datetime

    @property
    def share(self) -> float:
        return round(self.count / self.total, 3) if self.total else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "incident",
            "run_id": self.run_id,
            "exchange": self.exchange,
            "code": self.code,
            "count": self.count,
            "total": self.total,
            "share": self.share,
            "likely_cause": LIKELY_CAUSES.get(self.code, "many keys of one exchange failed the same way at once"),
            "detected_at": format_time(self.detected_at),
        }


def checked_exchanges(counters: dict[str, int]) -> list[ExchangeName]:
    """The exchanges a run checked, by name: the run's counters say, no registry needed."""
    return sorted({key.split(".", 2)[1] for key in counters if key.startswith("checked.")})


def detect_incidents(run_id: str, counters: dict[str, int], now: datetime) -> list[Incident]:
    """One incident per (exchange, code) that hit a large share of the exchange's checks in a run:
    bindings newly failing with that code, or checks that could not reach the exchange."""
    found = []
    for exchange in checked_exchanges(counters):
        total = counters.get(f"checked.{exchange}", 0)
        if not total:
            continue
        per_code: Counter[str] = Counter()
        for key, value in counters.items():
            kind, _, rest = key.partition(".")
            if kind in ("newly_failing", "transient") and rest.startswith(f"{exchange}."):
                per_code[rest.split(".", 1)[1]] += value
        for code, count in sorted(per_code.items()):
            if count >= INCIDENT_MIN_COUNT and count / total >= INCIDENT_MIN_SHARE:
                found.append(Incident(run_id, exchange, code, count, total, now))
    return found


def release(held: list[HeldAlert], incidents: list[Incident]) -> list[HeldAlert]:
    """The held alerts to publish: those an incident explains are folded into it."""
    folded = {(i.exchange, i.code) for i in incidents}
    return [h for h in held if h.kind == "trading_permission_expiring" or (h.exchange, h.code) not in folded]


# ------------------------------------------------------------------------------- summary
def summarise(
    run_id: str,
    counters: dict[str, int],
    held: list[HeldAlert],
    incidents: list[Incident],
    started_at: datetime,
    finished_at: datetime,
) -> dict[str, Any]:
    by_exchange: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(("total", *map(str, Status)), 0))
    for exchange in checked_exchanges(counters):
        checked = counters.get(f"checked.{exchange}", 0)
        if not checked:
            continue
        row = by_exchange[exchange]
        row["total"] = checked
        for status in Status:
            row[status.value] = counters.get(f"status.{exchange}.{status.value}", 0)
    totals = dict.fromkeys(("total", *map(str, Status)), 0)
    for row in by_exchange.values():
        for key, value in row.items():
            totals[key] += value
    duration = max((finished_at - started_at).total_seconds(), 0.001)
    newly_failing = [
        {
            "binding_id": h.binding_id,
            "tenant": h.alert.body.get("tenant"),
            "user_id": h.alert.body.get("user_id"),
            "exchange": h.exchange,
            "codes": [f["code"] for f in h.alert.body.get("findings", []) if f["severity"] == "error"],
        }
        for h in held
        if h.newly_failing
    ]
    return {
        "type": "audit_summary",
        "run_id": run_id,
        "started_at": format_time(started_at),
        "finished_at": format_time(finished_at),
        "duration_seconds": round(duration, 1),
        "checks_per_second": round(totals["total"] / duration, 2),
        "counts": totals,
        "by_exchange": dict(by_exchange),
        "newly_failing_count": len(newly_failing),
        "newly_failing": newly_failing[:NEWLY_FAILING_LISTED],
        "incidents": [i.to_dict() for i in incidents],
        # per exchange, the restricted keys lacking an announced egress IP (PlannedEgressIps): not ready for it
        "planned_ip_missing": {
            key.split(".", 1)[1]: value
            for key, value in sorted(counters.items())
            if key.startswith("planned_ip_missing.")
        },
    }
