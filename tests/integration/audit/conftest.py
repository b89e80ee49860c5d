"""An audit harness on the API test stack: per-exchange SQS queues in moto, the real
dispatcher and worker handlers, and a driver that delivers queue messages to the worker as
Lambda's SQS event source does (batches of 10, partial batch failures honoured)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest

from functions.audit_dispatcher import app as dispatcher
from functions.audit_worker import app as worker
from keyhealth.audit import runtime
from keyhealth.audit.runtime import PLANS
from keyhealth.audit.usecases import AuditDeps
from keyhealth.aws import clients
from keyhealth.aws.audit import DynamoCircuit, DynamoRateBudget, DynamoRunStore, SqsTaskQueue
from keyhealth.model import Exchange
from local.sqs_event_source import deliver_batch
from tests.integration.api.conftest import TABLE, clock, exchanges, stack  # noqa: F401 - fixtures
from tests.support.clock import SkippableClock
from tests.support.events import LambdaContext
from tests.support.template import create_queue

QUEUES = {Exchange.BINANCE: "AuditQueueBinance", Exchange.BITGET: "AuditQueueBitget", Exchange.BINGX: "AuditQueueBingx"}


class FakeSleep:
    """Records waits instead of sleeping; advances nothing (tests stay within one window)."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


@dataclass
class Audit:
    stack: Any
    deps: AuditDeps
    queues: dict[Exchange, str]
    sleep: FakeSleep
    clock: SkippableClock

    def run(self, run_id: str, *, max_rounds: int = 50) -> dict[str, Any]:
        """Dispatch a run and deliver every message until the queues are empty.

        A task the worker puts back with a delay is redelivered after the clock has been
        skipped by that delay, as SQS would redeliver it after its visibility timeout.
        """
        answer = dispatcher.lambda_handler({"run_id": run_id}, LambdaContext())
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
                        sqs,
                        url,
                        arn,
                        messages,
                        lambda event: worker.lambda_handler(event, LambdaContext()),
                        region="eu-west-1",
                    )
                finally:
                    sqs.change_message_visibility = real_change
            if not delivered:
                return answer
        raise AssertionError("the audit did not drain its queues")

    def summary(self, run_id: str) -> dict[str, Any]:
        item = self.stack.dynamodb.get_item(TableName=TABLE, Key={"pk": {"S": f"RUN#{run_id}"}, "sk": {"S": "RUN"}})
        return json.loads(item["Item"]["summary"]["S"])


@pytest.fixture
def audit(stack, clock, monkeypatch) -> Audit:  # noqa: F811 - the imported fixtures
    sqs = stack.sqs
    arns: dict[str, str] = {}  # the dead-letter queue is made once, for all three
    queues = {
        exchange: create_queue(sqs, QUEUES[exchange], f"audit-{exchange.value}", queues=arns) for exchange in Exchange
    }
    sleep = FakeSleep()
    deps = AuditDeps(
        services=stack.services,
        budget=DynamoRateBudget(stack.dynamodb, TABLE, PLANS, share=0.5, sleep=sleep, clock=clock),
        circuit=DynamoCircuit(stack.dynamodb, TABLE, cache_seconds=0, clock=clock),
        runs=DynamoRunStore(stack.dynamodb, TABLE),
        plans=PLANS,
        clock=clock,
    )
    monkeypatch.setattr(runtime, "audit_deps", lambda: deps)
    monkeypatch.setattr(runtime, "task_queue", lambda: SqsTaskQueue(sqs, queues))
    monkeypatch.setattr(clients, "client", lambda service: {"dynamodb": stack.dynamodb, "sqs": sqs}[service])
    return Audit(stack, deps, queues, sleep, clock)
