"""An audit run's bookkeeping in DynamoDB (audit.ports.RunStore).

| item | pk | sk |
|---|---|---|
| an audit run (state and counters) | `RUN#<run_id>` | `RUN` |
| a binding recorded in the run (its task counted) | `RUN#<run_id>` | `DONE#<binding_id>` |
| an alert held until the run ends | `RUN#<run_id>` | `HELD#<binding_id>#<kind>` |

Run items expire (`ttl`) after RUN_TTL_DAYS.

Recording is idempotent per (run, binding): one TransactWriteItems adds a batch's counters and
tasks done to the run item, puts its held alerts, and puts a `DONE#` marker per binding on
condition that it does not exist. When a marker exists (a redelivered message, a task the
dispatcher sent twice) the transaction is cancelled and written again without those tasks. A
batch of 10 tasks is at most 1 + 10 x (1 marker + 3 held alerts) = 41 items (DynamoDB takes 100).

Finalisation is claimed with a lease (`finalizing_until`): a finaliser that died is taken over
once it has expired; `finish` stores the summary once.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from keyhealth.adapters.aws_errors import error_code, storage_call
from keyhealth.adapters.dynamodb_values import n, s
from keyhealth.audit.model import HeldAlert
from keyhealth.audit.ports import RunState, TaskDone
from keyhealth.domain.errors import StorageAdapterError
from keyhealth.domain.model import format_time, parse_time

RUN_TTL_DAYS = 30
#: DynamoDB's limits on one TransactWriteItems: 100 actions, 4 MB (kept well below).
MAX_TRANSACTION_ITEMS = 100
MAX_TRANSACTION_BYTES = 2_000_000
RECORD = "dynamodb:TransactWriteItems(record)"


class DynamoRunStore:
    def __init__(self, client: Any, table: str) -> None:
        self._client = client
        self._table = table

    def _key(self, run_id: str, sk: str = "RUN") -> dict[str, Any]:
        return {"pk": s(f"RUN#{run_id}"), "sk": s(sk)}

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
            dispatch_failed=item.get("dispatch_failed", {}).get("S"),
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

    def dispatched(self, run_id: str, tasks_total: int, *, failed: str | None = None) -> RunState:
        update = "SET dispatch_done = :t, tasks_total = :n"
        values: dict[str, Any] = {":t": {"BOOL": True}, ":n": n(tasks_total)}
        if failed is not None:
            update += ", dispatch_failed = :why"
            values[":why"] = s(failed)
        with storage_call("dynamodb:UpdateItem(run)"):
            answer = self._client.update_item(
                TableName=self._table,
                Key=self._key(run_id),
                UpdateExpression=update,
                ExpressionAttributeValues=values,
                ReturnValues="ALL_NEW",
            )
        return self._state(run_id, answer["Attributes"])

    def is_done(self, run_id: str, binding_id: str) -> bool:
        with storage_call("dynamodb:GetItem(done)"):
            answer = self._client.get_item(
                TableName=self._table,
                Key=self._key(run_id, f"DONE#{binding_id}"),
                ConsistentRead=True,
                ProjectionExpression="pk",
            )
        return "Item" in answer

    # ------------------------------------------------------------------ record
    def record(self, run_id: str, tasks: Sequence[TaskDone]) -> RunState:
        unique: dict[str, TaskDone] = {}
        for task in tasks:  # SQS may deliver a task twice, even in one batch: the first one counts
            unique.setdefault(task.binding_id, task)
        for chunk in self._chunks(list(unique.values())):
            self._record_once(run_id, chunk)
        state = self.load(run_id)
        if state is None:
            raise StorageAdapterError("dynamodb:GetItem(run)", "no such run")
        return state

    @staticmethod
    def _held(task: TaskDone) -> list[HeldAlert]:
        return list({h.kind: h for h in task.held}.values())  # one per kind: one item each

    def _chunks(self, tasks: list[TaskDone]) -> Iterator[list[TaskDone]]:
        """Tasks in groups that fit one transaction (a batch of 10 always does)."""
        chunk: list[TaskDone] = []
        items, size = 1, 0
        for task in tasks:
            held = self._held(task)
            task_items = 1 + len(held)
            task_size = sum(len(json.dumps(h.to_dict())) for h in held) + 200
            if chunk and (items + task_items > MAX_TRANSACTION_ITEMS or size + task_size > MAX_TRANSACTION_BYTES):
                yield chunk
                chunk, items, size = [], 1, 0
            chunk.append(task)
            items, size = items + task_items, size + task_size
        if chunk:
            yield chunk

    def _record_once(self, run_id: str, tasks: list[TaskDone]) -> None:
        """One transaction: the tasks' counters and done count, their held alerts, a marker each.
        Cancelled because some markers exist: again without those tasks, until none is left."""
        while tasks:
            actions, markers = self._actions(run_id, tasks)
            try:
                self._client.transact_write_items(TransactItems=actions)
                return
            except ClientError as error:
                if error_code(error) != "TransactionCanceledException":
                    raise StorageAdapterError(RECORD, error_code(error)) from None
                reasons = [str(r.get("Code")) for r in error.response.get("CancellationReasons", [])]
                recorded = {
                    binding_id
                    for index, binding_id in markers.items()
                    if index < len(reasons) and reasons[index] == "ConditionalCheckFailed"
                }
                if not recorded:  # a conflict with another transaction, throttling: the caller retries
                    why = ",".join(sorted(set(reasons) - {"None"})) or "cancelled"
                    raise StorageAdapterError(RECORD, why) from None
                tasks = [t for t in tasks if t.binding_id not in recorded]
            except BotoCoreError as error:  # connection failures, timeouts (it may have been written)
                raise StorageAdapterError(RECORD, type(error).__name__) from None

    def _actions(self, run_id: str, tasks: list[TaskDone]) -> tuple[list[dict[str, Any]], dict[int, str]]:
        counters: Counter[str] = Counter()
        for task in tasks:
            counters.update(task.counters)
        names: dict[str, str] = {}
        values: dict[str, Any] = {":done": n(len(tasks))}
        parts = ["tasks_done :done"]
        for i, (name, value) in enumerate(sorted(counters.items())):
            names[f"#c{i}"] = f"c.{name}"
            values[f":c{i}"] = n(value)
            parts.append(f"#c{i} :c{i}")
        update: dict[str, Any] = {
            "TableName": self._table,
            "Key": self._key(run_id),
            "UpdateExpression": "ADD " + ", ".join(parts),
            "ExpressionAttributeValues": values,
        }
        if names:
            update["ExpressionAttributeNames"] = names
        ttl = n(int(time.time()) + RUN_TTL_DAYS * 86400)
        actions: list[dict[str, Any]] = [{"Update": update}]
        markers: dict[int, str] = {}  # action index -> the binding whose marker it puts
        for task in tasks:
            markers[len(actions)] = task.binding_id
            actions.append(
                {
                    "Put": {
                        "TableName": self._table,
                        "Item": {**self._key(run_id, f"DONE#{task.binding_id}"), "ttl": ttl},
                        "ConditionExpression": "attribute_not_exists(pk)",
                    }
                }
            )
            for held in self._held(task):
                actions.append(
                    {
                        "Put": {
                            "TableName": self._table,
                            "Item": {
                                **self._key(run_id, f"HELD#{held.binding_id}#{held.kind}"),
                                "data": s(json.dumps(held.to_dict())),
                                "ttl": ttl,
                            },
                        }
                    }
                )
        return actions, markers

    # -------------------------------------------------------------- finalise
    def claim_finalization(self, run_id: str, *, now: float, lease_seconds: float) -> bool:
        try:
            self._client.update_item(
                TableName=self._table,
                Key=self._key(run_id),
                UpdateExpression="SET finalizing_until = :until",
                ConditionExpression="dispatch_done = :t AND tasks_done >= tasks_total "
                "AND (attribute_not_exists(finished) OR finished = :f) "
                "AND (attribute_not_exists(finalizing_until) OR finalizing_until <= :now)",
                ExpressionAttributeValues={
                    ":t": {"BOOL": True},
                    ":f": {"BOOL": False},
                    ":now": n(float(now)),
                    ":until": n(float(now + lease_seconds)),
                },
            )
            return True
        except ClientError as error:
            if error_code(error) == "ConditionalCheckFailedException":
                return False
            raise StorageAdapterError("dynamodb:UpdateItem(run)", error_code(error)) from None
        except BotoCoreError as error:
            raise StorageAdapterError("dynamodb:UpdateItem(run)", type(error).__name__) from None

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

    def finish(self, run_id: str, summary: dict[str, Any], finished_at: datetime) -> bool:
        try:
            self._client.update_item(
                TableName=self._table,
                Key=self._key(run_id),
                UpdateExpression="SET finished = :t, finished_at = :at, summary = :s",
                ConditionExpression="attribute_not_exists(finished) OR finished = :f",
                ExpressionAttributeValues={
                    ":t": {"BOOL": True},
                    ":f": {"BOOL": False},
                    ":at": s(format_time(finished_at) or ""),
                    ":s": s(json.dumps(summary)),
                },
            )
            return True
        except ClientError as error:
            if error_code(error) == "ConditionalCheckFailedException":
                return False
            raise StorageAdapterError("dynamodb:UpdateItem(run)", error_code(error)) from None
        except BotoCoreError as error:
            raise StorageAdapterError("dynamodb:UpdateItem(run)", type(error).__name__) from None
