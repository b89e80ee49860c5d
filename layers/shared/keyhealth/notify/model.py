"""Alert messages for the SNS topic (contract section 3): one typed model per message type.

Each type is a frozen dataclass with `to_body()`, the JSON body published on the topic, and `from_body()`,
its parser. The email text (keyhealth.notify.email) and the Slack Block Kit (keyhealth.notify.slack) are
both rendered from these types, so they say the same thing: an incident's remedy, for one, travels on the
incident (`Incident.remedy`, its body's "remedy") instead of living in one renderer.

`from_body()` reads what older or partial messages carry: a field a body lacks is None (or empty), and the
renderers say so. A value of the wrong kind (a count that is not a number, findings that are not a list)
raises `MalformedAlert`; the module's `from_body()` then returns an `UnknownAlert` holding the body as it
came, which the renderers show generically: a message is never lost.

The builders below (`status_changed`, `unreachable`, `trading_expiring`, `incident`, `audit_summary`,
`orphans_removed`) turn domain objects into an `Alert`: subject, JSON body, email text and the attributes
subscribers filter on.
`exchange_name` is the exchange's own spelling of its name (its spec's display name).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Self

from keyhealth.bindings.model import Binding
from keyhealth.domain.model import Report, Status, format_time

SUBJECT_LIMIT = 100  # SNS refuses longer subjects
MAX_ORPHAN_IDS = 20  # binding ids an orphan sweep's alert lists (its counts are exact)

_SEVERITY_OF_STATUS = {
    Status.FAILING: "critical",
    Status.DEGRADED: "warning",
    Status.UNKNOWN: "warning",
    Status.HEALTHY: "info",
}

# What ops does about an incident: many keys of one exchange failing the same way at once is the
# platform's problem (egress IP, exchange outage), not that many users' mistakes. One table, read
# when an incident is built; the remedy then travels on the incident to every renderer.
INCIDENT_REMEDIES = {
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
DEFAULT_INCIDENT_REMEDY = "Check the exchange's status page and API announcements for a change affecting keys."


def incident_remedy(code: str | None) -> str:
    """What ops does about many keys of one exchange failing with `code` at once."""
    return INCIDENT_REMEDIES.get(code or "", DEFAULT_INCIDENT_REMEDY)


class MalformedAlert(ValueError):
    """A body of a known type with a value of the wrong kind in it."""


# --- the message types ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AlertFinding:
    """A finding as an alert carries it (`Finding.to_dict()`); codes stay strings, so a code newer
    than this notifier is still shown."""

    code: str | None = None
    severity: str | None = None
    audience: str | None = None
    message: str | None = None
    remedy: str | None = None
    exchange_code: str | int | None = None
    exchange_message: str | None = None

    def to_body(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "severity": self.severity,
            "audience": self.audience,
            "message": self.message,
            "remedy": self.remedy,
            "exchange_code": self.exchange_code,
            "exchange_message": self.exchange_message,
        }

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Self:
        exchange_code = body.get("exchange_code")
        if exchange_code is not None and not isinstance(exchange_code, str) and not _is_int(exchange_code):
            raise MalformedAlert("a finding's 'exchange_code' is neither a string nor a number")
        return cls(
            code=_str(body, "code"),
            severity=_str(body, "severity"),
            audience=_str(body, "audience"),
            message=_str(body, "message"),
            remedy=_str(body, "remedy"),
            exchange_code=exchange_code,
            exchange_message=_str(body, "exchange_message"),
        )


@dataclass(frozen=True)
class _BindingAlert:
    """What every alert about one binding carries."""

    binding_id: str | None = None
    tenant: str | None = None
    user_id: str | None = None
    exchange: str | None = None
    exchange_name: str | None = None  # None in older messages: renderers fall back to the id
    api_key_masked: str | None = None

    def _binding_body(self, kind: str) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": kind,
            "binding_id": self.binding_id,
            "tenant": self.tenant,
            "user_id": self.user_id,
            "exchange": self.exchange,
        }
        if self.exchange_name is not None:
            body["exchange_name"] = self.exchange_name
        body["api_key_masked"] = self.api_key_masked
        return body

    @staticmethod
    def _fields_of(body: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "binding_id": _str(body, "binding_id"),
            "tenant": _str(body, "tenant"),
            "user_id": _str(body, "user_id"),
            "exchange": _str(body, "exchange"),
            "exchange_name": _name(body.get("exchange_name")),
            "api_key_masked": _str(body, "api_key_masked"),
        }


@dataclass(frozen=True)
class StatusChanged(_BindingAlert):
    """A binding's status changed (on verify, rotate or audit)."""

    TYPE: ClassVar[str] = "binding_status_changed"

    previous_status: str | None = None
    status: str | None = None
    findings: tuple[AlertFinding, ...] = ()
    checked_at: str | None = None

    def to_body(self) -> dict[str, Any]:
        return {
            **self._binding_body(self.TYPE),
            "previous_status": self.previous_status,
            "status": self.status,
            "findings": [f.to_body() for f in self.findings],
            "checked_at": self.checked_at,
        }

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Self:
        _check_type(body, cls.TYPE)
        return cls(
            **cls._fields_of(body),
            previous_status=_str(body, "previous_status"),
            status=_str(body, "status"),
            findings=_findings(body),
            checked_at=_str(body, "checked_at"),
        )


