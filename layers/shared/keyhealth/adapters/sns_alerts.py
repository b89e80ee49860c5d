"""Publishes alerts to the SNS topic, with attributes subscribers filter on."""

from __future__ import annotations

from typing import Any

from keyhealth.adapters.aws_errors import storage_call
from keyhealth.notify.model import Alert


class SnsAlertPublisher:
    def __init__(self, client: Any, topic_arn: str) -> None:
        self._client = client
        self._topic_arn = topic_arn

    def publish(self, alert: Alert) -> None:
        with storage_call("sns:Publish"):
            self._client.publish(
                TopicArn=self._topic_arn,
                Subject=alert.subject,
                Message=alert.sns_message(),
                MessageStructure="json",
                MessageAttributes={
                    name: {"DataType": "String", "StringValue": value} for name, value in alert.attributes.items()
                },
            )
