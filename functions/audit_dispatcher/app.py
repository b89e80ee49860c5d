"""The scheduled audit's first step: enqueue one task per binding (EventBridge Scheduler, or
`{"run_id": ...}` from an operator who wants an audit now).

In the rolling mode (AUDIT_MODE=rolling) the schedule fires every few minutes and each event is a
tick: it enqueues only the bindings whose slot of the day is due, and once a day the summary of the
last 24 hours goes out. An operator's `{"run_id": ...}` is still a whole audit, as in the nightly mode.

Page reads and sends are retried with back-off (the container's sleep and jitter). When
dispatch gives up, the run says so (`dispatch_failed`) and covers the tasks that were sent;
the invocation fails (AuditDispatcherErrorsAlarm) and a run with nothing left to check is
finalised here first, so its alerts still go out."""

from __future__ import annotations

import re
from typing import Any

from keyhealth.audit.ports import RunState
from keyhealth.audit.usecases import (
    TICK_RUN_PREFIX,
    AuditDeps,
    DispatchFailed,
    dispatch_audit,
    dispatch_tick,
    finalize_if_complete,
)
from keyhealth.domain.model import format_time
from keyhealth.exchanges.registry import NAMES
from keyhealth.observability import emit_run_metrics, entry_point, logger
from keyhealth.wiring import container

_RUN_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


def requested_run_id(event: dict[str, Any]) -> str | None:
    """An operator's `{"run_id": ...}` (never a tick's: those are the schedule's)."""
    requested = event.get("run_id") if isinstance(event, dict) else None
    if isinstance(requested, str) and _RUN_ID.match(requested) and not requested.startswith(TICK_RUN_PREFIX):
        return requested
    return None


def new_run_id(event: dict[str, Any], context: Any, prefix: str = "") -> str:
    requested = requested_run_id(event)
    if requested is not None:
        return requested
    now = container().environment.now()
    return f"{prefix}{format_time(now)}-{getattr(context, 'aws_request_id', 'local')[:8]}"


@entry_point()
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    wired = container()
    deps = wired.audit
    env = wired.environment
    if deps.rolling is not None and requested_run_id(event) is None:
        return _tick(new_run_id(event, context, TICK_RUN_PREFIX), deps)
    run_id = new_run_id(event, context)
    logger.append_keys(run_id=run_id)
    try:
        state = dispatch_audit(
            run_id,
            wired.bindings,
            wired.task_queue,
            deps.runs,
            deps.services.now,
            exchanges=NAMES,
            sleep=env.sleep,
            jitter=env.jitter,
            egress_ips=wired.settings.audit_spread_ips,
        )
    except DispatchFailed as failed:
        _finalize_if_complete(run_id, deps, failed.state)
        raise
    _finalize_if_complete(run_id, deps, state)
    return {"run_id": run_id, "tasks": state.tasks_total}


def _tick(run_id: str, deps: AuditDeps) -> dict[str, Any]:
    logger.append_keys(run_id=run_id)
    wired = container()
    env = wired.environment
    outcome = dispatch_tick(
        run_id,
        wired.bindings,
        wired.task_queue,
        deps,
        exchanges=NAMES,
        sleep=env.sleep,
        jitter=env.jitter,
        egress_ips=wired.settings.audit_spread_ips,
    )  # a DispatchFailed fails the invocation (AuditDispatcherErrorsAlarm); the next tick dispatches again
    if outcome.state is None:
        return {"run_id": None, "tasks": 0}
    if outcome.finalized is not None:
        emit_run_metrics(outcome.finalized)
    return {"run_id": run_id, "tasks": outcome.state.tasks_total, "daily_summary": outcome.summary is not None}


def _finalize_if_complete(run_id: str, deps: AuditDeps, state: RunState) -> None:
    """Nothing to check (or every task checked during dispatch): nobody else will finalise the
    run, so summarise at once (an empty run still reports, so "audit not finished" stays quiet)."""
    summary = finalize_if_complete(run_id, deps, state)
    if summary is not None and state.dispatch_failed is None:  # a partial run is not a finished audit
        emit_run_metrics(summary)
