"""Webhook deliverer: POSTs each queued event to its tenant's webhook, signed (docs/webhooks.md).

An SQS event source with partial batch responses: a delivery that failed is left on the queue with its
visibility set to its back-off (its next attempt), a delivery AWS kept from being attempted comes back after
the queue's visibility timeout; the others are deleted. After 24 hours of retries a delivery is
dead-lettered (WebhookDeadLettersAlarm) and the tenant's webhook shows it. Runs outside the VPC: it calls the
platforms, not the exchanges.
"""

from __future__ import annotations

import json
from typing import Any

from keyhealth.observability import entry_point, logger
from keyhealth.webhooks.usecases import ReceivedDelivery, deliver_batch
from keyhealth.wiring import container


@entry_point()
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    received = []
    for record in event.get("Records", []):
        try:
            body = json.loads(record["body"])
        except (KeyError, ValueError):
            body = None
        received.append(
            ReceivedDelivery(
                message_id=record.get("messageId", ""),
                receipt_handle=record.get("receiptHandle", ""),
                # A body that is not ours is dead-lettered as it came (keyhealth.webhooks.usecases).
                body=body if isinstance(body, dict) else {"malformed": str(record.get("body", ""))[:4096]},
                receive_count=int(record.get("attributes", {}).get("ApproximateReceiveCount", "1") or 1),
            )
        )
    counts = deliver_batch(received, container().webhooks)
    logger.info(
        "webhook batch",
        extra={
            "delivered": counts.delivered,
            "retrying": counts.retrying,
            "dead_lettered": counts.dead_lettered,
            "dropped": counts.dropped,
        },
    )
    return {"batchItemFailures": [{"itemIdentifier": message_id} for message_id in counts.failed_ids]}
