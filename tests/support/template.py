"""The template reader lives in local/template.py (the local stack provisions moto with it too);
tests import it from here."""

from __future__ import annotations

from typing import Any

from local import template as _local
from local.template import (
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

__all__ = [
    "TEMPLATE",
    "CfnTag",
    "create_key",
    "create_queue",
    "create_table",
    "create_topic",
    "queue_attributes",
    "resource",
    "resources_of_type",
    "template",
]


def create_queue(sqs: Any, logical_id: str, name: str, *, queues: dict[str, str] | None = None) -> str:
    """A queue as the template declares it (timeouts, retention, redrive to its dead-letter queue,
    created first under `<name>-<its logical id>`); returns its URL. `queues` collects logical id -> ARN."""
    return _local.create_queue(
        sqs, logical_id, name_of=lambda made: name if made == logical_id else f"{name}-{made}", queues=queues
    )
