"""Audit worker: checks the bindings of an SQS batch within the shared rate budget.

Partial batch responses: a task that must wait (throttled exchange, no budget in time, an
AWS hiccup) is returned as a failure with its visibility set to when it may run again;
the others are deleted. A task failing every time reaches the dead-letter queue.
"""

from __future__ import annotations

import math
from functools import cache
from typing import Any

from aws_lambda_powertools import Logger
from botocore.exceptions import BotoCoreError, ClientError

from keyhealth.audit import runtime
from keyhealth.audit.model import AuditTask
from keyhealth.audit.usecases import audit_batch
from keyhealth.aws import clients
from keyhealth.config import settings
from keyhealth.observability import emit_run_metrics

logger = Logger(service="keyhealth", log_uncaught_exceptions=False)
MAX_VISIBILITY_SECONDS = 43_200  # SQS's own limit


@cache
def _queue_url(arn: str) -> str:
    """arn:aws:sqs:REGION:ACCOUNT:NAME -> the queue's URL, as the SQS client wants it."""
    account, name = arn.split(":")[4:6]
    return clients.client("sqs").get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account)["QueueUrl"]


@logger.inject_lambda_context(log_event=False, clear_state=True)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    records = event.get("Records", [])
    tasks, failures = [], []
    for record in records:
        try:
            tasks.append((record["messageId"], AuditTask.from_json(record["body"])))
        except (KeyError, ValueError):
            logger.error("malformed audit task", extra={"message_id": record.get("messageId")})
            failures.append({"itemIdentifier": record.get("messageId", "")})  # to the DLQ, in time
    outcome = audit_batch(tasks, runtime.audit_deps(), concurrency=settings().audit_concurrency)
    by_id = {r["messageId"]: r for r in records}
    for message_id, delay in outcome.retry.items():
        record = by_id[message_id]
        try:
            clients.client("sqs").change_message_visibility(
                QueueUrl=_queue_url(record["eventSourceARN"]),
                ReceiptHandle=record["receiptHandle"],
                VisibilityTimeout=min(max(math.ceil(delay), 1), MAX_VISIBILITY_SECONDS),  # never early
            )
        except (ClientError, BotoCoreError):  # best effort: the queue's own visibility timeout applies
            logger.warning("could not delay an audit task", extra={"message_id": message_id})
        failures.append({"itemIdentifier": message_id})
    for summary in outcome.finalized:
        emit_run_metrics(summary)
    logger.info("audit batch", extra={"done": outcome.done, "retried": len(outcome.retry)})
    return {"batchItemFailures": failures}
