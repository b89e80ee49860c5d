"""The scheduled audit's first step: enqueue one task per binding (EventBridge Scheduler, or
`{"run_id": ...}` from an operator who wants an audit now).

Page reads and sends are retried with back-off (the container's sleep and jitter). When
dispatch gives up, the run says so (`dispatch_failed`) and covers the tasks that were sent;
the invocation fails (AuditDispatcherErrorsAlarm) and a run with nothing left to check is
finalised here first, so its alerts still go out."""

from __future__ import annotations

import re
from typing import Any

from keyhealth.audit.ports import RunState
from keyhealth.audit.usecases import AuditDeps, DispatchFailed, dispatch_audit, finalize_if_complete
from keyhealth.domain.model import format_time
from keyhealth.exchanges.registry import NAMES
from keyhealth.observability import emit_run_metrics, entry_point, logger
from keyhealth.wiring import container

_RUN_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


def new_run_id(event: dict[str, Any], context: Any) -> str:
    requested = event.get("run_id") if isinstance(event, dict) else None
    if isinstance(requested, str) and _RUN_ID.match(requested):
        return requested
    now = container().environment.now()
    return f"{format_time(now)}-{getattr(context, 'aws_request_id', 'local')[:8]}"


@entry_point()
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    run_id = new_run_id(event, context)
    logger.append_keys(run_id=run_id)
    wired = container()
    deps = wired.audit
    env = wired.environment
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
        )
    except DispatchFailed as failed:
        _finalize_if_complete(run_id, deps, failed.state)
        raise
    _finalize_if_complete(run_id, deps, state)
    return {"run_id": run_id, "tasks": state.tasks_total}


def _finalize_if_complete(run_id: str, deps: AuditDeps, state: RunState) -> None:
    """Nothing to check (or every task checked during dispatch): nobody else will finalise the
    run, so summarise at once (an empty run still reports, so "audit not finished" stays quiet)."""
    summary = finalize_if_complete(run_id, deps, state)
    if summary is not None and state.dispatch_failed is None:  # a partial run is not a finished audit
        emit_run_metrics(summary)
