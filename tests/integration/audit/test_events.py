"""The audit's sample events (events/audit-dispatcher.json, events/audit-worker.json) run through the
real handlers: the schedule's event starts a run, the SQS event checks the binding its task names."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from functions.audit_dispatcher import app as dispatcher
from functions.audit_worker import app as worker
from keyhealth.exchanges.registry import Exchange
from tests.support.api import created
from tests.support.events import LambdaContext
from tests.support.template import resource

EVENTS = Path(__file__).resolve().parents[3] / "events"


def load(name: str) -> dict[str, Any]:
    return json.loads((EVENTS / name).read_text())


def test_the_dispatcher_event_is_what_the_schedule_sends():
    # Given the schedule's target input, with Scheduler's placeholder filled in
    target = resource("NightlyAudit")["Properties"]["Target"]
    sent = json.loads(target["Input"].replace("<aws.scheduler.scheduled-time>", "2026-11-21T02:00:00Z"))
    # Then the sample event is exactly that
    assert load("audit-dispatcher.json") == sent


def test_the_schedule_event_starts_a_run_with_one_task_per_binding(audit):
    # Given two bindings
    stack = audit.stack
    created(stack, stack.exchanges.key("binance", "healthy"), scopes=["spot"])
    created(stack, stack.exchanges.key("bitget", "healthy"))
    # When the schedule's event reaches the dispatcher
    answer = dispatcher.lambda_handler(load("audit-dispatcher.json"), LambdaContext())
    # Then a run is started under a fresh id with one task per binding, on each exchange's queue
    assert answer["tasks"] == 2
    run = audit.deps.runs.load(answer["run_id"])
    assert run is not None
    assert (run.dispatch_done, run.tasks_total) == (True, 2)
    waiting = {
        exchange.value: int(
            stack.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])["Attributes"][
                "ApproximateNumberOfMessages"
            ]
        )
        for exchange, url in audit.queues.items()
    }
    assert waiting == {"binance": 1, "bitget": 1, "bingx": 0}


def test_the_sqs_event_checks_the_binding_of_its_task(audit):
    # Given a binding, and a run dispatched for it
    stack = audit.stack
    binding = created(stack, stack.exchanges.key("binance", "healthy"), scopes=["spot"])
    run_id = dispatcher.lambda_handler({"run_id": "sample-run"}, LambdaContext())["run_id"]
    [message] = stack.sqs.receive_message(QueueUrl=audit.queues[Exchange.BINANCE], MaxNumberOfMessages=10)["Messages"]
    # When the sample SQS event, carrying that task, reaches the worker
    event = load("audit-worker.json")
    [record] = event["Records"]
    sample_task = json.loads(record["body"])
    task = json.loads(message["Body"])
    assert set(task) == set(sample_task)  # the sample's body has the dispatcher's shape
    assert (task["exchange"], task["binding_id"], task["run_id"]) == ("binance", binding["binding_id"], run_id)
    record.update(messageId=message["MessageId"], receiptHandle=message["ReceiptHandle"], body=message["Body"])
    answer = worker.lambda_handler(event, LambdaContext())
    # Then the task is done, the binding checked and the run finished with its summary
    assert answer == {"batchItemFailures": []}
    run = audit.deps.runs.load(run_id)
    assert run is not None
    assert (run.tasks_done, run.finished) == (1, True)
    assert audit.summary(run_id)["counts"]["total"] == 1
    summaries = [a for a in stack.alerts() if a["body"]["type"] == "audit_summary"]
    assert len(summaries) == 1
