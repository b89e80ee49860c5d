"""The audit's use cases: dispatch a run, check a batch of bindings, finalise the run."""

from __future__ import annotations

import functools
import itertools
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from datetime import time as dt_time
from typing import Any, TypeVar

from keyhealth.audit.model import (
    EGRESS_OUTCOMES,
    NEWLY_FAILING_LISTED,
    Assessment,
    AuditTask,
    HeldAlert,
    Incident,
    as_found_by,
    assess,
    detect_incidents,
    egress_for,
    marked,
    release,
    summarise,
    with_egress_outcome,
)
from keyhealth.audit.ports import (
    BindingSource,
    Circuit,
    CircuitState,
    NotSent,
    RateBudget,
    RunState,
    RunStore,
    TaskDone,
    TaskQueue,
    TickStore,
)
from keyhealth.audit.rolling import DAY, RollingPlan, WindowIncident, judge_window, sum_counters
from keyhealth.bindings.model import Binding
from keyhealth.bindings.ports import Services
from keyhealth.domain.errors import ConcurrentUpdate, CredentialsUnreadable, StorageAdapterError
from keyhealth.domain.exchange import CheckResult, ExchangeName
from keyhealth.domain.findings import credentials_unreadable_report, make_finding
from keyhealth.domain.model import FindingCode, Report
from keyhealth.domain.ratelimits import RatePlan
from keyhealth.notify import model as alerts
from keyhealth.webhooks import model as webhook_events

logger = logging.getLogger(__name__)
T = TypeVar("T")

SEND_BATCH = 10  # SQS SendMessageBatch takes 10 messages
#: How long a finaliser holds its claim: longer than a worker invocation may run (its timeout,
#: 120 s), so a live finaliser is never taken over; shorter than the audit queues' visibility
#: timeout (720 s), so the batch redelivered after a finaliser died finds the claim expired.
FINALIZE_LEASE_SECONDS = 360.0


@dataclass(frozen=True)
class Backoff:
    """Bounded retries, exponential back-off with "equal jitter" (as the Slack webhook's)."""

    attempts: int  # calls in all, the first included
    base_delay: float  # the first wait's ceiling; doubles per retry
    max_delay: float

    def wait(self, retry: int, jitter: float) -> float:
        """Before retry `retry` (1, 2, ...): half the ceiling plus `jitter` (in [0, 1)) of the other half."""
        ceiling = min(self.max_delay, self.base_delay * 2.0 ** (retry - 1))
        return ceiling / 2 + jitter * ceiling / 2


#: A page read or a send of the dispatcher: 8 calls, at most ~23 s of waiting (0.1-0.2 s, then doubling to 10 s).
DISPATCH_BACKOFF = Backoff(attempts=8, base_delay=0.2, max_delay=10.0)
#: Recording a batch in its run: every batch's transaction updates the run item, so concurrent
#: workers' transactions conflict (TransactionConflict) now and then; 8 calls, at most ~3.6 s of waiting.
RECORD_BACKOFF = Backoff(attempts=8, base_delay=0.05, max_delay=1.0)


def retrying(
    call: Callable[[], T],
    backoff: Backoff,
    sleep: Callable[[float], None],
    jitter: Callable[[], float],
    what: str,
) -> T:
    """`call()`, again after a back-off while it fails with a StorageAdapterError; the last failure is raised.
    Only for calls that may be repeated: idempotent ones."""
    for attempt in range(1, backoff.attempts + 1):
        try:
            return call()
        except StorageAdapterError as error:
            if attempt == backoff.attempts:
                raise
            wait = backoff.wait(attempt, jitter())
            logger.warning("audit: retrying", extra={"call": what, "cause": str(error), "wait": wait})
            sleep(wait)
    raise AssertionError("unreachable")  # pragma: no cover


