"""The audit's shared rate budget in DynamoDB (audit.ports.RateBudget).

One item per (exchange, pool, egress IP) in the bindings table: pk `BUDGET#<exchange>#<pool>` (with several
egress IPs `BUDGET#<exchange>#<pool>#<egress IP>`: the exchanges count per IP), sk `BUDGET`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from botocore.exceptions import ClientError

from keyhealth.adapters.aws_errors import error_code, storage_call
from keyhealth.adapters.dynamodb_values import n, s
from keyhealth.domain.errors import StorageAdapterError
from keyhealth.domain.exchange import ExchangeName
from keyhealth.domain.ratelimits import RatePlan


class DynamoRateBudget:
    """One budget per (exchange, pool), shared by every worker: a fixed-window counter like
    the exchanges' own (Binance's minute windows start on the minute), holding `share` of the
    exchange's per-IP limit. One conditional UpdateItem per pool per check.

    An audit worker pinned to one egress IP (`egress_ip`: its NAT's subnet only) spends that IP's budget;
    without one (a worker whose requests may leave from any NAT) the budget is kept as if all traffic
    left from one IP: never more than one IP's share.
    """

    def __init__(
        self,
        client: Any,
        table: str,
        plans: Mapping[ExchangeName, RatePlan],
        *,
        share: float,
        window_scale: float = 1.0,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        egress_ip: str = "",
    ) -> None:
        self._client = client
        self._table = table
        self._ip_suffix = f"#{egress_ip}" if egress_ip else ""
        self._plans = plans
        self._share = share
        self._scale = window_scale
        self._clock = clock
        self._sleep = sleep
        # Local leases: weight reserved from the shared window in small blocks, so that most
        # checks cost no DynamoDB write. A lease never outlives its window, and is at most a
        # fiftieth of the window's budget, so what a container leaves unspent is negligible.
        self._leases: dict[tuple[ExchangeName, str], tuple[int, int]] = {}  # -> (window index, weight left)
        self._lease_lock = threading.Lock()
        self._pool_locks: dict[tuple[ExchangeName, str], threading.RLock] = {}

    def _pool_lock(self, exchange: ExchangeName, pool: str) -> threading.RLock:
        with self._lease_lock:
            return self._pool_locks.setdefault((exchange, pool), threading.RLock())

    def window(self, exchange: ExchangeName, pool: str) -> tuple[float, int]:
        """(window length in seconds, budget per window) of one pool.

        `window_scale` (benchmarks) shrinks a window and its budget together: the rate stays
        the exchange's, and a short run still spans many windows.
        """
        return self._plans[exchange].window_budget(pool, self._share, self._scale)

    def acquire(self, exchange: ExchangeName, cost: Mapping[str, int], *, deadline: float) -> bool:
        return all(self._acquire_pool(exchange, pool, weight, deadline) for pool, weight in cost.items())

    def _acquire_pool(self, exchange: ExchangeName, pool: str, weight: int, deadline: float) -> bool:
        seconds, budget = self.window(exchange, pool)
        key = {"pk": s(f"BUDGET#{exchange}#{pool}{self._ip_suffix}"), "sk": s("BUDGET")}
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
                        ExpressionAttributeValues={":w": n(index), ":n": n(weight), ":room": n(budget - weight)},
                    )
                return True
            except StorageAdapterError as error:
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
                ExpressionAttributeValues={":w": n(index), ":n": n(weight)},
            )
            return True
        except ClientError as error:
            if error_code(error) == "ConditionalCheckFailedException":
                return False
            raise StorageAdapterError("dynamodb:UpdateItem(budget)", error_code(error)) from None

    def settle(self, exchange: ExchangeName, extra: Mapping[str, int]) -> None:
        for pool, weight in extra.items():
            seconds, _ = self.window(exchange, pool)
            index = int(self._clock() // seconds)
            with storage_call("dynamodb:UpdateItem(budget)"):
                try:
                    self._client.update_item(
                        TableName=self._table,
                        Key={"pk": s(f"BUDGET#{exchange}#{pool}{self._ip_suffix}"), "sk": s("BUDGET")},
                        UpdateExpression="ADD #u :n",
                        ConditionExpression="#w = :w",
                        ExpressionAttributeNames={"#w": "window", "#u": "used"},
                        ExpressionAttributeValues={":w": n(index), ":n": n(weight)},
                    )
                except ClientError as error:
                    if error_code(error) != "ConditionalCheckFailedException":
                        raise
                    # The window has turned since: the extra weight was spent in one that is over.

    def used(self, exchange: ExchangeName, pool: str) -> tuple[int, int]:
        """(window index, weight used) as stored: for tests and the benchmark."""
        item = self._client.get_item(
            TableName=self._table,
            Key={"pk": s(f"BUDGET#{exchange}#{pool}{self._ip_suffix}"), "sk": s("BUDGET")},
            ConsistentRead=True,
        ).get("Item", {})
        return int(item.get("window", {}).get("N", -1)), int(item.get("used", {}).get("N", 0))
