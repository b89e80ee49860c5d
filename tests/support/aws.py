"""AWS names and clients the integration tests share: the region and table names the stacks
use, a boto3 session with fake credentials (moto), and a client wrapper that records calls."""

from __future__ import annotations

import threading
from typing import Any

import boto3

REGION = "eu-west-1"
TABLE = "keyhealth-bindings"
IDEMPOTENCY_TABLE = "keyhealth-idempotency"
SESSION = boto3.session.Session(region_name=REGION, aws_access_key_id="testing", aws_secret_access_key="testing")


class Recording:
    """Delegates to a boto3 client; counts calls, and can run a hook after one of them."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.after_first: dict[str, Any] = {}
        self._lock: threading.Lock | None = None

    def serialised(self) -> Recording:
        """One call at a time, as DynamoDB applies writes to one item (moto does not lock)."""
        self._lock = threading.Lock()
        return self

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        if not callable(attribute) or name.startswith("_") or name in ("meta", "exceptions"):
            return attribute

        def call(**params: Any) -> Any:
            self.calls.append((name, params))
            try:
                if self._lock is None:
                    return attribute(**params)
                with self._lock:
                    return attribute(**params)
            finally:
                if hook := self.after_first.pop(name, None):
                    hook()

        return call
