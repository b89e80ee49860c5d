"""The Slack notifier's AWS side: the webhook URL in Secrets Manager, undeliverable messages in SQS."""

from __future__ import annotations

import json
from typing import Any

from keyhealth.aws.errors import storage_call
from keyhealth.credentials import Secret
from keyhealth.slack_delivery import webhook_url_from_secret


def read_webhook_url(client: Any, secret_arn: str) -> Secret:
    """The secret string is the URL itself or JSON `{"url": ...}`; it never leaves as a plain str."""
    with storage_call("secretsmanager:GetSecretValue"):
        secret_string = client.get_secret_value(SecretId=secret_arn)["SecretString"]
    return webhook_url_from_secret(secret_string)


class SqsDeadLetters:
    """The queue where messages Slack did not take wait for a person (or a redrive)."""

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
