"""Audit worker: checks the bindings of an SQS batch within the shared rate budget.

Partial batch responses: a task that must wait (throttled exchange, no budget in time, an
AWS hiccup) is returned as a failure with its visibility set to when it may run again;
the others are deleted. A task failing every time reaches the dead-letter queue.

Redeliveries are safe: a run counts each binding once (a task it has recorded is not checked
again), and a run whose finaliser died is finalised by the batch that comes back after the
queue's visibility timeout (the invocation fails when finalising fails).
"""

from __future__ import annotations

from typing import Any

from keyhealth.audit.model import AuditTask
from keyhealth.audit.usecases import audit_batch
from keyhealth.domain.errors import StorageAdapterError
from keyhealth.observability import emit_run_metrics, entry_point, logger
from keyhealth.wiring import container


@entry_point()
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
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