@dataclass(frozen=True)
class Unreachable(_BindingAlert):
    """The exchange could not be asked about this key in several audits in a row."""

    TYPE: ClassVar[str] = "binding_unreachable"

    unknown_streak: int | None = None
    findings: tuple[AlertFinding, ...] = ()
    checked_at: str | None = None
    status: str | None = None  # the last known (stored) status; None in older messages

    def to_body(self) -> dict[str, Any]:
        body = {
            **self._binding_body(self.TYPE),
            "unknown_streak": self.unknown_streak,
            "findings": [f.to_body() for f in self.findings],
            "checked_at": self.checked_at,
        }
        if self.status is not None:
            body["status"] = self.status
        return body

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Self:
        _check_type(body, cls.TYPE)
        return cls(
            **cls._fields_of(body),
            unknown_streak=_int(body, "unknown_streak"),
            findings=_findings(body),
            checked_at=_str(body, "checked_at"),
            status=_str(body, "status"),
        )


@dataclass(frozen=True)
class _CheckedBindingAlert(_BindingAlert):
    """A binding alert that carries the check's findings, when it was made and the binding's status."""

    TYPE: ClassVar[str]

    findings: tuple[AlertFinding, ...] = ()
    checked_at: str | None = None
    status: str | None = None

    def to_body(self) -> dict[str, Any]:
        return {
            **self._binding_body(self.TYPE),
            "findings": [f.to_body() for f in self.findings],
            "checked_at": self.checked_at,
            "status": self.status,
        }

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Self:
        _check_type(body, cls.TYPE)
        return cls(
            **cls._fields_of(body),
            findings=_findings(body),
            checked_at=_str(body, "checked_at"),
            status=_str(body, "status"),
        )


@dataclass(frozen=True)
class Undecryptable(_CheckedBindingAlert):
    """The binding's stored credentials could not be decrypted (a disabled or deleted KMS key, a changed key
    policy, a ciphertext copied from another binding): the key was not checked. Ops' to fix, raised once
    when a check first finds it (not again while it lasts). `status` is the last known (stored) status, kept
    while the key cannot be checked."""

    TYPE: ClassVar[str] = "credentials_unreadable"


@dataclass(frozen=True)
class PlannedIpMissing(_CheckedBindingAlert):
    """A restricted key's whitelist lacks an egress IP the platform announced (PlannedEgressIps): it works
    today and breaks for the requests from that IP once the platform uses it. Raised once per binding, when a
    check first finds it; the finding says which IP to add and by when."""

    TYPE: ClassVar[str] = "planned_ip_missing"


@dataclass(frozen=True)
class TradingExpiring(_BindingAlert):
    """Trading rights of a key without IP restriction lapse soon."""

    TYPE: ClassVar[str] = "trading_permission_expiring"

    expires_at: str | None = None
    days_left: int | None = None

    def to_body(self) -> dict[str, Any]:
        return {**self._binding_body(self.TYPE), "expires_at": self.expires_at, "days_left": self.days_left}

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Self:
        _check_type(body, cls.TYPE)
        return cls(**cls._fields_of(body), expires_at=_str(body, "expires_at"), days_left=_int(body, "days_left"))


