"""The audit's use cases: dispatch a run, check a batch of bindings, finalise the run."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from keyhealth.audit.model import (
    NEWLY_FAILING_LISTED,
    Assessment,
    AuditTask,
    HeldAlert,
    assess,
    detect_incidents,
    release,
    summarise,
)
from keyhealth.audit.ports import BindingSource, Circuit, CircuitState, RateBudget, RunState, RunStore, TaskQueue
from keyhealth.bindings.model import Binding
from keyhealth.bindings.ports import Services
from keyhealth.domain.errors import ConcurrentUpdate, StorageAdapterError
from keyhealth.domain.exchange import CheckResult, ExchangeName
from keyhealth.domain.findings import make_finding
from keyhealth.domain.model import FindingCode, Report
from keyhealth.domain.ratelimits import RatePlan
from keyhealth.notify import model as alerts

logger = logging.getLogger(__name__)

SEND_BATCH = 10  # SQS SendMessageBatch takes 10 messages


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


# ------------------------------------------------------------------------------ dispatch
def dispatch_audit(
    run_id: str,
    source: BindingSource,
    queue: TaskQueue,
    runs: RunStore,
    now: Callable[[], datetime],
    *,
    exchanges: Iterable[ExchangeName],
    parallelism: int = 8,
) -> RunState:
    """Enqueue one task per binding, reading every (exchange, shard) partition in parallel.

    Pages are sent as they are read: memory does not grow with the number of bindings.
    """
    runs.start(run_id, now())

    def send_partition(exchange: ExchangeName, shard: int) -> int:
        sent, chunk = 0, []
        for tenant, binding_id in source.iter_exchange(exchange, shard):
            chunk.append(AuditTask(run_id, exchange, tenant, binding_id))
            if len(chunk) == SEND_BATCH:
                queue.send(chunk)
                sent, chunk = sent + len(chunk), []
        if chunk:
            queue.send(chunk)
            sent += len(chunk)
        return sent

    partitions = [(exchange, shard) for shard in range(source.shards) for exchange in exchanges]
    with ThreadPoolExecutor(max_workers=parallelism) as pool:
        total = sum(pool.map(lambda p: send_partition(*p), partitions))
    state = runs.dispatched(run_id, total)
    logger.info("audit dispatched", extra={"run_id": run_id, "tasks": total})
    return state


# -------------------------------------------------------------------------------- worker
@dataclass
class BatchOutcome:
    retry: dict[str, float] = field(default_factory=dict)  # message id -> seconds before it is seen again
    done: int = 0
    finalized: list[dict[str, Any]] = field(default_factory=list)  # the summaries of the runs this batch finalised


class _Retry(Exception):
    def __init__(self, delay: float, reason: str) -> None:
        super().__init__(reason)
        self.delay = delay


def audit_batch(messages: Iterable[tuple[str, AuditTask]], deps: AuditDeps, *, concurrency: int = 10) -> BatchOutcome:
    """Check each task's binding; tasks that must wait (throttled exchange, no budget in time,
    storage errors) are returned for redelivery; the rest are recorded in their run."""
    messages = list(messages)
    outcome = BatchOutcome()
    results: dict[str, list[Assessment]] = {}
    done_per_run: Counter[str] = Counter()

    def one(item: tuple[str, AuditTask]) -> tuple[str, AuditTask, Assessment | None, float | None]:
        message_id, task = item
        try:
            return message_id, task, audit_one(task, deps), None
        except _Retry as retry:
            return message_id, task, None, retry.delay
        except StorageAdapterError as error:
            logger.warning("audit task will be retried", extra={"binding_id": task.binding_id, "cause": str(error)})
            return message_id, task, None, 5.0

    with ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(messages)))) as pool:
        for message_id, task, assessment, delay in pool.map(one, messages):
            if delay is not None:
                outcome.retry[message_id] = delay
                continue
            done_per_run[task.run_id] += 1
            if assessment is not None:
                results.setdefault(task.run_id, []).append(assessment)

    for run_id, done in done_per_run.items():
        counters: Counter[str] = Counter()
        held: list[HeldAlert] = []
        for assessment in results.get(run_id, []):
            counters.update(assessment.counters)
            held.extend(assessment.held)
        state = deps.runs.record(run_id, counters, held, done)
        outcome.done += done
        if state.complete and deps.runs.claim_finalization(run_id):
            outcome.finalized.append(finalize_run(run_id, deps.runs, deps.services, state))
    return outcome


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
        return _record(deps, binding, _unasked_report(binding.exchange, circuit.code, services))

    cost = plan.audit_check_cost()
    if not deps.budget.acquire(binding.exchange, cost, deadline=now + deps.max_wait_seconds):
        raise _Retry(1.0, "no rate budget in time")
    credentials = services.secrets.read(binding.secret_id)
    result = services.checkers[binding.exchange].check(credentials, binding.scopes, thorough=False)
    extra = {pool: w - cost.get(pool, 0) for pool, w in plan.cost(result.requests).items() if w > cost.get(pool, 0)}
    if extra:
        deps.budget.settle(binding.exchange, extra)
    _update_circuit(deps, plan, circuit, result)
    if FindingCode.RATE_LIMITED.value in result.report.codes:
        # Our own pacing was off (or other traffic shares the IP): check this key again later
        # rather than count it unknown.
        raise _Retry(max(result.retry_after or 0.0, plan.default_backoff_seconds), "throttled")
    return _record(deps, binding, result.report)


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


def _record(deps: AuditDeps, binding: Binding, report: Report) -> Assessment:
    """Store the check's outcome with optimistic locking; a concurrent write is re-read once."""
    services = deps.services
    for attempt in (1, 2):
        exchange_name = services.checkers[binding.exchange].spec.display_name
        assessment = assess(binding, report, services.now(), exchange_name=exchange_name)
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
def finalize_run(run_id: str, runs: RunStore, services: Services, state: RunState) -> dict[str, Any]:
    """Publish the run's alerts (folding correlated ones into incidents) and its summary.

    Held alerts are streamed, never all in memory; only the summary's bounded list is kept.
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
    names = {name: checker.spec.display_name for name, checker in services.checkers.items()}
    for item in incidents:
        services.alerts.publish(alerts.incident({**item.to_dict(), "exchange_name": names.get(item.exchange)}))
    newly_failing_count = sum(v for k, v in counters.items() if k.startswith("newly_failing."))
    summary = summarise(run_id, counters, newly_failing, incidents, state.started_at, finished_at)
    summary["newly_failing_count"] = newly_failing_count
    summary["exchange_names"] = {name: names[name] for name in summary["by_exchange"] if name in names}
    services.alerts.publish(alerts.audit_summary(summary))
    runs.finish(run_id, summary, finished_at)
    logger.info("audit finished", extra={"run_id": run_id, "checked": summary["counts"]["total"]})
    return summary
