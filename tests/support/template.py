"""Reads template.yaml and provisions its data resources in moto, so tests cannot drift
from what is deployed (key schemas, indexes, TTL, encryption keys, topics)."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import yaml

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"


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
