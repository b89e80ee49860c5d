"""The per-exchange circuit in DynamoDB (audit.ports.Circuit): pk `CIRCUIT#<exchange>` (a worker pinned to one
egress IP: `CIRCUIT#<exchange>#<egress IP>`, since a ban or a 429 is per IP), sk `CIRCUIT`."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from keyhealth.adapters.aws_errors import storage_call
from keyhealth.adapters.dynamodb_values import n, s
from keyhealth.audit.ports import CircuitState
from keyhealth.domain.errors import StorageAdapterError
from keyhealth.domain.exchange import ExchangeName


class DynamoCircuit:
    """Per-exchange back-off shared by all workers; read through a short cache (one read per
    second per worker, not one per check)."""

    def __init__(
        self,
        client: Any,
        table: str,
        *,
        clock: Callable[[], float] = time.time,
        cache_seconds: float = 1.0,
        egress_ip: str = "",
    ) -> None:
        self._ip_suffix = f"#{egress_ip}" if egress_ip else ""
        self._client = client
        self._table = table
        self._clock = clock
        self._cache_seconds = cache_seconds
        self._cache: dict[ExchangeName, tuple[float, CircuitState]] = {}
        self._lock = threading.Lock()

    def _key(self, exchange: ExchangeName) -> dict[str, Any]:
        return {"pk": s(f"CIRCUIT#{exchange}{self._ip_suffix}"), "sk": s("CIRCUIT")}

    def state(self, exchange: ExchangeName) -> CircuitState:
        now = self._clock()
        with self._lock:
            cached = self._cache.get(exchange)
            if cached and now - cached[0] < self._cache_seconds:
                return cached[1]
        with storage_call("dynamodb:GetItem(circuit)"):
            item = self._client.get_item(TableName=self._table, Key=self._key(exchange)).get("Item")
        state = (
            CircuitState(
                # A circuit item may hold only `strikes` (closed before it ever opened): then it is closed.
                open_until=float(item.get("open_until", {}).get("N", 0)),
                code=item.get("code", {}).get("S"),
                strikes=int(item.get("strikes", {}).get("N", 0)),
            )
            if item
            else CircuitState()
        )
        with self._lock:
            self._cache[exchange] = (now, state)
        return state

    def trip(self, exchange: ExchangeName, seconds: float, code: str) -> CircuitState:
        until = self._clock() + seconds
        try:
            with storage_call("dynamodb:UpdateItem(circuit)"):
                answer = self._client.update_item(
                    TableName=self._table,
                    Key=self._key(exchange),
                    UpdateExpression="SET open_until = :until, code = :code ADD strikes :one",
                    ConditionExpression="attribute_not_exists(open_until) OR open_until < :until",
                    ExpressionAttributeValues={":until": n(until), ":code": s(code), ":one": n(1)},
                    ReturnValues="ALL_NEW",
                )
        except StorageAdapterError as error:
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

    def close(self, exchange: ExchangeName) -> None:
        with storage_call("dynamodb:UpdateItem(circuit)"):
            self._client.update_item(
                TableName=self._table,
                Key=self._key(exchange),
                UpdateExpression="SET strikes = :zero",
                ExpressionAttributeValues={":zero": n(0)},
            )
        with self._lock:
            self._cache.pop(exchange, None)
