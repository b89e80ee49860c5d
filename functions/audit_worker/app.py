"""Audit worker: checks the bindings of an SQS batch within the shared rate budget.

Partial batch responses: a task that must wait (throttled exchange, no budget in time, an
AWS hiccup) is returned as a failure with its visibility set to when it may run again;
the others are deleted. A task failing every time reaches the dead-letter queue.

Redeliveries are safe: a run counts each binding once (a task it has recorded is not checked
again), and a run whose finaliser died is finalised by the batch that comes back after the
queue's visibility timeout (the invocation fails when finalising fails).

The same function is the egress canary of its IP: its schedule's `{"source": "keyhealth.canary"}` event
asks each exchange's public time endpoint from this worker's subnet (keyhealth.canary).
"""

from __future__ import annotations

from typing import Any

from keyhealth.audit.model import AuditTask
from keyhealth.audit.usecases import audit_batch
from keyhealth.canary.usecases import run_canary
from keyhealth.domain.errors import StorageAdapterError
from keyhealth.observability import emit_run_metrics, entry_point, logger, record_canary
from keyhealth.wiring import container

CANARY_SOURCE = "keyhealth.canary"


@entry_point()
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    if isinstance(event, dict) and event.get("source") == CANARY_SOURCE:
        return _canary()
    records = event.get("Records", [])
    tasks, failures = [], []
    for record in records:
        try:
            tasks.append((record["messageId"], AuditTask.from_json(record["body"])))
        except (KeyError, ValueError):
            logger.error("malformed audit task", extra={"message_id": record.get("messageId")})
            failures.append({"itemIdentifier": record.get("messageId", "")})  # to the DLQ, in time
    wired = container()
    outcome = audit_batch(tasks, wired.audit, concurrency=wired.settings.audit_concurrency)
    by_id = {r["messageId"]: r for r in records}
    for message_id, delay in outcome.retry.items():
        record = by_id[message_id]
        try:
            wired.redelivery.delay(record["eventSourceARN"], record["receiptHandle"], delay)
        except StorageAdapterError:  # best effort: the queue's own visibility timeout applies
            logger.warning("could not delay an audit task", extra={"message_id": message_id})
        failures.append({"itemIdentifier": message_id})
    for summary in outcome.finalized:
        if "dispatch_failed" not in summary:  # a partial run is not a finished audit (AuditNotFinishedAlarm)
            emit_run_metrics(summary)
    logger.info(
        "audit batch",
        extra={"done": outcome.done, "duplicates": outcome.duplicates, "retried": len(outcome.retry)},
    )
    return {"batchItemFailures": failures}


def _canary() -> dict[str, Any]:
    wired = container()
    egress_ip = wired.settings.egress_ips_from_here[0] if wired.settings.egress_ips_from_here else "unknown"
    states = run_canary(
        egress_ip,
        wired.checkers,
        wired.canary_store,
        wired.services.alerts,
        wired.environment.now,
        record=record_canary,
    )
    return {"egress_ip": egress_ip, "down": sorted(s.exchange for s in states if s.down)}
