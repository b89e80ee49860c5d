"""What the audit needs from the outside: a shared rate budget, a circuit per exchange, the
run's bookkeeping, the work queue and a way to read every binding of an exchange."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from keyhealth.audit.model import AuditTask, HeldAlert
from keyhealth.domain.exchange import ExchangeName


class RateBudget(Protocol):
    def acquire(self, exchange: ExchangeName, cost: Mapping[str, int], *, deadline: float) -> bool:
        """Reserve `cost` (weight per pool) before a check; wait for the next window if the
        current one is spent, but not past `deadline`. False when not granted in time."""

    def settle(self, exchange: ExchangeName, extra: Mapping[str, int]) -> None:
        """Charge what a check spent beyond its reservation (a resync, a UTA fallback)."""


@dataclass(frozen=True)
class CircuitState:
    open_until: float = 0.0
    code: str | None = None
    strikes: int = 0

    def remaining(self, now: float) -> float:
        return max(0.0, self.open_until - now)


class Circuit(Protocol):
    def state(self, exchange: ExchangeName) -> CircuitState: ...

    def trip(self, exchange: ExchangeName, seconds: float, code: str) -> CircuitState: ...

    def close(self, exchange: ExchangeName) -> None: ...


@dataclass(frozen=True)
class RunState:
    run_id: str
    started_at: datetime
    dispatch_done: bool = False
    tasks_total: int = 0
    tasks_done: int = 0
    finished: bool = False

    @property
    def complete(self) -> bool:
        return self.dispatch_done and self.tasks_done >= self.tasks_total


class RunStore(Protocol):
    def start(self, run_id: str, started_at: datetime) -> RunState: ...

    def dispatched(self, run_id: str, tasks_total: int) -> RunState: ...

    def record(self, run_id: str, counters: Mapping[str, int], held: list[HeldAlert], tasks_done: int) -> RunState:
        """Add a batch's counters and held alerts, and count its tasks as done."""

    def claim_finalization(self, run_id: str) -> bool:
        """True for exactly one caller, once the run is complete."""

    def load(self, run_id: str) -> RunState | None: ...

    def counters(self, run_id: str) -> dict[str, int]: ...

    def held(self, run_id: str) -> Iterator[HeldAlert]: ...

    def finish(self, run_id: str, summary: dict[str, Any], finished_at: datetime) -> None: ...


class TaskQueue(Protocol):
    def send(self, tasks: list[AuditTask]) -> None: ...


class BindingSource(Protocol):
    shards: int

    def iter_exchange(self, exchange: ExchangeName, shard: int) -> Iterator[tuple[str, str]]:
        """(tenant, binding_id) of every binding of `exchange` in `shard`, page by page."""
