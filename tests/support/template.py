"""The template reader lives in local/template.py (the local stack provisions moto with it too);
tests import it from here."""

from __future__ import annotations

from typing import Any

from local.template import (  # noqa: F401 - re-exported for the tests
    TEMPLATE,
    CfnTag,
    create_key,
    create_table,
    create_topic,
    queue_attributes,
    resource,
    resources_of_type,
    template,
)


def create_queue(sqs: Any, logical_id: str, name: str, *, queues: dict[str, str] | None = None) -> str:
    """A queue as the template declares it (timeouts, retention, redrive to its dead-letter queue,
    created first under `<name>-<its logical id>`); returns its URL. `queues` collects logical id -> ARN."""
    arns = {} if queues is None else queues

    def arn_of(dlq_id: str) -> str:
        if dlq_id not in arns:
            create_queue(sqs, dlq_id, f"{name}-{dlq_id}", queues=arns)
        return arns[dlq_id]

    url = sqs.create_queue(QueueName=name, Attributes=queue_attributes(logical_id, arn_of))["QueueUrl"]
    arns[logical_id] = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return url