@dataclass(frozen=True)
class Incident:
    """Many bindings of one exchange failed the same way in one audit run: the platform's to fix.

    `remedy` is what ops does about it; a body without one (an older message) gets it from
    INCIDENT_REMEDIES, so every renderer says the same.
    """

    TYPE: ClassVar[str] = "incident"

    run_id: str | None = None
    exchange: str | None = None
    code: str | None = None
    count: int | None = None
    total: int | None = None
    share: float | None = None  # count / total, 0..1
    likely_cause: str | None = None
    detected_at: str | None = None
    exchange_name: str | None = None
    remedy: str = ""  # empty: INCIDENT_REMEDIES' for the code
    #: The rolling audit judges the checks of the last this many minutes, not one run's (None: a whole run).
    window_minutes: int | None = None
    #: The egress canary's: the egress IP the exchange refuses, and when it answered again (None: still down).
    egress_ip: str | None = None
    recovered_at: str | None = None

    def __post_init__(self) -> None:
        if not self.remedy:
            object.__setattr__(self, "remedy", incident_remedy(self.code))

    def to_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": self.TYPE,
            "run_id": self.run_id,
            "exchange": self.exchange,
            "code": self.code,
            "count": self.count,
            "total": self.total,
            "share": self.share,
            "likely_cause": self.likely_cause,
            "detected_at": self.detected_at,
        }
        if self.exchange_name is not None:
            body["exchange_name"] = self.exchange_name
        body["remedy"] = self.remedy
        if self.window_minutes is not None:
            body["window_minutes"] = self.window_minutes
        if self.egress_ip is not None:
            body.update(egress_ip=self.egress_ip, recovered_at=self.recovered_at)
        return body

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Self:
        _check_type(body, cls.TYPE)
        return cls(
            run_id=_str(body, "run_id"),
            exchange=_str(body, "exchange"),
            code=_str(body, "code"),
            count=_int(body, "count"),
            total=_int(body, "total"),
            share=_number(body, "share"),
            likely_cause=_str(body, "likely_cause"),
            detected_at=_str(body, "detected_at"),
            exchange_name=_name(body.get("exchange_name")),
            remedy=_str(body, "remedy") or "",
            window_minutes=_int(body, "window_minutes"),
            egress_ip=_str(body, "egress_ip"),
            recovered_at=_str(body, "recovered_at"),
        )


@dataclass(frozen=True)
class NewlyFailing:
    """One binding an audit found newly failing, as its summary lists it."""

    binding_id: str | None = None
    tenant: str | None = None
    user_id: str | None = None
    exchange: str | None = None
    codes: tuple[str, ...] = ()

    def to_body(self) -> dict[str, Any]:
        return {
            "binding_id": self.binding_id,
            "tenant": self.tenant,
            "user_id": self.user_id,
            "exchange": self.exchange,
            "codes": list(self.codes),
        }

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Self:
        codes = body.get("codes") or []
        if not isinstance(codes, list) or not all(isinstance(c, str) for c in codes):
            raise MalformedAlert("a newly failing binding's 'codes' is not a list of strings")
        return cls(
            binding_id=_str(body, "binding_id"),
            tenant=_str(body, "tenant"),
            user_id=_str(body, "user_id"),
            exchange=_str(body, "exchange"),
            codes=tuple(codes),
        )