@dataclass
class AuditDeps:
    services: Services
    budget: RateBudget
    circuit: Circuit
    runs: RunStore
    plans: dict[ExchangeName, RatePlan]  # one per exchange the audit checks
    clock: Callable[[], float] = time.time
    max_wait_seconds: float = 20.0  # how long one invocation may wait for budget
    requeue_limit_seconds: float = 900.0  # a throttle longer than this is waited out by later runs
    sleep: Callable[[float], None] = time.sleep  # back-off between retries of the run's bookkeeping
    jitter: Callable[[], float] = random.random
    record_backoff: Backoff = RECORD_BACKOFF
    finalize_lease_seconds: float = FINALIZE_LEASE_SECONDS
    rolling: RollingDeps | None = None  # AUDIT_MODE=rolling: the ticks' state and schedule
    egress_ip: str | None = None  # the IP this worker's calls leave from (AUDIT_EGRESS_IP), if it is pinned to one


@dataclass
class RollingDeps:
    """The rolling audit (audit/rolling.py): a tick every `plan.tick_minutes` dispatches the due slots,
    incidents are judged over the last `incident_window`, a summary of the last 24 hours goes out once a
    day at `summary_at` (UTC)."""

    ticks: TickStore
    plan: RollingPlan
    incident_window: timedelta = timedelta(minutes=30)
    summary_at: dt_time = dt_time(6, 0)
    #: How long a dispatcher holds a tick: longer than it may run (its timeout, 900 s), so a live one is never
    #: taken over; a tick whose dispatcher died is dispatched again by the first tick after that.
    claim_lease_seconds: float = 900.0


# ------------------------------------------------------------------------------ dispatch
class DispatchFailed(Exception):
    """Dispatch gave up: a page read or a send failed on every attempt. The run was marked
    dispatched with the tasks that were sent and `dispatch_failed`, so it finishes over those
    (`state`) instead of waiting for tasks that will never come."""

    def __init__(self, run_id: str, reason: str, state: RunState) -> None:
        super().__init__(f"audit {run_id}: dispatch failed ({reason}); {state.tasks_total} tasks were sent")
        self.run_id = run_id
        self.reason = reason
        self.state = state


