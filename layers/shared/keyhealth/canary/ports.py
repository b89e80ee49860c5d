"""What the egress canary keeps between runs: the last probe per (egress IP, exchange)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from keyhealth.domain.exchange import ExchangeName
from keyhealth.domain.model import format_time


@dataclass(frozen=True)
class CanaryState:
    """The last probe of one exchange from one egress IP, and since when it has been down (None: up)."""

    egress_ip: str
    exchange: ExchangeName
    ok: bool
    checked_at: datetime
    latency_ms: float
    clock_offset_ms: int | None = None
    code: str | None = None
    down_since: datetime | None = None

    @property
    def down(self) -> bool:
        return self.down_since is not None

    def to_public_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "code": self.code,
            "latency_ms": round(self.latency_ms, 1),
            "clock_offset_ms": self.clock_offset_ms,
            "checked_at": format_time(self.checked_at),
            "down_since": format_time(self.down_since),
        }


class CanaryStore(Protocol):
    def last(self, egress_ip: str, exchange: ExchangeName) -> CanaryState | None: ...

    def save(self, state: CanaryState, *, previous: CanaryState | None) -> bool:
        """Store `state` if the stored one is still `previous` (None: none stored): False when another
        canary of the same IP stored a newer one meanwhile (it raises the alerts, not this one)."""

    def all(self) -> list[CanaryState]: ...
