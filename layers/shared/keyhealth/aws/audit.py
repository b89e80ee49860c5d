"""DynamoDB and SQS behind the audit's ports: the shared rate budget, the per-exchange
circuit, the run's bookkeeping, and the per-exchange work queues.

All state shares the bindings table under its own partition keys:

| item | pk | sk |
|---|---|---|
| rate budget of one pool | `BUDGET#<exchange>#<pool>` | `BUDGET` |
| circuit of one exchange | `CIRCUIT#<exchange>` | `CIRCUIT` |
| an audit run (state and counters) | `RUN#<run_id>` | `RUN` |
| an alert held until the run ends | `RUN#<run_id>` | `HELD#<binding_id>#<kind>` |

Run items expire (`ttl`) after RUN_TTL_DAYS.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError

from keyhealth.audit.model import AuditTask, HeldAlert
from keyhealth.audit.ports import CircuitState, RunState
from keyhealth.aws.errors import error_code, storage_call
from keyhealth.errors import StorageError
from keyhealth.model import Exchange, format_time, parse_time
from keyhealth.ratelimits import RatePlan

RUN_TTL_DAYS = 30


def _s(value: str) -> dict[str, str]:
    return {"S": value}


def _n(value: float) -> dict[str, str]:
    return {"N": repr(value) if isinstance(value, float) else str(value)}


class DynamoRateBudget:
    """One budget per (exchange, pool), shared by every worker: a fixed-window counter like
    the exchanges' own (Binance's minute windows start on the minute), holding `share` of the
    exchange's per-IP limit. One conditional UpdateItem per pool per check.

    With several egress IPs, a worker cannot know which NAT its request leaves from, so the
    budget is kept as if all traffic left from one IP: never more than one IP's share.
    """

    def __init__(
        self,
        client: Any,
        table: str,
        plans: Mapping[Exchange, RatePlan],
        *,
        share: float,
        window_scale: float = 1.0,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._client = client
        self._table = table
        self._plans = plans
        self._share = share
        self._scale = window_scale
        self._clock = clock
        self._sleep = sleep
        # Local leases: weight reserved from the shared window in small blocks, so that most
        # checks cost no DynamoDB write. A lease never outlives its window, and is at most a
        # fiftieth of the window's budget, so what a container leaves unspent is negligible.
        self._leases: dict[tuple[Exchange, str], tuple[int, int]] = {}  # -> (window index, weight left)
        self._lease_lock = threading.Lock()
        self._pool_locks: dict[tuple[Exchange, str], threading.RLock] = {}

    def _pool_lock(self, exchange: Exchange, pool: str) -> threading.RLock:
        with self._lease_lock:
            return self._pool_locks.setdefault((exchange, pool), threading.RLock())

    def window(self, exchange: Exchange, pool: str) -> tuple[float, int]:
        """(window length in seconds, budget per window) of one pool.

        `window_scale` (benchmarks) shrinks a window and its budget together: the rate stays
        the exchange's, and a short run still spans many windows.
        """
        return self._plans[exchange].window_budget(pool, self._share, self._scale)

    def acquire(self, exchange: Exchange, cost: Mapping[str, int], *, deadline: float) -> bool:
        return all(self._acquire_pool(exchange, pool, weight, deadline) for pool, weight in cost.items())

    def _acquire_pool(self, exchange: Exchange, pool: str, weight: int, deadline: float) -> bool:
        seconds, budget = self.window(exchange, pool)
        key = {"pk": _s(f"BUDGET#{exchange.value}#{pool}"), "sk": _s("BUDGET")}
        block = max(weight, min(10, budget // 50))
        while True:
            now = self._clock()
            index = int(now // seconds)
            # One reservation at a time per pool in this process: threads that find the lease
            # empty wait for the one reserving, then spend from its block instead of each
            # reserving their own.
            with self._pool_lock(exchange, pool):
                with self._lease_lock:
                    lease_index, left = self._leases.get((exchange, pool), (-1, 0))
                    if lease_index == index and left >= weight:
                        self._leases[(exchange, pool)] = (index, left - weight)
                        return True
                if self._reserve(key, index, block, budget):
                    with self._lease_lock:
                        # Read again: whatever was leased meanwhile in this window is kept.
                        lease_index, left = self._leases.get((exchange, pool), (-1, 0))
                        kept = left if lease_index == index else 0
                        self._leases[(exchange, pool)] = (index, kept + block - weight)
                    return True
                if block > weight and self._reserve(key, index, weight, budget):
                    return True  # the window's last few units, without a lease
            wait = (index + 1) * seconds - now  # this window is spent: wait for the next one
            if now + wait > deadline:
                return False
            self._sleep(wait + 0.001)

    def _reserve(self, key: dict[str, Any], index: int, weight: int, budget: int) -> bool:
        """Take `weight` from window `index` of the shared counter, if it fits."""
        tried_open = False
        while True:
            try:
                with storage_call("dynamodb:UpdateItem(budget)"):
                    self._client.update_item(
                        TableName=self._table,
                        Key=key,
                        UpdateExpression="SET #u = #u + :n",
                        ConditionExpression="#w = :w AND #u <= :room",
                        ExpressionAttributeNames={"#w": "window", "#u": "used"},
                        ExpressionAttributeValues={":w": _n(index), ":n": _n(weight), ":room": _n(budget - weight)},
                    )
                return True
            except StorageError as error:
                if "ConditionalCheckFailed" not in error.reason:
                    raise
            if tried_open:
                return False  # this window is spent
            # Either this window is spent, or the stored window is an older one: start ours.
            if self._open_window(key, index, weight):
                return True
            # Or another worker opened it between our two writes: it may still have room.
            tried_open = True

    def _open_window(self, key: dict[str, Any], index: int, weight: int) -> bool:
        """Start window `index` if the stored one is older; False if it is already current."""
        try:
            self._client.update_item(
                TableName=self._table,
                Key=key,
                UpdateExpression="SET #w = :w, #u = :n",
                ConditionExpression="attribute_not_exists(#w) OR #w < :w",
                ExpressionAttributeNames={"#w": "window", "#u": "used"},
                ExpressionAttributeValues={":w": _n(index), ":n": _n(weight)},
            )
            return True
        except ClientError as error:
            if error_code(error) == "ConditionalCheckFailedException":
                return False
            raise StorageError("dynamodb:UpdateItem(budget)", error_code(error)) from None

    def settle(self, exchange: Exchange, extra: Mapping[str, int]) -> None:
        for pool, weight in extra.items():
            seconds, _ = self.window(exchange, pool)
            index = int(self._clock() // seconds)
            with storage_call("dynamodb:UpdateItem(budget)"):
                try:
                    self._client.update_item(
                        TableName=self._table,
                        Key={"pk": _s(f"BUDGET#{exchange.value}#{pool}"), "sk": _s("BUDGET")},
                        UpdateExpression="ADD #u :n",
                        ConditionExpression="#w = :w",
                        ExpressionAttributeNames={"#w": "window", "#u": "used"},
                        ExpressionAttributeValues={":w": _n(index), ":n": _n(weight)},
                    )
                except ClientError as error:
                    if error_code(error) != "ConditionalCheckFailedException":
                        raise
                    # The window has turned since: the extra weight was spent in one that is over.

    def used(self, exchange: Exchange, pool: str) -> tuple[int, int]:
        """(window index, weight used) as stored: for tests and the benchmark."""
        item = self._client.get_item(
            TableName=self._table,
            Key={"pk": _s(f"BUDGET#{exchange.value}#{pool}"), "sk": _s("BUDGET")},
            ConsistentRead=True,
        ).get("Item", {})
        return int(item.get("window", {}).get("N", -1)), int(item.get("used", {}).get("N", 0))


class DynamoCircuit:
    """Per-exchange back-off shared by all workers; read through a short cache (one read per
    second per worker, not one per check)."""

    def __init__(
        self, client: Any, table: str, *, clock: Callable[[], float] = time.time, cache_seconds: float = 1.0
    ) -> None:
        self._client = client
        self._table = table
        self._clock = clock
        self._cache_seconds = cache_seconds
        self._cache: dict[Exchange, tuple[float, CircuitState]] = {}
        self._lock = threading.Lock()

    def _key(self, exchange: Exchange) -> dict[str, Any]:
        return {"pk": _s(f"CIRCUIT#{exchange.value}"), "sk": _s("CIRCUIT")}

    def state(self, exchange: Exchange) -> CircuitState:
        now = self._clock()
        with self._lock:
            cached = self._cache.get(exchange)
            if cached and now - cached[0] < self._cache_seconds:
                return cached[1]
        with storage_call("dynamodb:GetItem(circuit)"):
            item = self._client.get_item(TableName=self._table, Key=self._key(exchange)).get("Item")
        state = (
            CircuitState(
                open_until=float(item["open_until"]["N"]),
                code=item.get("code", {}).get("S"),
                strikes=int(item.get("strikes", {}).get("N", 0)),
            )
            if item
            else CircuitState()
        )
        with self._lock:
            self._cache[exchange] = (now, state)
        return state

    def trip(self, exchange: Exchange, seconds: float, code: str) -> CircuitState:
        until = self._clock() + seconds
        try:
            with storage_call("dynamodb:UpdateItem(circuit)"):
                answer = self._client.update_item(
                    TableName=self._table,
                    Key=self._key(exchange),
                    UpdateExpression="SET open_until = :until, code = :code ADD strikes :one",
                    ConditionExpression="attribute_not_exists(open_until) OR open_until < :until",
                    ExpressionAttributeValues={":until": _n(until), ":code": _s(code), ":one": _n(1)},
                    ReturnValues="ALL_NEW",
                )
        except StorageError as error:
            if "ConditionalCheckFailed" not in error.reason:
                raise
            # Already open for longer (another worker tripped it): that back-off stands.
            with self._lock:
                self._cache.pop(exchange, None)
            return self.state(exchange)
        item = answer["Attributes"]
        state = CircuitState(float(item["open_until"]["N"]), item["code"]["S"], int(item["strikes"]["N"]))
        with self._lock:
            self._cache[exchange] = (self._clock(), state)
        return state

    def close(self, exchange: Exchange) -> None:
        with storage_call("dynamodb:UpdateItem(circuit)"):
            self._client.update_item(
                TableName=self._table,
                Key=self._key(exchange),
                UpdateExpression="SET strikes = :zero",
                ExpressionAttributeValues={":zero": _n(0)},
            )
        with self._lock:
            self._cache.pop(exchange, None)


class DynamoRunStore:
    def __init__(self, client: Any, table: str) -> None:
        self._client = client
        self._table = table

    def _key(self, run_id: str) -> dict[str, Any]:
        return {"pk": _s(f"RUN#{run_id}"), "sk": _s("RUN")}

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
                    "type": _s("audit_run"),
                    "started_at": _s(format_time(started_at) or ""),
                    "tasks_done": _n(0),
                    "ttl": _n(int(started_at.timestamp()) + RUN_TTL_DAYS * 86400),
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
                ExpressionAttributeValues={":t": {"BOOL": True}, ":n": _n(tasks_total)},
                ReturnValues="ALL_NEW",
            )
        return self._state(run_id, answer["Attributes"])

    def record(self, run_id: str, counters: Mapping[str, int], held: list[HeldAlert], tasks_done: int) -> RunState:
        self._put_held(run_id, held)
        names: dict[str, str] = {}
        values: dict[str, Any] = {":done": _n(tasks_done)}
        parts = ["tasks_done :done"]
        for i, (name, value) in enumerate(sorted(counters.items())):
            names[f"#c{i}"] = f"c.{name}"
            values[f":c{i}"] = _n(value)
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
                        "pk": _s(f"RUN#{run_id}"),
                        "sk": _s(f"HELD#{h.binding_id}#{h.kind}"),
                        "data": _s(json.dumps(h.to_dict())),
                        "ttl": _n(int(time.time()) + RUN_TTL_DAYS * 86400),
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
                raise StorageError("dynamodb:BatchWriteItem(held)", "unprocessed items")

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
            raise StorageError("dynamodb:UpdateItem(run)", error_code(error)) from None

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
            "ExpressionAttributeValues": {":pk": _s(f"RUN#{run_id}"), ":held": _s("HELD#")},
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
                    ":at": _s(format_time(finished_at) or ""),
                    ":s": _s(json.dumps(summary)),
                },
            )


class SqsTaskQueue:
    """One queue per exchange, so that a throttled exchange's backlog never blocks another's."""

    def __init__(self, client: Any, queue_urls: Mapping[Exchange, str]) -> None:
        self._client = client
        self._urls = queue_urls

    def send(self, tasks: list[AuditTask]) -> None:
        by_exchange: dict[Exchange, list[AuditTask]] = {}
        for task in tasks:
            by_exchange.setdefault(task.exchange, []).append(task)
        for exchange, items in by_exchange.items():
            for start in range(0, len(items), 10):
                entries = [
                    {"Id": str(i), "MessageBody": task.to_json()} for i, task in enumerate(items[start : start + 10])
                ]
                with storage_call("sqs:SendMessageBatch"):
                    answer = self._client.send_message_batch(QueueUrl=self._urls[exchange], Entries=entries)
                if answer.get("Failed"):
                    raise StorageError("sqs:SendMessageBatch", f"{len(answer['Failed'])} messages refused")
