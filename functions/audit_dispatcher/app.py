"""The scheduled audit's first step: enqueue one task per binding (EventBridge Scheduler, or
`{"run_id": ...}` from an operator who wants an audit now)."""

from __future__ import annotations

import re
from typing import Any

from keyhealth.audit.usecases import dispatch_audit, finalize_run
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
    state = dispatch_audit(run_id, wired.bindings, wired.task_queue, deps.runs, deps.services.now, exchanges=NAMES)
    if state.complete and deps.runs.claim_finalization(run_id):
        # Nothing to check: summarise at once (an empty run still reports, so "audit not finished" stays quiet).
        emit_run_metrics(finalize_run(run_id, deps.runs, deps.services, state))
    return {"run_id": run_id, "tasks": state.tasks_total}
