"""An audit harness on the API test stack: per-exchange SQS queues in moto, the real
dispatcher and worker handlers, and a driver that delivers queue messages to the worker as
Lambda's SQS event source does (batches of 10, partial batch failures honoured).

The audit's DynamoDB and SQS clients are wrapped in an `Injector`, so that a test can make
chosen calls fail, picked by their parameters (a shard's Query, one queue's sends, one task's
entry), or go through and then lose their answer; the sleep only records, and the jitter is
fixed, so every back-off is known in advance."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import pytest
from botocore.exceptions import ClientError, ReadTimeoutError

from functions.audit_dispatcher import app as dispatcher
from functions.audit_worker import app as worker
from keyhealth import wiring
from keyhealth.audit.usecases import AuditDeps
from keyhealth.exchanges.registry import Exchange
from local.sqs_event_source import deliver_batch
from tests.support.aws import TABLE
from tests.support.clock import RecordingSleep, SkippableClock
from tests.support.events import LambdaContext
from tests.support.stack import Stack
from tests.support.template import create_queue

QUEUES = {Exchange.BINANCE: "AuditQueueBinance", Exchange.BITGET: "AuditQueueBitget", Exchange.BINGX: "AuditQueueBingx"}
JITTER = 0.5  # every back-off is the midpoint of its range

Params = dict[str, Any]
#: What an injected fault does instead of the call: given the real call and its parameters.
Action = Callable[[Callable[..., Any], Params], Any]


@dataclass
class _Rule:
    operation: str
    action: Action
    times: int
    when: Callable[[Params], bool]


class Injector:
    """Delegates to a client; the next `times` calls of an operation whose parameters match
    `when` do what a rule says instead. Thread-safe (the dispatcher reads shards in parallel)."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self._rules: list[_Rule] = []
        self._lock = threading.Lock()
        self.calls: list[tuple[str, Params]] = []

    def inject(
        self, operation: str, action: Action, *, times: int = 1, when: Callable[[Params], bool] = lambda _: True
    ) -> None:
        with self._lock:
            self._rules.append(_Rule(operation, action, times, when))

    def fail(self, operation: str, code: str = "ServiceUnavailable", **options: Any) -> None:
        """Matching calls raise a ClientError with `code`; AWS did nothing."""
        self.inject(operation, error(code), **options)

    def lose_answer(self, operation: str, **options: Any) -> None:
        """Matching calls go through, then raise a read timeout: AWS did it, the caller cannot know."""

        def action(call: Callable[..., Any], params: Params) -> Any:
            call(**params)
            raise ReadTimeoutError(endpoint_url=f"https://{operation}.eu-west-1.amazonaws.com")

        self.inject(operation, action, **options)

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        if not callable(attribute) or name.startswith("_") or name in ("meta", "exceptions"):
            return attribute

        def call(**params: Any) -> Any:
            with self._lock:
                self.calls.append((name, params))
                rule = next((r for r in self._rules if r.operation == name and r.times and r.when(params)), None)
                if rule is not None:
                    rule.times -= 1
            if rule is None:
                return attribute(**params)
            return rule.action(attribute, params)

        return call


def error(code: str) -> Action:
    def action(call: Callable[..., Any], params: Params) -> Any:
        raise ClientError({"Error": {"Code": code, "Message": "injected fault"}}, "injected")

    return action


def raising(exception: Callable[[], BaseException]) -> Action:
    """The process dies at this call: it is not made."""

    def action(call: Callable[..., Any], params: Params) -> Any:
        raise exception()

    return action


def refusing(refused: Callable[[Params], bool]) -> Action:
    """SendMessageBatch: the entries `refused` picks are refused (Failed), the others sent."""

    def action(call: Callable[..., Any], params: Params) -> Any:
        taken = [e for e in params["Entries"] if not refused(e)]
        answer = call(**{**params, "Entries": taken}) if taken else {"Successful": []}
        answer["Failed"] = [
            {"Id": e["Id"], "SenderFault": False, "Code": "InternalError"} for e in params["Entries"] if refused(e)
        ]
        return answer

    return action


