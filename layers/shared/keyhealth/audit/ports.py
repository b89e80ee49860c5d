"""What the audit needs from the outside: a shared rate budget, a circuit per exchange, the
run's bookkeeping, the work queue and a way to read every binding of an exchange."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from keyhealth.audit.model import AuditTask, HeldAlert
from keyhealth.audit.rolling import WindowIncident
from keyhealth.domain.errors import StorageAdapterError
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
    tasks_total: int = 0  # distinct bindings dispatched (not messages sent: a send may be repeated)
    tasks_done: int = 0  # distinct bindings recorded
    finished: bool = False
    dispatch_failed: str | None = None  # why dispatch stopped early: the run covers what was sent

    @property
    def complete(self) -> bool:
        return self.dispatch_done and self.tasks_done >= self.tasks_total


@dataclass(frozen=True)
class TaskDone:
    """One task's contribution to its run: its binding's counters and held alerts, and one task done."""

    binding_id: str
    counters: Mapping[str, int] = field(default_factory=dict)
    held: tuple[HeldAlert, ...] = ()


class RunStore(Protocol):
    def start(self, run_id: str, started_at: datetime) -> RunState: ...

    def dispatched(self, run_id: str, tasks_total: int, *, failed: str | None = None) -> RunState:
        """Dispatch is over: `tasks_total` bindings were sent (`failed`: why it stopped early)."""

    def is_done(self, run_id: str, binding_id: str) -> bool:
        """True once a task of this binding was recorded in the run (a redelivery needs no check)."""

    def record(self, run_id: str, tasks: Sequence[TaskDone]) -> RunState:
        """Count each task once per (run, binding): its counters, its held alerts and one task done,
        all or nothing. A task whose binding the run has recorded already (a redelivered message,
        a send repeated by the dispatcher, the same message twice in a batch) adds nothing."""

    def claim_finalization(self, run_id: str, *, now: float, lease_seconds: float) -> bool:
        """True when the run is complete, not finished, and no other claim is live: the caller
        holds a lease until `now + lease_seconds`. A finaliser that died is taken over once its
        lease has expired."""

    def load(self, run_id: str) -> RunState | None: ...

    def counters(self, run_id: str) -> dict[str, int]: ...

    def held(self, run_id: str) -> Iterator[HeldAlert]: ...

    def finish(self, run_id: str, summary: dict[str, Any], finished_at: datetime) -> bool:
        """Store the summary and mark the run finished, once: False when it was finished already."""


class NotSent(StorageAdapterError):
    """Some tasks did not reach their queue: `unsent` (refused entries, or a call that failed, in
    which case SQS may have taken them after all). The others were sent: never send them again."""

    def __init__(self, operation: str, reason: str, unsent: list[AuditTask]) -> None:
        super().__init__(operation, reason)
        self.unsent = unsent


class TaskQueue(Protocol):
    def send(self, tasks: list[AuditTask]) -> None:
        """Enqueue `tasks`; raises `NotSent` naming those that may not have been enqueued."""


class BindingSource(Protocol):
    shards: int

    def iter_exchange(self, exchange: ExchangeName, shard: int) -> Iterator[tuple[str, str]]:
        """(tenant, binding_id) of every binding of `exchange` in `shard`, page by page, in ascending
        binding_id order: a reader whose page read failed reads the shard again and skips what it
        has seen."""


@dataclass(frozen=True)
class Tick:
    """One tick of the rolling audit: the run that checks its due bindings, and when it was claimed."""

    run_id: str
    started_at: datetime


class TickStore(Protocol):
    """The rolling audit's state between ticks (audit/rolling.py): the watermark, the claim of the tick
    in progress, the log of ticks (for the sliding window and the daily summary), the open incidents
    and the daily summaries sent."""

    def watermark(self) -> datetime | None:
        """The `now` of the last tick whose dispatch completed; None before the first."""

    def claim(self, run_id: str, expected: datetime | None, *, now: datetime, lease_seconds: float) -> bool:
        """True when the watermark is still `expected` and no other claim is live: the caller holds the
        tick until `now + lease_seconds` and the tick is logged. A dispatcher that died is taken over once
        its lease has expired."""

    def advance(self, run_id: str, watermark: datetime) -> None:
        """The tick's dispatch completed: store `watermark` and drop the claim (held by `run_id`)."""

    def release(self, run_id: str) -> None:
        """The tick's dispatch failed: drop the claim, keep the watermark (the next tick dispatches again)."""

    def ticks(self, since: datetime, until: datetime) -> list[Tick]:
        """The ticks claimed in (`since`, `until`], oldest first."""

    def open_incidents(self) -> list[WindowIncident]: ...

    def open_incident(self, incident: WindowIncident) -> bool:
        """Store a newly opened incident, and log it for the daily summary: False when another finaliser
        opened it first (raise it once)."""

    def incidents_opened(self, since: datetime, until: datetime) -> list[WindowIncident]:
        """The incidents opened in (`since`, `until`], oldest first, open or closed since."""

    def hold_incident(self, incident: WindowIncident) -> None:
        """The rule still holds for an open incident: store its new `held_at`."""

    def close_incident(self, incident: WindowIncident) -> None: ...

    def claim_summary(self, day: str) -> bool:
        """True once per `day` (the summary's date): the caller publishes that day's summary."""
