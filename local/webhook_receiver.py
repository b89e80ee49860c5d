"""A platform's webhook receiver on loopback, for `make demo`: it checks each delivery's signature the way
docs/webhooks.md tells platforms to, and keeps what it got for the demo to print."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from simulators.base import ThreadedHttpServer

TOLERANCE_SECONDS = 300  # docs/webhooks.md: a signature older than 5 minutes is a replay


def signature_valid(secret: str, header: str, body: bytes, *, now: float | None = None) -> bool:
    """Any v1 of `header` is HMAC-SHA256(secret, "<t>.<body>") and t is recent."""
    pairs = [part.split("=", 1) for part in header.split(",") if "=" in part]
    stamps = [value for name, value in pairs if name == "t"]
    if len(stamps) != 1 or not stamps[0].isdigit():
        return False
    if abs((time.time() if now is None else now) - int(stamps[0])) > TOLERANCE_SECONDS:
        return False
    expected = hmac.new(secret.encode(), stamps[0].encode() + b"." + body, hashlib.sha256).hexdigest()
    return any(name == "v1" and hmac.compare_digest(expected, value) for name, value in pairs)


@dataclass
class Delivery:
    event: dict[str, Any]
    verified: bool
    duplicate: bool


@dataclass
class DemoReceiver:
    secret: str = ""
    deliveries: list[Delivery] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)
    on_delivery: Callable[[Delivery], None] | None = None

    def receive(self, headers: dict[str, str], body: bytes) -> int:
        try:
            event = json.loads(body)
        except ValueError:
            return 400
        with self.lock:
            verified = bool(self.secret) and signature_valid(self.secret, headers.get("keyhealth-signature", ""), body)
            event_id = headers.get("keyhealth-event-id", "")
            delivery = Delivery(event, verified, event_id in self.seen)
            self.seen.add(event_id)
            self.deliveries.append(delivery)
        if self.on_delivery is not None:
            self.on_delivery(delivery)
        return 200 if verified else 401


def start_receiver(receiver: DemoReceiver) -> ThreadedHttpServer:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            status = receiver.receive({k.lower(): v for k, v in self.headers.items()}, body)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the demo prints its own lines
            return None

    return ThreadedHttpServer(Handler, "127.0.0.1", 0, name="demo-webhook-receiver").start()
