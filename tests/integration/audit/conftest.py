"""An audit harness on the API test stack: per-exchange SQS queues in moto, the real
dispatcher and worker handlers, and a driver that delivers queue messages to the worker as
Lambda's SQS event source does (batches of 10, partial batch failures honoured)."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

import pytest

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


@dataclass
class Audit:
    stack: Stack
    deps: AuditDeps
    queues: dict[Exchange, str]
    sleep: RecordingSleep
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
def audit(stack: Stack, clock: SkippableClock) -> Audit:
    sqs = stack.sqs
    arns: dict[str, str] = {}  # the dead-letter queue is made once, for all three
    queues = {
        exchange: create_queue(sqs, QUEUES[exchange], f"audit-{exchange.value}", queues=arns) for exchange in Exchange
    }
    sleep = RecordingSleep()  # records waits and advances nothing: tests stay within one window
    # The stack's container, rebuilt with the audit's queues, a sleep that only records and a
    # circuit read afresh on every check (the clock is skipped between deliveries).
    settings = replace(
        stack.container.settings,
        audit_queue_urls=tuple((exchange.value, url) for exchange, url in queues.items()),
        audit_budget_share=0.5,
        audit_circuit_cache_seconds=0.0,
    )
    container = wiring.Container(replace(stack.container.environment, settings=settings, sleep=sleep))
    deps = container.audit
    wiring.use(container)
    return Audit(stack, deps, queues, sleep, clock)
