"""Messages that could not be delivered (Slack, webhooks), kept in an SQS queue (notify.ports.DeadLetters)."""

from __future__ import annotations

import json
from typing import Any

from keyhealth.adapters.aws_errors import storage_call


class SqsDeadLetters:
    """The queue where messages that were not taken wait for a person (or a redrive)."""

    def __init__(self, client: Any, queue_url: str) -> None:
        self._client = client
        self._queue_url = queue_url

    def send(self, letter: dict[str, Any], *, reason: str, message_type: str) -> None:
        with storage_call("sqs:SendMessage"):
            self._client.send_message(
                QueueUrl=self._queue_url,
                MessageBody=json.dumps(letter),
                MessageAttributes={
                    "reason": {"DataType": "String", "StringValue": reason},
                    "type": {"DataType": "String", "StringValue": message_type},
                },
            )
