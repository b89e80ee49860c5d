"""Fault injection: a boto3 client wrapper whose chosen operations fail like AWS does."""

from __future__ import annotations

import threading
from typing import Any

from botocore.exceptions import ClientError


class FaultyClient:
    """Delegates to a real (moto) client; operations in `failing` raise a ClientError.

    `before[op]` runs once just before the next `op` (another request getting in between our
    read and our write); `every[op]` runs before each `op` (e.g. a barrier that makes many
    threads reach it together). `atomic()` makes each call indivisible, as one AWS request is:
    moto's backends do not lock, and concurrency tests are about our code's interleavings
    between calls, not moto's within one.
    """

    def __init__(self, client: Any) -> None:
        self._client = client
        self.failing: set[str] = set()
        self.calls: list[str] = []
        self.before: dict[str, Any] = {}  # operation -> callable run (once) just before it
        self.every: dict[str, Any] = {}  # operation -> callable run before each call of it
        self.every_table: dict[str, str] = {}  # operation -> the only table whose calls `every` runs for
        self._atomic: threading.Lock | None = None

    def atomic(self) -> None:
        self._atomic = threading.Lock()

    def fail(self, *operations: str) -> None:
        self.failing.update(operations)

    def heal(self) -> None:
        self.failing.clear()

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        if not callable(attribute) or name.startswith("_") or name in ("meta", "exceptions"):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            if hook := self.before.pop(name, None):
                hook()  # e.g. another writer getting in between our read and our write
            if (hook := self.every.get(name)) and self.every_table.get(name, kwargs.get("TableName")) == kwargs.get(
                "TableName"
            ):
                hook()
            if name in self.failing:
                raise ClientError(
                    {"Error": {"Code": "ServiceUnavailable", "Message": "injected fault"}},
                    operation_name=name,
                )
            if self._atomic is None:
                return attribute(*args, **kwargs)
            with self._atomic:
                return attribute(*args, **kwargs)

        return call