@dataclass
class Audit:
    stack: Stack
    deps: AuditDeps
    queues: dict[Exchange, str]
    sleep: RecordingSleep
    clock: SkippableClock
    dynamodb: Injector
    sqs: Injector
    sns: Injector

    def run(self, run_id: str, *, max_rounds: int = 50) -> dict[str, Any]:
        """Dispatch a run and deliver every message until the queues are empty."""
        answer = self.dispatch(run_id)
        self.drain(max_rounds=max_rounds)
        return answer

    def dispatch(self, run_id: str) -> dict[str, Any]:
        return dispatcher.lambda_handler({"run_id": run_id}, LambdaContext())

    def drain(self, *, max_rounds: int = 50) -> None:
        """Deliver every message until the queues are empty.

        A task the worker puts back with a delay is redelivered after the clock has been
        skipped by that delay, as SQS would redeliver it after its visibility timeout. An
        invocation that fails leaves its batch in the queue (the exception is raised here):
        draining again delivers it again.
        """
        sqs = self.stack.sqs
        delays: list[float] = []
        real_change = sqs.change_message_visibility

        def record_delay(**params: Any) -> Any:
            delays.append(params["VisibilityTimeout"])
            return real_change(**{**params, "VisibilityTimeout": 0})

        for _ in range(max_rounds):
            if delays:
                self.clock.skip(min(delays))
                delays.clear()
            delivered = 0
            for exchange, url in self.queues.items():
                messages = sqs.receive_message(
                    QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=0, AttributeNames=["All"]
                ).get("Messages", [])
                if not messages:
                    continue
                delivered += len(messages)
                arn = f"arn:aws:sqs:eu-west-1:123456789012:audit-{exchange.value}"
                sqs.change_message_visibility = record_delay
                try:
                    deliver_batch(
                        self.sqs,
                        url,
                        arn,
                        messages,
                        lambda event: worker.lambda_handler(event, LambdaContext()),
                        region="eu-west-1",
                    )
                finally:
                    sqs.change_message_visibility = real_change
            if not delivered:
                return
        raise AssertionError("the audit did not drain its queues")

    def waiting(self) -> int:
        """Messages in the audit queues."""
        return sum(
            int(
                self.stack.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])[
                    "Attributes"
                ]["ApproximateNumberOfMessages"]
            )
            for url in self.queues.values()
        )

    def run_item(self, run_id: str) -> dict[str, Any]:
        return self.stack.dynamodb.get_item(TableName=TABLE, Key={"pk": {"S": f"RUN#{run_id}"}, "sk": {"S": "RUN"}})[
            "Item"
        ]

    def summary(self, run_id: str) -> dict[str, Any]:
        return json.loads(self.run_item(run_id)["summary"]["S"])


@pytest.fixture
def audit(stack: Stack, clock: SkippableClock) -> Audit:
    sqs = stack.sqs
    arns: dict[str, str] = {}  # the dead-letter queue is made once, for all three
    queues = {
        exchange: create_queue(sqs, QUEUES[exchange], f"audit-{exchange.value}", queues=arns) for exchange in Exchange
    }
    sleep = RecordingSleep()  # records waits and advances nothing: tests stay within one window
    dynamodb, faulty_sqs, sns = Injector(stack.dynamodb), Injector(sqs), Injector(stack.sns)
    clients = {"dynamodb": dynamodb, "sqs": faulty_sqs, "sns": sns}
    environment = stack.container.environment
    # The stack's container, rebuilt with the audit's queues, a sleep that only records, a fixed
    # jitter, the injecting clients and a circuit read afresh on every check (the clock is
    # skipped between deliveries).
    settings = replace(
        stack.container.settings,
        audit_queue_urls=tuple((exchange.value, url) for exchange, url in queues.items()),
        audit_budget_share=0.5,
        audit_circuit_cache_seconds=0.0,
    )
    container = wiring.Container(
        replace(
            environment,
            settings=settings,
            sleep=sleep,
            jitter=lambda: JITTER,
            aws_client=lambda service: clients.get(service) or environment.aws_client(service),
        )
    )
    deps = container.audit
    # The worker's back-off between retries of its record (wiring passes the environment's sleep
    # and jitter to AuditDeps once it is changed so; until then the harness sets them here).
    deps.sleep, deps.jitter = sleep, lambda: JITTER
    wiring.use(container)
    return Audit(stack, deps, queues, sleep, clock, dynamodb, faulty_sqs, sns)