class _GaveUp(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Tally:
    def __init__(self) -> None:
        self.total = 0
        self._lock = threading.Lock()

    def add(self, count: int) -> None:
        with self._lock:
            self.total += count


def dispatch_audit(
    run_id: str,
    source: BindingSource,
    queue: TaskQueue,
    runs: RunStore,
    now: Callable[[], datetime],
    *,
    exchanges: Iterable[ExchangeName],
    parallelism: int = 8,
    sleep: Callable[[float], None] = time.sleep,
    jitter: Callable[[], float] = random.random,
    backoff: Backoff = DISPATCH_BACKOFF,
    keep: Callable[[str], bool] | None = None,
    egress_ips: Sequence[str] = (),
) -> RunState:
    """Enqueue one task per binding (`keep`: only the binding ids it accepts, as a rolling tick's due
    slots), reading every (exchange, shard) partition in parallel. With several `egress_ips`, each task
    names the IP its binding is checked from today (`egress_for`), and goes to that IP's queue.

    Pages are sent as they are read: memory does not grow with the number of bindings. A page
    read that fails is retried after a back-off by reading the shard again and skipping the
    bindings already taken (a shard is read in binding id order); a send that fails is retried
    with only the tasks SQS did not take. `tasks_total` counts each binding taken once, however
    many times its task was sent. When a read or a send fails on every attempt, the other
    partitions stop, the run is marked dispatched over what was sent with `dispatch_failed`, and
    `DispatchFailed` is raised.
    """
    started = now()
    runs.start(run_id, started)
    day = (started - datetime(1970, 1, 1, tzinfo=UTC)).days
    sent = _Tally()
    stop = threading.Event()  # one partition gave up: the others stop too

    def give_up_or_wait(failures: int, error: StorageAdapterError, what: str) -> None:
        if failures >= backoff.attempts or stop.is_set():
            raise _GaveUp(f"{error.operation}: {error.reason}") from error
        wait = backoff.wait(failures, jitter())
        logger.warning("audit dispatch: retrying", extra={"call": what, "cause": str(error), "wait": wait})
        sleep(wait)

    def send(chunk: list[AuditTask]) -> None:
        pending = chunk
        for failures in itertools.count(1):
            try:
                queue.send(pending)
                break
            except StorageAdapterError as error:
                if isinstance(error, NotSent):
                    pending = error.unsent  # the others were taken: never sent twice on purpose
                try:
                    give_up_or_wait(failures, error, "send")
                except _GaveUp:
                    sent.add(len(chunk) - len(pending))
                    raise
        sent.add(len(chunk))

    def read(exchange: ExchangeName, shard: int) -> Iterator[tuple[str, str]]:
        last: str | None = None  # the last binding id taken from this shard
        failures = 0
        while True:
            skip_to = last
            try:
                for tenant, binding_id in source.iter_exchange(exchange, shard):
                    if skip_to is not None and binding_id <= skip_to:
                        continue  # taken before the page read failed
                    last, failures = binding_id, 0
                    yield tenant, binding_id
                return
            except StorageAdapterError as error:
                failures += 1
                give_up_or_wait(failures, error, f"read {exchange} shard {shard}")

    def send_partition(exchange: ExchangeName, shard: int) -> None:
        chunk: list[AuditTask] = []
        try:
            for tenant, binding_id in read(exchange, shard):
                if stop.is_set():
                    return
                if keep is not None and not keep(binding_id):
                    continue
                chunk.append(AuditTask(run_id, exchange, tenant, binding_id, egress_for(binding_id, egress_ips, day)))
                if len(chunk) == SEND_BATCH:
                    send(chunk)
                    chunk = []
            if chunk:
                send(chunk)
        except BaseException:
            stop.set()  # before the next partition starts: what was sent is settled
            raise

    partitions = [(exchange, shard) for shard in range(source.shards) for exchange in exchanges]
    failure: BaseException | None = None
    with ThreadPoolExecutor(max_workers=parallelism) as pool:
        futures = [pool.submit(send_partition, exchange, shard) for exchange, shard in partitions]
        for future in as_completed(futures):
            if (error := future.exception()) is not None and failure is None:
                failure = error

    def dispatched(failed: str | None = None) -> RunState:
        return retrying(
            lambda: runs.dispatched(run_id, sent.total, failed=failed), backoff, sleep, jitter, "dispatched"
        )

    if failure is not None:
        reason = failure.reason if isinstance(failure, _GaveUp) else type(failure).__name__
        state = dispatched(reason)
        logger.error("audit dispatch failed", extra={"run_id": run_id, "reason": reason, "tasks": sent.total})
        raise DispatchFailed(run_id, reason, state) from failure
    state = dispatched()
    logger.info("audit dispatched", extra={"run_id": run_id, "tasks": sent.total})
    return state


# -------------------------------------------------------------------------------- worker
@dataclass
class BatchOutcome:
    retry: dict[str, float] = field(default_factory=dict)  # message id -> seconds before it is seen again
    done: int = 0  # tasks done with: recorded now, or recorded before (redelivered, sent twice)
    duplicates: int = 0  # of those, the ones their run had recorded already (or twice in this batch)
    finalized: list[dict[str, Any]] = field(default_factory=list)  # the summaries of the runs this batch finalised


class _Retry(Exception):
    def __init__(self, delay: float, reason: str) -> None:
        super().__init__(reason)
        self.delay = delay


STORAGE_RETRY_SECONDS = 5.0


def audit_batch(messages: Iterable[tuple[str, AuditTask]], deps: AuditDeps, *, concurrency: int = 10) -> BatchOutcome:
    """Check each task's binding; tasks that must wait (throttled exchange, no budget in time,
    storage errors) are returned for redelivery; the rest are recorded in their run, once per
    (run, binding) whatever the deliveries.

    A task the run has recorded already (its batch came back: the worker died after recording
    it, or the dispatcher sent it twice) is not checked again. A run this batch completes is
    finalised here; if that fails, the exception fails the invocation, the batch comes back
    after the queue's visibility timeout and finalises then (the claim has expired).
    """
    messages = list(messages)
    outcome = BatchOutcome()
    first: dict[tuple[str, str], str] = {}  # (run, binding) -> the message checked for it
    unique: list[tuple[str, AuditTask]] = []
    for message_id, task in messages:
        if first.setdefault((task.run_id, task.binding_id), message_id) == message_id:
            unique.append((message_id, task))
        else:  # the same task twice in one batch: checked once; the other copy is done with
            outcome.done += 1
            outcome.duplicates += 1

    def one(item: tuple[str, AuditTask]) -> tuple[str, AuditTask, TaskDone | None, float | None]:
        """(message id, task, its contribution (None: recorded before), the delay of a retry)."""
        message_id, task = item
        try:
            if deps.runs.is_done(task.run_id, task.binding_id):
                return message_id, task, None, None
            assessment = audit_one(task, deps)
        except _Retry as retry:
            return message_id, task, None, retry.delay
        except StorageAdapterError as error:
            logger.warning("audit task will be retried", extra={"binding_id": task.binding_id, "cause": str(error)})
            return message_id, task, None, STORAGE_RETRY_SECONDS
        if assessment is None:  # unbound since: done, nothing to count
            return message_id, task, TaskDone(task.binding_id), None
        return message_id, task, TaskDone(task.binding_id, assessment.counters, tuple(assessment.held)), None

    per_run: dict[str, list[tuple[str, TaskDone | None]]] = {}
    with ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(unique)))) as pool:
        for message_id, task, done, delay in pool.map(one, unique):
            if delay is not None:
                outcome.retry[message_id] = delay
            else:
                per_run.setdefault(task.run_id, []).append((message_id, done))

    for run_id, items in per_run.items():
        new = [done for _, done in items if done is not None]
        try:
            state = _record_in_run(deps, run_id, new)
        except StorageAdapterError as error:  # recording is idempotent: the tasks come back and record then
            logger.warning("audit tasks will be retried", extra={"run_id": run_id, "cause": str(error)})
            outcome.retry.update((message_id, STORAGE_RETRY_SECONDS) for message_id, _ in items)
            continue
        outcome.done += len(items)
        outcome.duplicates += len(items) - len(new)
        if state is not None and (summary := finalize_if_complete(run_id, deps, state)) is not None:
            outcome.finalized.append(summary)
    return outcome


