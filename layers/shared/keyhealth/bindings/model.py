"""Binding management's model: a binding (one user's key on one exchange, as keyhealth stores
it, never the secret), the commands that change one, their outcome, and the list query."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from keyhealth.domain.credentials import Credentials, KeyType
from keyhealth.domain.exchange import ExchangeName
from keyhealth.domain.model import Report, Scope, Status, format_time


@dataclass(frozen=True)
class Binding:
    binding_id: str
    tenant: str
    user_id: str
    exchange: ExchangeName
    label: str | None
    key_type: KeyType
    api_key_masked: str
    api_key_hash: str  # sha256 of the api key: finds the same key bound twice, reveals nothing
    scopes: tuple[Scope, ...]
    status: Status
    created_at: datetime
    updated_at: datetime
    secret_id: str
    last_checked_at: datetime | None = None
    last_report: Report | None = None
    account_id: str | None = None
    unknown_streak: int = 0  # consecutive checks the exchange could not answer
    version: int = 1  # optimistic locking: every write says which version it read
    extra: dict[str, Any] = field(default_factory=dict)  # room for later issues, kept on write

    def recorded(self, report: Report, *, now: datetime) -> Binding:
        """This binding after a check: a transient result never changes the stored status."""
        transient = report.status is Status.UNKNOWN
        # Credentials that could not be decrypted: the exchange was not asked at all, so the check neither
        # extends nor ends the streak of checks the exchange could not answer (`binding_unreachable`).
        streak = self.unknown_streak if report.credentials_unreadable else self.unknown_streak + 1 if transient else 0
        return replace(
            self,
            status=self.status if transient else report.status,
            last_report=report,
            last_checked_at=report.checked_at,
            updated_at=now,
            unknown_streak=streak,
        )

    @property
    def credentials_unreadable(self) -> bool:
        """Whether the last check found the stored credentials undecryptable (ops were told then)."""
        return self.last_report is not None and self.last_report.credentials_unreadable

    def to_public_dict(self) -> dict[str, Any]:
        """The contract's Binding: what a platform sees."""
        return {
            "binding_id": self.binding_id,
            "user_id": self.user_id,
            "exchange": self.exchange,
            "label": self.label,
            "key_type": self.key_type.value,
            "api_key_masked": self.api_key_masked,
            "scopes": [s.value for s in self.scopes],
            "status": self.status.value,
            "account_id": self.account_id,
            "created_at": format_time(self.created_at),
            "updated_at": format_time(self.updated_at),
            "last_checked_at": format_time(self.last_checked_at),
            "last_report": self.last_report.to_dict() if self.last_report else None,
        }


def api_key_hash(exchange: ExchangeName, api_key: str) -> str:
    """Finds the same key bound twice without storing it: sha256 of `exchange:api_key`."""
    return hashlib.sha256(f"{exchange}:{api_key}".encode()).hexdigest()


@dataclass(frozen=True)
class ListQuery:
    """Which of a tenant's bindings to list, newest first, one page at a time."""

    user_id: str | None = None
    exchange: ExchangeName | None = None
    status: Status | None = None
    limit: int = 50
    cursor: str | None = None


@dataclass(frozen=True)
class Page:
    items: list[Binding]
    next_cursor: str | None


@dataclass(frozen=True)
class BindCommand:
    user_id: str
    exchange: ExchangeName
    credentials: Credentials
    scopes: tuple[Scope, ...]
    label: str | None = None
    trimmed_fields: tuple[str, ...] = ()  # credentials whose surrounding whitespace was removed


@dataclass(frozen=True)
class RotateCommand:
    credentials: Credentials
    trimmed_fields: tuple[str, ...] = ()


@dataclass(frozen=True)
class Outcome:
    binding: Binding
    report: Report
    # Other bindings of the same exchange account (Binance uid, Bitget userId...) under other keys.
    same_account_bindings: tuple[str, ...] = ()
