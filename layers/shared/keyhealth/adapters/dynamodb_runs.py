"""An audit run's bookkeeping in DynamoDB (audit.ports.RunStore).

| item | pk | sk |
|---|---|---|
| an audit run (state and counters) | `RUN#<run_id>` | `RUN` |
| an alert held until the run ends | `RUN#<run_id>` | `HELD#<binding_id>#<kind>` |

Run items expire (`ttl`) after RUN_TTL_DAYS.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError

from keyhealth.adapters.aws_errors import error_code, storage_call
from keyhealth.adapters.dynamodb_values import n, s
from keyhealth.audit.model import HeldAlert
from keyhealth.audit.ports import RunState
from keyhealth.domain.errors import StorageAdapterError
from keyhealth.domain.model import format_time, parse_time

RUN_TTL_DAYS = 30


class DynamoRunStore:
    def __init__(self, client: Any, table: str) -> None:
        self._client = client
        self._table = table

    def _key(self, run_id: str) -> dict[str, Any]:
        return {"pk": s(f"RUN#{run_id}"), "sk": s("RUN")}

    @staticmethod
    def _state(run_id: str, item: dict[str, Any]) -> RunState:
        started = parse_time(item["started_at"]["S"])
        assert started is not None
        return RunState(
            run_id=run_id,
            started_at=started,
            dispatch_done=item.get("dispatch_done", {}).get("BOOL", False),
            tasks_total=int(item.get("tasks_total", {}).get("N", 0)),
            tasks_done=int(item.get("tasks_done", {}).get("N", 0)),
            finished=item.get("finished", {}).get("BOOL", False),
        )

    def start(self, run_id: str, started_at: datetime) -> RunState:
        with storage_call("dynamodb:PutItem(run)"):
            self._client.put_item(
                TableName=self._table,
                Item={
                    **self._key(run_id),
                    "type": s("audit_run"),
                    "started_at": s(format_time(started_at) or ""),
                    "tasks_done": n(0),
                    "ttl": n(int(started_at.timestamp()) + RUN_TTL_DAYS * 86400),
                },
                ConditionExpression="attribute_not_exists(pk)",
            )
        return RunState(run_id, started_at)

    def dispatched(self, run_id: str, tasks_total: int) -> RunState:
        with storage_call("dynamodb:UpdateItem(run)"):
            answer = self._client.update_item(
                TableName=self._table,
                Key=self._key(run_id),
                UpdateExpression="SET dispatch_done = :t, tasks_total = :n",
                ExpressionAttributeValues={":t": {"BOOL": True}, ":n": n(tasks_total)},
                ReturnValues="ALL_NEW",
            )
        return self._state(run_id, answer["Attributes"])

    def record(self, run_id: str, counters: Mapping[str, int], held: list[HeldAlert], tasks_done: int) -> RunState:
        self._put_held(run_id, held)
        names: dict[str, str] = {}
        values: dict[str, Any] = {":done": n(tasks_done)}
        parts = ["tasks_done :done"]
        for i, (name, value) in enumerate(sorted(counters.items())):
            names[f"#c{i}"] = f"c.{name}"
            values[f":c{i}"] = n(value)
            parts.append(f"#c{i} :c{i}")
        params: dict[str, Any] = {
            "TableName": self._table,
            "Key": self._key(run_id),
            "UpdateExpression": "ADD " + ", ".join(parts),
            "ExpressionAttributeValues": values,
            "ReturnValues": "ALL_NEW",
        }
        if names:
            params["ExpressionAttributeNames"] = names
        with storage_call("dynamodb:UpdateItem(run)"):
            answer = self._client.update_item(**params)
        return self._state(run_id, answer["Attributes"])

    def _put_held(self, run_id: str, held: list[HeldAlert]) -> None:
        # SQS may deliver a task twice, even in one batch; one BatchWriteItem refuses duplicate keys.
        held = list({(h.binding_id, h.kind): h for h in held}.values())
        requests = [
            {
                "PutRequest": {
                    "Item": {
                        "pk": s(f"RUN#{run_id}"),
                        "sk": s(f"HELD#{h.binding_id}#{h.kind}"),
                        "data": s(json.dumps(h.to_dict())),
                        "ttl": n(int(time.time()) + RUN_TTL_DAYS * 86400),
                    }
                }
            }
            for h in held
        ]
        for start in range(0, len(requests), 25):
            pending = {self._table: requests[start : start + 25]}
            for _ in range(5):
                with storage_call("dynamodb:BatchWriteItem(held)"):
                    answer = self._client.batch_write_item(RequestItems=pending)
                pending = answer.get("UnprocessedItems") or {}
                if not pending:
                    break
            if pending:
                raise StorageAdapterError("dynamodb:BatchWriteItem(held)", "unprocessed items")

    def claim_finalization(self, run_id: str) -> bool:
        try:
            self._client.update_item(
                TableName=self._table,
                Key=self._key(run_id),
                UpdateExpression="SET finalizing = :t",
                ConditionExpression="attribute_not_exists(finalizing) AND dispatch_done = :t "
                "AND tasks_done >= tasks_total",
                ExpressionAttributeValues={":t": {"BOOL": True}},
            )
            return True
        except ClientError as error:
            if error_code(error) == "ConditionalCheckFailedException":
                return False
            raise StorageAdapterError("dynamodb:UpdateItem(run)", error_code(error)) from None

    def load(self, run_id: str) -> RunState | None:
        with storage_call("dynamodb:GetItem(run)"):
            item = self._client.get_item(TableName=self._table, Key=self._key(run_id), ConsistentRead=True).get("Item")
        return self._state(run_id, item) if item else None

    def counters(self, run_id: str) -> dict[str, int]:
        with storage_call("dynamodb:GetItem(run)"):
            item = self._client.get_item(TableName=self._table, Key=self._key(run_id), ConsistentRead=True)["Item"]
        return {name[2:]: int(value["N"]) for name, value in item.items() if name.startswith("c.")}

    def held(self, run_id: str) -> Iterator[HeldAlert]:
        params: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :held)",
            "ExpressionAttributeValues": {":pk": s(f"RUN#{run_id}"), ":held": s("HELD#")},
        }
        while True:
            with storage_call("dynamodb:Query(held)"):
                answer = self._client.query(**params)
            for item in answer.get("Items", []):
                yield HeldAlert.from_dict(json.loads(item["data"]["S"]))
            if "LastEvaluatedKey" not in answer:
                return
            params["ExclusiveStartKey"] = answer["LastEvaluatedKey"]

    def finish(self, run_id: str, summary: dict[str, Any], finished_at: datetime) -> None:
        with storage_call("dynamodb:UpdateItem(run)"):
            self._client.update_item(
                TableName=self._table,
                Key=self._key(run_id),
                UpdateExpression="SET finished = :t, finished_at = :at, summary = :s",
                ExpressionAttributeValues={
                    ":t": {"BOOL": True},
                    ":at": s(format_time(finished_at) or ""),
                    ":s": s(json.dumps(summary)),
                },
            )
