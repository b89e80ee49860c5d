"""Webhook test harness: a platform's receiver (a real HTTP server on loopback that checks signatures the way
docs/webhooks.md tells platforms to) and a driver that hands the delivery queue's messages to the real
deliverer handler as Lambda's SQS event source does, skipping the shared clock by each back-off instead of
waiting for it."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from local.sqs_event_source import deliver_batch
from local.webhook_receiver import signature_valid
from simulators.base import ThreadedHttpServer
from tests.support.clock import SkippableClock
from tests.support.events import LambdaContext

__all__ = ["CLOSE", "Deliveries", "Received", "Receiver", "signature_valid", "start_receiver"]

#: What the receiver does with one request: an HTTP status to answer, or CLOSE (drop the connection unanswered).
CLOSE = 0


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    path: str

    @property
    def event(self) -> dict[str, Any]:
        return dict(json.loads(self.body))

    @property
    def event_id(self) -> str:
        return self.headers["keyhealth-event-id"]


@dataclass
class Receiver:
    """The platform's endpoint: records every request; answers each with the next of `script` (then `default`)."""

    server: ThreadedHttpServer
    requests: list[Received] = field(default_factory=list)
    script: list[int] = field(default_factory=list)
    default: int = 200
    redirect_to: str = ""  # the Location of a 3xx answer
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return self.server.url + "/hooks/keyhealth?token=platform-side"

    def next_answer(self) -> int:
        with self.lock:
            return self.script.pop(0) if self.script else self.default

    def events(self) -> list[dict[str, Any]]:
        return [r.event for r in self.requests]


def start_receiver() -> Receiver:
    holder: dict[str, Receiver] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            receiver = holder["receiver"]
            with receiver.lock:
                receiver.requests.append(Received({k.lower(): v for k, v in self.headers.items()}, body, self.path))
            answer = receiver.next_answer()
            if answer == CLOSE:
                self.close_connection = True
                self.connection.close()
                return
            self.send_response(answer)
            if 300 <= answer < 400 and receiver.redirect_to:
                self.send_header("Location", receiver.redirect_to)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet in tests
            return None

    server = ThreadedHttpServer(Handler, "127.0.0.1", 0, name="webhook-receiver").start()
    receiver = Receiver(server)
    holder["receiver"] = receiver
    return receiver


@dataclass
class Deliveries:
    """Drives the delivery queue through the real deliverer handler."""

    sqs: Any
    queue_url: str
    dead_letter_url: str
    clock: SkippableClock
    handler: Callable[[dict[str, Any], Any], dict[str, Any]]
    backoffs: list[int] = field(default_factory=list)  # every VisibilityTimeout the deliverer asked for
    skipped: float = 0.0

    def round(self) -> int:
        """One receive and one invocation; the messages it handed over."""
        messages = self.sqs.receive_message(
            QueueUrl=self.queue_url, MaxNumberOfMessages=10, VisibilityTimeout=30, AttributeNames=["All"]
        ).get("Messages", [])
        if not messages:
            return 0
        asked: list[int] = []
        real_change = self.sqs.change_message_visibility

        def record(**params: Any) -> Any:
            # SQS would hide the message for this long; the clock is skipped by it instead (`drain`).
            asked.append(params["VisibilityTimeout"])
            return real_change(**{**params, "VisibilityTimeout": 0})

        self.sqs.change_message_visibility = record
        try:
            deliver_batch(
                self.sqs,
                self.queue_url,
                "arn:aws:sqs:eu-west-1:123456789012:webhook-deliveries",
                messages,
                lambda event: self.handler(event, LambdaContext()),
                region="eu-west-1",
            )
        finally:
            self.sqs.change_message_visibility = real_change
        self.backoffs.extend(asked)
        if asked:
            self.clock.skip(min(asked))
            self.skipped += min(asked)
        return len(messages)

    def drain(self, *, max_rounds: int = 100) -> int:
        """Rounds until the queue is empty; how many it took."""
        for rounds in range(1, max_rounds + 1):
            if not self.round():
                return rounds - 1
        raise AssertionError("the delivery queue did not drain")

    def waiting(self) -> int:
        attributes = self.sqs.get_queue_attributes(
            QueueUrl=self.queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attributes["ApproximateNumberOfMessages"]) + int(attributes["ApproximateNumberOfMessagesNotVisible"])

    def dead_letters(self) -> list[dict[str, Any]]:
        letters = []
        while batch := self.sqs.receive_message(
            QueueUrl=self.dead_letter_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
        ).get("Messages", []):
            for message in batch:
                letters.append(
                    {
                        "body": json.loads(message["Body"]),
                        "attributes": {k: v["StringValue"] for k, v in message.get("MessageAttributes", {}).items()},
                    }
                )
                self.sqs.delete_message(QueueUrl=self.dead_letter_url, ReceiptHandle=message["ReceiptHandle"])
        return letters
