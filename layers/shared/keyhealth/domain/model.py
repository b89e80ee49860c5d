"""The health model: what keyhealth says about a key.

Pure Python: no AWS, no HTTP, and no exchange: which exchanges exist is the registry's
(keyhealth.exchanges.registry). Every exchange adapter produces these types and every API
answer and alert is shaped from them (contract, "Report" and "Finding codes").
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Any


class Scope(StrEnum):
    """What a platform needs to do with a key; `read` is always implied."""

    SPOT = "spot"
    FUTURES = "futures"


class Status(StrEnum):
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    FAILING = "failing"
    UNKNOWN = "unknown"


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"
    TRANSIENT = "transient"


class Audience(StrEnum):
    USER = "user"
    OPERATOR = "operator"


class FindingCode(StrEnum):
    INVALID_API_KEY = "invalid_api_key"
    INVALID_SECRET = "invalid_secret"
    INVALID_PASSPHRASE = "invalid_passphrase"
    IP_NOT_WHITELISTED = "ip_not_whitelisted"
    IP_WHITELIST_INCOMPLETE = "ip_whitelist_incomplete"
    KEY_REJECTED = "key_rejected"
    SCOPE_NOT_PERMITTED = "scope_not_permitted"
    TRADING_PERMISSION_EXPIRED = "trading_permission_expired"
    ACCOUNT_RESTRICTED = "account_restricted"
    WITHDRAW_ENABLED = "withdraw_enabled"
    NO_IP_RESTRICTION = "no_ip_restriction"
    TRADING_PERMISSION_EXPIRING = "trading_permission_expiring"
    INACTIVITY_DELETION_RISK = "inactivity_deletion_risk"
    PLANNED_IP_MISSING = "planned_ip_missing"
    WHITESPACE_TRIMMED = "whitespace_trimmed"
    RATE_LIMITED = "rate_limited"
    EXCHANGE_UNAVAILABLE = "exchange_unavailable"
    TIMEOUT = "timeout"
    CLOCK_SKEW = "clock_skew"
    EGRESS_BLOCKED = "egress_blocked"
    CREDENTIALS_UNREADABLE = "credentials_unreadable"

    @property
    def severity(self) -> Severity:
        return _SEVERITY[self]

    @property
    def audience(self) -> Audience:
        return Audience.OPERATOR if self in _OPERATOR_CODES else Audience.USER


_C = FindingCode
_SEVERITY: dict[FindingCode, Severity] = {
    _C.INVALID_API_KEY: Severity.ERROR,
    _C.INVALID_SECRET: Severity.ERROR,
    _C.INVALID_PASSPHRASE: Severity.ERROR,
    _C.IP_NOT_WHITELISTED: Severity.ERROR,
    # The check passed from one egress IP, but the platform's trading traffic leaves from any of them: the key
    # fails for every request from a missing one.
    _C.IP_WHITELIST_INCOMPLETE: Severity.ERROR,
    _C.KEY_REJECTED: Severity.ERROR,
    _C.SCOPE_NOT_PERMITTED: Severity.ERROR,
    _C.TRADING_PERMISSION_EXPIRED: Severity.ERROR,
    _C.ACCOUNT_RESTRICTED: Severity.ERROR,
    _C.WITHDRAW_ENABLED: Severity.WARNING,
    _C.NO_IP_RESTRICTION: Severity.WARNING,
    _C.TRADING_PERMISSION_EXPIRING: Severity.WARNING,
    _C.INACTIVITY_DELETION_RISK: Severity.WARNING,
    _C.PLANNED_IP_MISSING: Severity.WARNING,  # works today; breaks when the platform switches to the new IP
    _C.WHITESPACE_TRIMMED: Severity.INFO,
    _C.RATE_LIMITED: Severity.TRANSIENT,
    _C.EXCHANGE_UNAVAILABLE: Severity.TRANSIENT,
    _C.TIMEOUT: Severity.TRANSIENT,
    _C.CLOCK_SKEW: Severity.TRANSIENT,
    _C.EGRESS_BLOCKED: Severity.TRANSIENT,
    # Not transient in the sense of clearing by itself, but of the same kind for the report: the key was
    # not checked (its stored credentials could not be decrypted), so the report is `unknown` and the
    # stored status stays what the last real check found; an error here would turn a healthy key
    # `failing` for its owner, who has nothing to fix.
    _C.CREDENTIALS_UNREADABLE: Severity.TRANSIENT,
}
# Transient problems are ours (the platform's) to fix or wait out, never the key owner's.
_OPERATOR_CODES = frozenset(code for code, sev in _SEVERITY.items() if sev is Severity.TRANSIENT)


@dataclass(frozen=True)
class PlannedEgressIp:
    """An egress IP the platform announced it will send requests from, from `effective_at` (a UTC day):
    keys must whitelist it before then (template parameter PlannedEgressIps, `IP@YYYY-MM-DD`)."""

    ip: str
    effective_at: date

    def to_dict(self) -> dict[str, str]:
        return {"ip": self.ip, "effective_at": self.effective_at.isoformat()}


@dataclass(frozen=True)
class Finding:
    code: FindingCode
    message: str
    remedy: str
    exchange_code: str | int | None = None
    exchange_message: str | None = None

    @property
    def severity(self) -> Severity:
        return self.code.severity

    @property
    def audience(self) -> Audience:
        return self.code.audience

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code.value,
            "severity": self.severity.value,
            "audience": self.audience.value,
            "message": self.message,
            "remedy": self.remedy,
            "exchange_code": self.exchange_code,
            "exchange_message": self.exchange_message,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Finding:
        return cls(
            code=FindingCode(data["code"]),
            message=data["message"],
            remedy=data["remedy"],
            exchange_code=data.get("exchange_code"),
            exchange_message=data.get("exchange_message"),
        )


@dataclass(frozen=True)
class Permissions:
    """What the key may do. `None` means the exchange did not say: never guessed."""

    read: bool | None = None
    spot: bool | None = None
    futures: bool | None = None
    margin: bool | None = None
    withdraw: bool | None = None
    transfer: bool | None = None

    def to_dict(self) -> dict[str, bool | None]:
        return {
            "read": self.read,
            "spot": self.spot,
            "futures": self.futures,
            "margin": self.margin,
            "withdraw": self.withdraw,
            "transfer": self.transfer,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Permissions:
        return cls(**{k: data.get(k) for k in cls.__dataclass_fields__})


def status_of(findings: Iterable[Finding]) -> Status:
    """An error wins; then an incomplete check (transient) is `unknown`; then warnings."""
    severities = {f.severity for f in findings}
    if Severity.ERROR in severities:
        return Status.FAILING
    if Severity.TRANSIENT in severities:
        return Status.UNKNOWN
    if Severity.WARNING in severities:
        return Status.DEGRADED
    return Status.HEALTHY


def utc_now() -> datetime:
    return datetime.now(UTC)


def format_time(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass(frozen=True)
class Report:
    checked_at: datetime
    egress_ip: str | None
    permissions: Permissions = field(default_factory=Permissions)
    ip_restricted: bool | None = None
    ip_whitelist: tuple[str, ...] | None = None
    trading_expires_at: datetime | None = None
    findings: tuple[Finding, ...] = ()

    @property
    def status(self) -> Status:
        return status_of(self.findings)

    @property
    def codes(self) -> list[str]:
        return [f.code.value for f in self.findings]

    @property
    def credentials_unreadable(self) -> bool:
        """The stored credentials could not be decrypted: nothing was asked of the exchange."""
        return any(f.code is FindingCode.CREDENTIALS_UNREADABLE for f in self.findings)

    def with_findings(self, *extra: Finding) -> Report:
        """A copy with findings added in front (e.g. `whitespace_trimmed` from the API layer)."""
        return replace(self, findings=(*extra, *self.findings))

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status.value,
            "checked_at": format_time(self.checked_at),
            "egress_ip": self.egress_ip,
            "permissions": self.permissions.to_dict(),
            "ip_restricted": self.ip_restricted,
            "ip_whitelist": list(self.ip_whitelist) if self.ip_whitelist is not None else None,
            "trading_expires_at": format_time(self.trading_expires_at),
            "findings": [f.to_dict() for f in self.findings],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Report:
        whitelist = data.get("ip_whitelist")
        checked_at = parse_time(data["checked_at"])
        assert checked_at is not None
        return cls(
            checked_at=checked_at,
            egress_ip=data.get("egress_ip"),
            permissions=Permissions.from_dict(data.get("permissions") or {}),
            ip_restricted=data.get("ip_restricted"),
            ip_whitelist=tuple(whitelist) if whitelist is not None else None,
            trading_expires_at=parse_time(data.get("trading_expires_at")),
            findings=tuple(Finding.from_dict(f) for f in data.get("findings", [])),
        )