@dataclass(frozen=True)
class AuditSummary:
    """One audit run: counts by status (overall and by exchange), newly failing keys, incidents."""

    TYPE: ClassVar[str] = "audit_summary"

    run_id: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    duration_seconds: float | None = None
    checks_per_second: float | None = None
    counts: dict[str, int] = field(default_factory=dict)  # total, healthy, degraded, failing, unknown
    by_exchange: dict[str, dict[str, int]] = field(default_factory=dict)
    newly_failing_count: int | None = None  # exact; `newly_failing` lists the first ones only
    newly_failing: tuple[NewlyFailing, ...] = ()
    incidents: tuple[Incident, ...] = ()
    exchange_names: dict[str, str] | None = None  # id -> the exchange's own spelling
    #: The rolling audit's daily summary: "rolling", the ticks it covers and those still running then.
    mode: str | None = None
    ticks: int | None = None
    ticks_unfinished: int | None = None
    #: per exchange, the keys whose whitelist lacks an announced egress IP (None: an older message)
    planned_ip_missing: dict[str, int] | None = None

    def to_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": self.TYPE,
            "run_id": self.run_id,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "duration_seconds": self.duration_seconds,
            "checks_per_second": self.checks_per_second,
            "counts": dict(self.counts),
            "by_exchange": {name: dict(row) for name, row in self.by_exchange.items()},
            "newly_failing_count": self.newly_failing_count,
            "newly_failing": [n.to_body() for n in self.newly_failing],
            "incidents": [i.to_body() for i in self.incidents],
        }
        if self.exchange_names is not None:
            body["exchange_names"] = dict(self.exchange_names)
        if self.mode is not None:
            body.update(mode=self.mode, ticks=self.ticks, ticks_unfinished=self.ticks_unfinished)
        if self.planned_ip_missing is not None:
            body["planned_ip_missing"] = dict(self.planned_ip_missing)
        return body

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Self:
        _check_type(body, cls.TYPE)
        by_exchange = body.get("by_exchange") or {}
        if not isinstance(by_exchange, dict):
            raise MalformedAlert("'by_exchange' is not an object")
        return cls(
            run_id=_str(body, "run_id"),
            started_at=_str(body, "started_at"),
            finished_at=_str(body, "finished_at"),
            duration_seconds=_number(body, "duration_seconds"),
            checks_per_second=_number(body, "checks_per_second"),
            counts=_counts(body.get("counts"), "counts"),
            by_exchange={str(name): _counts(row, f"by_exchange.{name}") for name, row in by_exchange.items()},
            newly_failing_count=_int(body, "newly_failing_count"),
            newly_failing=tuple(NewlyFailing.from_body(n) for n in _objects(body, "newly_failing")),
            incidents=tuple(Incident.from_body(i) for i in _objects(body, "incidents")),
            exchange_names=_names(body.get("exchange_names")),
            mode=_str(body, "mode"),
            ticks=_int(body, "ticks"),
            ticks_unfinished=_int(body, "ticks_unfinished"),
            planned_ip_missing=_counts(body["planned_ip_missing"], "planned_ip_missing")
            if isinstance(body.get("planned_ip_missing"), dict)
            else None,
        )


@dataclass(frozen=True)
class OrphansRemoved:
    """The daily orphan sweep scheduled the deletion of stored credentials no binding points to (the
    secrets of binds whose binding write and compensating delete both failed), and says what it could not do.

    `count` and `failed` are exact; `binding_ids` and `failed_binding_ids` list the first MAX_ORPHAN_IDS
    only. A secret's name is `secret_prefix` + its binding id. `complete` is False when the listing of
    the secrets failed part-way (the sweep stopped there; the function failed too).
    """

    TYPE: ClassVar[str] = "orphans_removed"

    count: int | None = None  # secrets scheduled for deletion
    failed: int | None = None  # secrets that could not be checked or removed (the next sweep tries again)
    checked: int | None = None  # secrets listed under the prefix
    binding_ids: tuple[str, ...] = ()
    failed_binding_ids: tuple[str, ...] = ()
    secret_prefix: str | None = None
    recovery_days: int | None = None  # until then, `restore-secret` brings one back
    swept_at: str | None = None
    complete: bool | None = None

    def to_body(self) -> dict[str, Any]:
        return {
            "type": self.TYPE,
            "count": self.count,
            "failed": self.failed,
            "checked": self.checked,
            "binding_ids": list(self.binding_ids),
            "failed_binding_ids": list(self.failed_binding_ids),
            "secret_prefix": self.secret_prefix,
            "recovery_days": self.recovery_days,
            "swept_at": self.swept_at,
            "complete": self.complete,
        }

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Self:
        _check_type(body, cls.TYPE)
        return cls(
            count=_int(body, "count"),
            failed=_int(body, "failed"),
            checked=_int(body, "checked"),
            binding_ids=_strings(body, "binding_ids"),
            failed_binding_ids=_strings(body, "failed_binding_ids"),
            secret_prefix=_str(body, "secret_prefix"),
            recovery_days=_int(body, "recovery_days"),
            swept_at=_str(body, "swept_at"),
            complete=_bool(body, "complete"),
        )


@dataclass(frozen=True)
class UnknownAlert:
    """A body of a type this version does not know, or of a known type in a shape it cannot read:
    kept as it came, and shown as it came."""

    TYPE: ClassVar[str] = "unknown"

    body: Mapping[str, Any] = field(default_factory=dict)
    problem: str | None = None  # why a known type could not be read (None: the type is unknown)

    @property
    def type(self) -> str:
        """The type the body says it is ("alert" when it says none)."""
        return str(self.body.get("type") or "alert")

    def to_body(self) -> dict[str, Any]:
        return dict(self.body)

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Self:
        return cls(dict(body))