def _record_in_run(deps: AuditDeps, run_id: str, new: list[TaskDone]) -> RunState | None:
    """Record the batch's new tasks (retried: recording is idempotent); none new: the run's state."""
    call: Callable[[], RunState | None] = (
        functools.partial(deps.runs.record, run_id, new) if new else functools.partial(deps.runs.load, run_id)
    )
    return retrying(call, deps.record_backoff, deps.sleep, deps.jitter, "record")


def finalize_if_complete(run_id: str, deps: AuditDeps, state: RunState) -> dict[str, Any] | None:
    """Finalise the run if it is complete and nobody else holds the claim: its summary, else None."""
    if not state.complete or state.finished:
        return None
    if not deps.runs.claim_finalization(run_id, now=deps.clock(), lease_seconds=deps.finalize_lease_seconds):
        return None
    if deps.rolling is not None and is_tick_run(run_id):
        return finalize_tick(run_id, deps, deps.rolling, state)
    return finalize_run(run_id, deps.runs, deps.services, state)


def audit_one(task: AuditTask, deps: AuditDeps) -> Assessment | None:
    """Check one binding and store the result. None when the binding is gone (unbound since)."""
    services = deps.services
    binding = services.bindings.get(task.tenant, task.binding_id)
    if binding is None:
        return None
    plan = deps.plans[binding.exchange]
    circuit = deps.circuit.state(binding.exchange)
    now = deps.clock()
    if circuit.remaining(now) > 0:
        if circuit.code == FindingCode.RATE_LIMITED.value and circuit.remaining(now) <= deps.requeue_limit_seconds:
            raise _Retry(circuit.remaining(now), "exchange throttled")
        # Banned, blocked or throttled for long: record that this key could not be asked now.
        return _record(deps, binding, _unasked_report(binding.exchange, circuit.code, services), task.run_id)

    cost = plan.audit_check_cost()
    if not deps.budget.acquire(binding.exchange, cost, deadline=now + deps.max_wait_seconds):
        raise _Retry(1.0, "no rate budget in time")
    try:
        credentials = services.secrets.read(binding.secret_id)
    except CredentialsUnreadable:
        # Not retried: a disabled key or a foreign ciphertext does not heal in seconds. Recorded as an
        # `unknown` check (stored status kept), with one alert to ops when first found (audit.model.assess).
        report = credentials_unreadable_report(services.checkers[binding.exchange].spec.ui, services.now())
        return _record(deps, binding, report, task.run_id)
    result = services.checkers[binding.exchange].check(credentials, binding.scopes, thorough=False)
    extra = {pool: w - cost.get(pool, 0) for pool, w in plan.cost(result.requests).items() if w > cost.get(pool, 0)}
    if extra:
        deps.budget.settle(binding.exchange, extra)
    _update_circuit(deps, plan, circuit, result)
    if FindingCode.RATE_LIMITED.value in result.report.codes:
        # Our own pacing was off (or other traffic shares the IP): check this key again later
        # rather than count it unknown.
        raise _Retry(max(result.retry_after or 0.0, plan.default_backoff_seconds), "throttled")
    ui = services.checkers[binding.exchange].spec.ui
    report, outcomes = with_egress_outcome(binding, result.report, task.egress_ip or deps.egress_ip, ui)
    return _record(deps, binding, report, task.run_id, extra={EGRESS_OUTCOMES: outcomes} if outcomes else None)


