"""Reads template.yaml and provisions its data resources (tables, queues, topic, KMS key) in moto.

One implementation for the test suite and the local stack, so neither can drift from what is
deployed: key schemas, indexes, TTL, queue timeouts and redrive policies come from the template.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import yaml

TEMPLATE = Path(__file__).resolve().parents[1] / "template.yaml"


class CfnTag:
    """An intrinsic function (!Ref, !GetAtt, !Sub...) kept as data."""

    def __init__(self, tag: str, value: Any) -> None:
        self.tag = tag
        self.value = value

    def __repr__(self) -> str:
        return f"{self.tag} {self.value!r}"


class _Loader(yaml.SafeLoader):
    pass


def _construct(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> CfnTag:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return CfnTag("!" + suffix, value)


_Loader.add_multi_constructor("!", _construct)


@cache
def template() -> dict[str, Any]:
    return yaml.load(TEMPLATE.read_text(), Loader=_Loader)  # noqa: S506 - SafeLoader subclass


def resource(name: str) -> dict[str, Any]:
    return template()["Resources"][name]


def has_resource(name: str) -> bool:
    return name in template()["Resources"]


def resources_of_type(kind: str) -> dict[str, dict[str, Any]]:
    return {name: r for name, r in template()["Resources"].items() if r["Type"] == kind}


def create_table(dynamodb: Any, logical_id: str, table_name: str) -> None:
    """Create a table exactly as the template declares it (schema, indexes, billing, TTL)."""
    props = resource(logical_id)["Properties"]
    params: dict[str, Any] = {
        "TableName": table_name,
        "KeySchema": props["KeySchema"],
        "AttributeDefinitions": props["AttributeDefinitions"],
        "BillingMode": props["BillingMode"],
    }
    if "GlobalSecondaryIndexes" in props:
        params["GlobalSecondaryIndexes"] = props["GlobalSecondaryIndexes"]
    dynamodb.create_table(**params)
    if ttl := props.get("TimeToLiveSpecification"):
        dynamodb.update_time_to_live(TableName=table_name, TimeToLiveSpecification=ttl)


def create_key(kms: Any, logical_id: str) -> str:
    """A KMS key with the template's description; returns its ARN."""
    props = resource(logical_id).get("Properties", {})
    return kms.create_key(Description=str(props.get("Description", logical_id)))["KeyMetadata"]["Arn"]


def create_topic(sns: Any, logical_id: str, name: str) -> str:
    """An SNS topic with the template's display name; returns its ARN (moto ignores its KMS key)."""
    props = resource(logical_id).get("Properties", {})
    attributes = {"DisplayName": str(props["DisplayName"])} if isinstance(props.get("DisplayName"), str) else {}
    return sns.create_topic(Name=name, Attributes=attributes)["TopicArn"]


# SQS queue properties that map one to one onto CreateQueue attributes (plain values only).
_QUEUE_ATTRIBUTES = (
    "DelaySeconds",
    "MaximumMessageSize",
    "MessageRetentionPeriod",
    "ReceiveMessageWaitTimeSeconds",
    "VisibilityTimeout",
    "FifoQueue",
    "ContentBasedDeduplication",
)


def queue_attributes(logical_id: str, arn_of: Callable[[str], str] | None = None) -> dict[str, str]:
    """CreateQueue attributes from a queue's template properties.

    `arn_of(logical_id)` resolves a redrive target (`!GetAtt DLQ.Arn`); without it the
    redrive policy is left out. KMS settings are left out: moto does not encrypt.
    """
    props = resource(logical_id).get("Properties", {})
    attributes: dict[str, str] = {}
    for name in _QUEUE_ATTRIBUTES:
        value = props.get(name)
        if isinstance(value, bool):
            attributes[name] = "true" if value else "false"
        elif isinstance(value, int | str):
            attributes[name] = str(value)
    redrive = props.get("RedrivePolicy")
    if isinstance(redrive, dict) and arn_of is not None:
        target = redrive.get("deadLetterTargetArn")
        if isinstance(target, CfnTag) and target.tag == "!GetAtt":
            target_id = (target.value if isinstance(target.value, str) else ".".join(target.value)).split(".")[0]
            attributes["RedrivePolicy"] = json.dumps(
                {"deadLetterTargetArn": arn_of(target_id), "maxReceiveCount": int(redrive.get("maxReceiveCount", 5))}
            )
    return attributes


def create_queue(
    sqs: Any, logical_id: str, *, name_of: Callable[[str], str], queues: dict[str, str] | None = None
) -> str:
    """A queue as the template declares it (timeouts, retention, redrive to its dead-letter queue,
    which is created first); returns its URL. `name_of(logical_id)` names each queue made;
    `queues` collects logical id -> ARN, so a dead-letter queue shared by several is made once."""
    arns = {} if queues is None else queues

    def arn_of(dlq_id: str) -> str:
        if dlq_id not in arns:
            create_queue(sqs, dlq_id, name_of=name_of, queues=arns)
        return arns[dlq_id]

    url = sqs.create_queue(QueueName=name_of(logical_id), Attributes=queue_attributes(logical_id, arn_of))["QueueUrl"]
    arns[logical_id] = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return url
