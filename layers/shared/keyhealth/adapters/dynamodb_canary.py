"""The egress canary's last results in DynamoDB (canary.ports.CanaryStore), in the bindings table: pk
`CANARY`, sk `<egress IP>#<exchange>`, one item each (at most 4 IPs x the exchanges: one Query reads all).

A save is conditional on the stored result being the one the canary read (its `checked_at`), so of two canaries
of one IP running at once (a late schedule and the next), one stores its result and raises the alerts."""

from __future__ import annotations

from typing import Any

from keyhealth.adapters.aws_errors import conditional, storage_call
from keyhealth.adapters.dynamodb_values import n, s
from keyhealth.canary.ports import CanaryState
from keyhealth.domain.exchange import ExchangeName
from keyhealth.domain.model import format_time, parse_time

PK = "CANARY"


class DynamoCanaryStore:
    def __init__(self, client: Any, table: str) -> None:
        self._client = client
        self._table = table

    @staticmethod
    def _key(egress_ip: str, exchange: ExchangeName) -> dict[str, Any]:
        return {"pk": s(PK), "sk": s(f"{egress_ip}#{exchange}")}

    @staticmethod
    def _state(item: dict[str, Any]) -> CanaryState:
        checked = parse_time(item["checked_at"]["S"])
        assert checked is not None
        return CanaryState(
            egress_ip=item["egress_ip"]["S"],
            exchange=item["exchange"]["S"],
            ok=item["ok"]["BOOL"],
            checked_at=checked,
            latency_ms=float(item["latency_ms"]["N"]),
            clock_offset_ms=int(item["clock_offset_ms"]["N"]) if "clock_offset_ms" in item else None,
            code=item["code"]["S"] if "code" in item else None,
            down_since=parse_time(item["down_since"]["S"]) if "down_since" in item else None,
        )

    def last(self, egress_ip: str, exchange: ExchangeName) -> CanaryState | None:
        with storage_call("dynamodb:GetItem(canary)"):
            item = self._client.get_item(
                TableName=self._table, Key=self._key(egress_ip, exchange), ConsistentRead=True
            ).get("Item")
        return self._state(item) if item else None

    def save(self, state: CanaryState, *, previous: CanaryState | None) -> bool:
        item: dict[str, Any] = {
            **self._key(state.egress_ip, state.exchange),
            "egress_ip": s(state.egress_ip),
            "exchange": s(state.exchange),
            "ok": {"BOOL": state.ok},
            "checked_at": s(format_time(state.checked_at) or ""),
            "latency_ms": n(round(state.latency_ms, 3)),
        }
        if state.clock_offset_ms is not None:
            item["clock_offset_ms"] = n(state.clock_offset_ms)
        if state.code is not None:
            item["code"] = s(state.code)
        if state.down_since is not None:
            item["down_since"] = s(format_time(state.down_since) or "")
        condition: dict[str, Any]
        if previous is None:
            condition = {"ConditionExpression": "attribute_not_exists(pk)"}
        else:
            condition = {
                "ConditionExpression": "checked_at = :seen",
                "ExpressionAttributeValues": {":seen": s(format_time(previous.checked_at) or "")},
            }
        return conditional(
            "dynamodb:PutItem(canary)", self._client.put_item, TableName=self._table, Item=item, **condition
        )

    def all(self) -> list[CanaryState]:
        with storage_call("dynamodb:Query(canary)"):
            answer = self._client.query(
                TableName=self._table,
                KeyConditionExpression="pk = :pk",
                ExpressionAttributeValues={":pk": s(PK)},
            )  # at most 4 IPs x a handful of exchanges: one page
        return [self._state(item) for item in answer.get("Items", [])]