def _update_circuit(deps: AuditDeps, plan: RatePlan, state: CircuitState, result: CheckResult) -> None:
    codes = result.report.codes
    throttle = next((c for c in (FindingCode.RATE_LIMITED.value, FindingCode.EGRESS_BLOCKED.value) if c in codes), None)
    if throttle:
        backoff = min(plan.default_backoff_seconds * 2**state.strikes, plan.max_backoff_seconds)
        seconds = result.retry_after if result.retry_after else backoff
        if throttle == FindingCode.EGRESS_BLOCKED.value and not result.retry_after:
            seconds = plan.max_backoff_seconds  # a 451 does not clear by itself
        deps.circuit.trip(plan.exchange, seconds, throttle)
        logger.warning(
            "exchange circuit opened",
            extra={"exchange": plan.exchange, "seconds": seconds, "code": throttle},
        )
    elif state.strikes:
        deps.circuit.close(plan.exchange)


def _unasked_report(exchange: ExchangeName, code: str | None, services: Services) -> Report:
    finding = make_finding(
        FindingCode(code or FindingCode.EGRESS_BLOCKED.value),
        services.checkers[exchange].spec.ui,
        egress_ips=services.egress_ips,
        detail="Not asked in this audit: the exchange refused the platform's requests moments before.",
    )
    return Report(
        checked_at=services.now(),
        egress_ip=services.egress_ips[0] if services.egress_ips else None,
        findings=(finding,),
    )