KnownAlert = (
    StatusChanged
    | Unreachable
    | Undecryptable
    | PlannedIpMissing
    | TradingExpiring
    | Incident
    | AuditSummary
    | OrphansRemoved
)
AlertMessage = KnownAlert | UnknownAlert

KNOWN_TYPES: dict[str, type[KnownAlert]] = {
    kind.TYPE: kind
    for kind in (
        StatusChanged,
        Unreachable,
        Undecryptable,
        PlannedIpMissing,
        TradingExpiring,
        Incident,
        AuditSummary,
        OrphansRemoved,
    )
}


def from_body(body: object) -> AlertMessage:
    """The typed message for a topic body; never raises. An unknown type, or a known one with a value
    of the wrong kind, becomes an `UnknownAlert` with the body as it came."""
    if not isinstance(body, Mapping):
        return UnknownAlert({"type": "unknown", "message": body}, "the body is not a JSON object")
    kind = KNOWN_TYPES.get(str(body.get("type")))
    if kind is None:
        return UnknownAlert(dict(body))
    try:
        return kind.from_body(body)
    except (AttributeError, TypeError, ValueError) as problem:  # MalformedAlert is a ValueError
        return UnknownAlert(dict(body), str(problem) or type(problem).__name__)


# --- the alert as published ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Alert:
    subject: str
    body: dict[str, Any]
    text: str  # what a person reads in an email
    attributes: dict[str, str]  # type, severity, exchange, status: for subscription filters

    def sns_message(self) -> str:
        """The per-protocol message: JSON by default, readable text for email."""
        return json.dumps({"default": json.dumps(self.body), "email": self.text})

    @classmethod
    def of(cls, message: AlertMessage, *, severity: str, exchange: str, status: str) -> Alert:
        """The alert publishing `message`: its body, and the subject and text email readers get."""
        from keyhealth.notify import email  # email renders the types defined here

        return cls(
            subject=email.subject(message),
            body=message.to_body(),
            text=email.text(message),
            attributes={"type": message.TYPE, "severity": severity, "exchange": exchange, "status": status},
        )


# --- built from domain objects --------------------------------------------------------------------------------


def status_changed(binding: Binding, previous: Status, report: Report, *, exchange_name: str) -> Alert:
    """A binding's status changed (on verify, rotate or audit)."""
    message = StatusChanged(
        **_binding_ref(binding, exchange_name),
        previous_status=previous.value,
        status=binding.status.value,
        findings=_alert_findings(report),
        checked_at=format_time(report.checked_at),
    )
    return Alert.of(
        message,
        severity=_SEVERITY_OF_STATUS[binding.status],
        exchange=binding.exchange,
        status=binding.status.value,
    )


def unreachable(binding: Binding, report: Report, *, exchange_name: str) -> Alert:
    """The exchange could not be asked about this key in several audits in a row."""
    message = Unreachable(
        **_binding_ref(binding, exchange_name),
        unknown_streak=binding.unknown_streak,
        findings=_alert_findings(report),
        checked_at=format_time(report.checked_at),
        status=binding.status.value,
    )
    return Alert.of(message, severity="warning", exchange=binding.exchange, status=binding.status.value)


def credentials_unreadable(binding: Binding, report: Report, *, exchange_name: str) -> Alert:
    """The binding's stored credentials could not be decrypted: its key was not checked."""
    message = Undecryptable(
        **_binding_ref(binding, exchange_name),
        findings=_alert_findings(report),
        checked_at=format_time(report.checked_at),
        status=binding.status.value,
    )
    return Alert.of(message, severity="critical", exchange=binding.exchange, status=binding.status.value)


def planned_ip_missing(binding: Binding, report: Report, *, exchange_name: str) -> Alert:
    """The key's whitelist lacks an announced egress IP (the planned_ip_missing finding names it and the day)."""
    message = PlannedIpMissing(
        **_binding_ref(binding, exchange_name),
        findings=tuple(f for f in _alert_findings(report) if f.code == "planned_ip_missing"),
        checked_at=format_time(report.checked_at),
        status=binding.status.value,
    )
    return Alert.of(message, severity="warning", exchange=binding.exchange, status=binding.status.value)


def trading_expiring(binding: Binding, expires_at: Any, days_left: int, *, exchange_name: str) -> Alert:
    """A reminder that trading rights lapse soon (sent at 14, 7 and 1 days, once each)."""
    message = TradingExpiring(
        **_binding_ref(binding, exchange_name), expires_at=format_time(expires_at), days_left=days_left
    )
    return Alert.of(message, severity="warning", exchange=binding.exchange, status=binding.status.value)


