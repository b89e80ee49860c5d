"""The webhook delivery queue in SQS (webhooks.ports.DeliveryQueue).

A message names the event (tenant, event id, when it was queued), never its payload. A failed attempt is
retried by changing the received message's visibility to the back-off (at most SQS's 12 hours) and leaving
it on the queue (the deliverer reports it as a batch item failure): the message is received again then,
with ApproximateReceiveCount one higher, which is the attempt number.
"""

from __future__ import annotations

import json
from typing import Any

from keyhealth.adapters.aws_errors import storage_call
from keyhealth.webhooks.model import Delivery

MAX_VISIBILITY_SECONDS = 43_200  # SQS's limit


class SqsDeliveryQueue:
    def __init__(self, client: Any, queue_url: str) -> None:
        self._client = client
        self._queue_url = queue_url

    def enqueue(self, delivery: Delivery) -> None:
        with storage_call("sqs:SendMessage(webhook delivery)"):
            self._client.send_message(QueueUrl=self._queue_url, MessageBody=json.dumps(delivery.to_message()))

    def postpone(self, receipt_handle: str, seconds: int) -> None:
        with storage_call("sqs:ChangeMessageVisibility(webhook delivery)"):
            self._client.change_message_visibility(
                QueueUrl=self._queue_url,
                ReceiptHandle=receipt_handle,
                VisibilityTimeout=max(0, min(MAX_VISIBILITY_SECONDS, seconds)),
            )