def _record(
    deps: AuditDeps, binding: Binding, report: Report, run_id: str, *, extra: Mapping[str, Any] | None = None
) -> Assessment:
    """Store the check's outcome with optimistic locking; a concurrent write is re-read once. `extra`:
    Binding.extra entries to store with it (the per-IP outcomes).

    The check is assessed against the binding as this run found it (`as_found_by`): a second
    check in the same run, after a first one stored but never recorded, sees the same transition.
    """
    services = deps.services
    for attempt in (1, 2):
        exchange_name = services.checkers[binding.exchange].spec.display_name
        found = as_found_by(binding, run_id)
        assessment = assess(found, report, services.now(), exchange_name=exchange_name)
        assessment.binding = marked(assessment.binding, found, run_id, version=binding.version + 1)
        if extra:
            assessment.binding = replace(assessment.binding, extra={**assessment.binding.extra, **extra})
        try:
            services.bindings.save(assessment.binding, previous=binding)
            return assessment
        except ConcurrentUpdate:
            fresh = services.bindings.get(binding.tenant, binding.binding_id)
            if fresh is None or attempt == 2:
                raise StorageAdapterError("dynamodb:save", "concurrent update") from None
            binding = fresh
    raise AssertionError("unreachable")  # pragma: no cover


# ------------------------------------------------------------------------------ finalize
def tell_tenant(services: Services, run_id: str, held: HeldAlert) -> None:
    """The tenant's event for a held alert, whether ops get the alert or the incident that folds it: the
    platform tells each of its users. Keyed by run, binding and kind, so a finaliser that takes over a run
    publishes each event again under its first id (and the receiver dedupes the delivery)."""
    draft = webhook_events.draft_from_alert(held.alert.body)
    if draft is not None:
        services.events.publish(draft, dedupe_key=f"{run_id}:{held.binding_id}:{held.kind}")


def finalize_run(run_id: str, runs: RunStore, services: Services, state: RunState) -> dict[str, Any] | None:
    """Publish the run's alerts (folding correlated ones into incidents) and its summary, then
    store the summary: its summary, or None when another finaliser had stored it already.

    Held alerts are streamed, never all in memory; only the summary's bounded list is kept.
    At least once: a finaliser that dies part-way is taken over (the claim is a lease), and the
    one that takes over publishes everything again; the summary is computed from the run's
    counters, which count each binding once, and stored once.
    """
    counters = runs.counters(run_id)
    finished_at = services.now()
    incidents = detect_incidents(run_id, counters, finished_at)
    newly_failing: list[HeldAlert] = []
    for held in runs.held(run_id):
        if held.newly_failing and len(newly_failing) < NEWLY_FAILING_LISTED:
            newly_failing.append(held)
        for alert in release([held], incidents):
            services.alerts.publish(alert.alert)
        tell_tenant(services, run_id, held)
    names = {name: checker.spec.display_name for name, checker in services.checkers.items()}
    for item in incidents:
        services.alerts.publish(alerts.incident({**item.to_dict(), "exchange_name": names.get(item.exchange)}))
    newly_failing_count = sum(v for k, v in counters.items() if k.startswith("newly_failing."))
    summary = summarise(run_id, counters, newly_failing, incidents, state.started_at, finished_at)
    summary["newly_failing_count"] = newly_failing_count
    summary["exchange_names"] = {name: names[name] for name in summary["by_exchange"] if name in names}
    if state.dispatch_failed is not None:
        summary["dispatch_failed"] = state.dispatch_failed  # the run covers only the tasks that were sent
    services.alerts.publish(alerts.audit_summary(summary))
    if not runs.finish(run_id, summary, finished_at):
        logger.warning("audit finished by another finaliser", extra={"run_id": run_id})
        return None
    logger.info("audit finished", extra={"run_id": run_id, "checked": summary["counts"]["total"]})
    return summary


# ------------------------------------------------------------------------------- rolling
TICK_RUN_PREFIX = "tick-"  # a rolling tick's run; any other run (nightly, an operator's) is finalised as a whole audit


def is_tick_run(run_id: str) -> bool:
    return run_id.startswith(TICK_RUN_PREFIX)