def incident(body: dict[str, Any]) -> Alert:
    """Many bindings of one exchange failed the same way in one audit run (the audit's incident body;
    its remedy is added here)."""
    message = Incident.from_body(body)
    if message.recovered_at is not None:  # the egress canary's all-clear
        return Alert.of(message, severity="info", exchange=str(message.exchange), status="healthy")
    return Alert.of(message, severity="critical", exchange=str(message.exchange), status="failing")


def audit_summary(body: dict[str, Any]) -> Alert:
    """One audit run's summary (the audit's summary body)."""
    message = AuditSummary.from_body(body)
    worst = "critical" if message.incidents else "warning" if message.newly_failing_count else "info"
    return Alert.of(message, severity=worst, exchange="all", status="summary")


def orphans_removed(
    *,
    binding_ids: Sequence[str],
    failed_binding_ids: Sequence[str],
    checked: int,
    secret_prefix: str,
    recovery_days: int,
    swept_at: datetime,
    complete: bool = True,
) -> Alert:
    """One orphan sweep's outcome: the secrets it scheduled for deletion and those it could not check or remove
    (their binding ids, all of them: the alert keeps the counts and the first MAX_ORPHAN_IDS)."""
    message = OrphansRemoved(
        count=len(binding_ids),
        failed=len(failed_binding_ids),
        checked=checked,
        binding_ids=tuple(binding_ids[:MAX_ORPHAN_IDS]),
        failed_binding_ids=tuple(failed_binding_ids[:MAX_ORPHAN_IDS]),
        secret_prefix=secret_prefix,
        recovery_days=recovery_days,
        swept_at=format_time(swept_at),
        complete=complete,
    )
    return Alert.of(message, severity="warning", exchange="all", status="sweep")


def _binding_ref(binding: Binding, exchange_name: str) -> dict[str, Any]:
    return {
        "binding_id": binding.binding_id,
        "tenant": binding.tenant,
        "user_id": binding.user_id,
        "exchange": binding.exchange,
        "exchange_name": exchange_name,
        "api_key_masked": binding.api_key_masked,
    }


def _alert_findings(report: Report) -> tuple[AlertFinding, ...]:
    return tuple(AlertFinding.from_body(f.to_dict()) for f in report.findings)


# --- reading bodies ----------------------------------------------------------------------------------------


def _check_type(body: Mapping[str, Any], expected: str) -> None:
    kind = body.get("type")
    if kind is not None and kind != expected:
        raise MalformedAlert(f"a {kind!r} body is not a {expected!r} one")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _str(body: Mapping[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is None or isinstance(value, str):
        return value
    raise MalformedAlert(f"{key!r} is not a string")


def _int(body: Mapping[str, Any], key: str) -> int | None:
    value = body.get(key)
    if value is None or _is_int(value):
        return value
    raise MalformedAlert(f"{key!r} is not a whole number")


def _bool(body: Mapping[str, Any], key: str) -> bool | None:
    value = body.get(key)
    if value is None or isinstance(value, bool):
        return value
    raise MalformedAlert(f"{key!r} is not true or false")


def _strings(body: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = body.get(key)
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise MalformedAlert(f"{key!r} is not a list of strings")
    return tuple(value)


def _number(body: Mapping[str, Any], key: str) -> float | None:
    value = body.get(key)
    if value is None or _is_int(value) or isinstance(value, float):
        return value
    raise MalformedAlert(f"{key!r} is not a number")


def _objects(body: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    value = body.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise MalformedAlert(f"{key!r} is not a list of objects")
    return value


def _findings(body: Mapping[str, Any]) -> tuple[AlertFinding, ...]:
    return tuple(AlertFinding.from_body(f) for f in _objects(body, "findings"))


def _counts(value: Any, what: str) -> dict[str, int]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) and _is_int(v) for k, v in value.items()):
        raise MalformedAlert(f"{what!r} is not an object of counts")
    return dict(value)


def _name(value: Any) -> str | None:
    """An exchange's display name is a hint: one of the wrong kind is ignored, not an error."""
    return value if isinstance(value, str) else None


def _names(value: Any) -> dict[str, str] | None:
    if not isinstance(value, dict):
        return None
    return {k: v for k, v in value.items() if isinstance(k, str) and isinstance(v, str)}