@dataclass(frozen=True)
class TickOutcome:
    state: RunState | None  # the tick's run; None when nothing was due or another dispatcher holds the tick
    finalized: dict[str, Any] | None = None  # the tick run's summary when it was finalised here (nothing to check)
    summary: dict[str, Any] | None = None  # the daily summary this tick published


def dispatch_tick(
    run_id: str,
    source: BindingSource,
    queue: TaskQueue,
    deps: AuditDeps,
    *,
    exchanges: Iterable[ExchangeName],
    sleep: Callable[[float], None] = time.sleep,
    jitter: Callable[[], float] = random.random,
    egress_ips: Sequence[str] = (),
) -> TickOutcome:
    """One tick of the rolling audit: claim the window since the watermark, dispatch the bindings whose
    slot is due in it (run `run_id`, which must be a tick run), advance the watermark, finalise the run
    if nothing is left to check; then publish the daily summary when its time fell in the window.

    Two deliveries of one schedule never both dispatch (the claim); a dispatch that fails keeps the
    watermark, so the next tick dispatches those slots again (a binding checked twice, never skipped).
    """
    rolling = deps.rolling
    if rolling is None or not is_tick_run(run_id):
        raise ValueError(f"{run_id!r}: a tick needs the rolling mode and a {TICK_RUN_PREFIX}* run id")
    watermark = rolling.ticks.watermark()
    now = deps.services.now()
    due = rolling.plan.due(watermark, now)
    if not due.count:
        return TickOutcome(None)
    if not rolling.ticks.claim(run_id, watermark, now=now, lease_seconds=rolling.claim_lease_seconds):
        logger.info("audit tick: another dispatcher holds it", extra={"run_id": run_id})
        return TickOutcome(None)
    try:
        state = dispatch_audit(
            run_id,
            source,
            queue,
            deps.runs,
            lambda: now,
            exchanges=exchanges,
            sleep=sleep,
            jitter=jitter,
            keep=due.includes,
            egress_ips=egress_ips,
        )
    except DispatchFailed as failed:
        rolling.ticks.release(run_id)
        finalize_if_complete(run_id, deps, failed.state)  # what was sent still finishes, and its alerts go out
        raise
    rolling.ticks.advance(run_id, due.watermark)
    logger.info("audit tick dispatched", extra={"run_id": run_id, "slots": due.count, "tasks": state.tasks_total})
    finalized = finalize_if_complete(run_id, deps, state)
    summary_time = summary_due(due.after, due.through, rolling.summary_at)
    summary = daily_summary(deps, rolling, summary_time) if summary_time is not None else None
    return TickOutcome(state, finalized, summary)


def summary_due(after: datetime, through: datetime, at: dt_time) -> datetime | None:
    """The latest daily summary time in (`after`, `through`]: the tick that sends that day's summary."""
    candidate = datetime.combine(through.date(), at, tzinfo=through.tzinfo)
    if candidate > through:
        candidate -= DAY
    return candidate if candidate > after else None


def _tick_counters(runs: RunStore, run_id: str) -> dict[str, int]:
    """A tick's counters; none when its run never started (its dispatcher died between claim and start)."""
    return runs.counters(run_id) if runs.load(run_id) is not None else {}


def finalize_tick(run_id: str, deps: AuditDeps, rolling: RollingDeps, state: RunState) -> dict[str, Any] | None:
    """Finalise one tick's run: judge the sliding window (the counters of the ticks of the last
    `incident_window`), raise each incident it opens once, publish the run's held alerts except those
    an open incident explains, and store the tick's summary. The tick publishes no summary of its own:
    the daily summary covers it."""
    runs, services = deps.runs, deps.services
    now = services.now()
    window = rolling.ticks.ticks(now - rolling.incident_window, now)
    counters = sum_counters(_tick_counters(runs, t.run_id) for t in window if t.run_id != run_id)
    own = runs.counters(run_id)
    changes = judge_window(sum_counters((counters, own)), rolling.ticks.open_incidents(), now, rolling.incident_window)
    names = {name: checker.spec.display_name for name, checker in services.checkers.items()}
    raised: list[Incident] = []
    for opened in changes.opened:
        if rolling.ticks.open_incident(opened):  # another tick's finaliser may have opened it first
            incident = _as_incident(run_id, opened)
            raised.append(incident)
            services.alerts.publish(
                alerts.incident(
                    {
                        **incident.to_dict(),
                        "exchange_name": names.get(opened.exchange),
                        "window_minutes": int(rolling.incident_window.total_seconds() // 60),
                    }
                )
            )
    for held_incident in changes.held:
        rolling.ticks.hold_incident(held_incident)
    for closed in changes.closed:
        rolling.ticks.close_incident(closed)
        logger.info("audit incident closed", extra={"exchange": closed.exchange, "code": closed.code})
    newly_failing: list[HeldAlert] = []
    for held in runs.held(run_id):
        if held.newly_failing and len(newly_failing) < NEWLY_FAILING_LISTED:
            newly_failing.append(held)
        if held.kind == "trading_permission_expiring" or not changes.explains(held.exchange, held.code):
            services.alerts.publish(held.alert)
        tell_tenant(services, run_id, held)
    summary = summarise(run_id, own, newly_failing, raised, state.started_at, now)
    summary["newly_failing_count"] = sum(v for k, v in own.items() if k.startswith("newly_failing."))
    if state.dispatch_failed is not None:
        summary["dispatch_failed"] = state.dispatch_failed
    if not runs.finish(run_id, summary, now):
        return None
    logger.info("audit tick finished", extra={"run_id": run_id, "checked": summary["counts"]["total"]})
    return summary


def _as_incident(run_id: str, opened: WindowIncident) -> Incident:
    return Incident(run_id, opened.exchange, opened.code, opened.count, opened.total, opened.opened_at)


def daily_summary(deps: AuditDeps, rolling: RollingDeps, at: datetime) -> dict[str, Any] | None:
    """Publish the summary of the ticks claimed in the 24 hours before `at` (from `at` a day before, up
    to but not including the tick at `at`, which has only just been dispatched), once per day: the
    rolling audit's counterpart of a nightly run's summary. Ticks still running are counted as far as
    they have got (`ticks_unfinished` says how many)."""
    if not rolling.ticks.claim_summary(at.date().isoformat()):
        return None
    runs, services = deps.runs, deps.services
    second = timedelta(seconds=1)  # tick times are whole seconds: (at - DAY - 1 s, at - 1 s] is [at - DAY, at)
    ticks = rolling.ticks.ticks(at - DAY - second, at - second)
    counters: dict[str, int] = {}
    newly_failing: list[HeldAlert] = []
    unfinished = 0
    for tick in ticks:
        state = runs.load(tick.run_id)
        if state is None:
            continue
        unfinished += not state.finished
        counters = sum_counters((counters, runs.counters(tick.run_id)))
        if len(newly_failing) < NEWLY_FAILING_LISTED:
            newly_failing.extend(h for h in runs.held(tick.run_id) if h.newly_failing)
    incidents = [_as_incident(f"day-{at.date().isoformat()}", i) for i in rolling.ticks.incidents_opened(at - DAY, at)]
    names = {name: checker.spec.display_name for name, checker in services.checkers.items()}
    summary = summarise(f"day-{at.date().isoformat()}", counters, newly_failing, incidents, at - DAY, at)
    summary["mode"] = "rolling"
    summary["ticks"] = len(ticks)
    summary["ticks_unfinished"] = unfinished
    summary["newly_failing_count"] = sum(v for k, v in counters.items() if k.startswith("newly_failing."))
    summary["exchange_names"] = {name: names[name] for name in summary["by_exchange"] if name in names}
    services.alerts.publish(alerts.audit_summary(summary))
    logger.info("audit daily summary", extra={"day": at.date().isoformat(), "ticks": len(ticks)})
    return summary
