"""The webhook harness on the API test stack: the events table, the delivery queue and its dead-letter queue
and the signing-secret key in moto (from template.yaml), the stack's container rebuilt with them, a platform's
receiver on loopback and a driver for the delivery queue (tests/support/webhooks.py).

The receivers listen on 127.0.0.1, so the stack runs as the local stack does (loopback http accepted); the
SSRF tests build a sender in deployed mode themselves."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace

import pytest

from functions.webhook_deliverer import app as deliverer
from functions.webhooks import app as webhooks_function
from keyhealth import wiring
from tests.support.clock import SkippableClock
from tests.support.events import PLATFORM_A, api_event
from tests.support.stack import Response, Stack
from tests.support.template import create_key, create_queue, create_table
from tests.support.webhooks import Deliveries, Receiver, start_receiver

EVENTS_TABLE = "keyhealth-events"


@pytest.fixture
def credential_store() -> str:
    """Webhooks do not touch the credential store: one store is enough here."""
    return "secretsmanager"


@dataclass
class Hooks:
    stack: Stack
    receiver: Receiver
    deliveries: Deliveries
    clock: SkippableClock

    def call(self, method: str, path: str, *, body=None, query=None, principal: str = PLATFORM_A) -> Response:
        return self.stack.invoke(
            webhooks_function, api_event(method, path, body=body, query=query, principal=principal)
        )

    def register(self, url: str | None = None, *, events=None, principal: str = PLATFORM_A) -> str:
        """PUT /webhook; the new signing secret."""
        body = {"url": url or self.receiver.url}
        if events is not None:
            body["events"] = events
        answer = self.call("PUT", "/webhook", body=body, principal=principal)
        assert answer.status == 200, answer
        return answer.json["secret"]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = start_receiver()
    yield receiver
    receiver.server.stop()


@pytest.fixture
def hooks(stack: Stack, clock: SkippableClock, receiver: Receiver) -> Hooks:
    raw = stack.container.environment.aws_client
    create_table(raw("dynamodb"), "EventsTable", EVENTS_TABLE)
    sqs = stack.sqs
    queue_url = create_queue(sqs, "WebhookQueue", "webhook-deliveries")
    dead_letter_url = sqs.get_queue_url(QueueName="webhook-deliveries-WebhookDeadLetterQueue")["QueueUrl"]
    settings = replace(
        stack.container.settings,
        events_table_name=EVENTS_TABLE,
        webhook_queue_url=queue_url,
        webhook_dlq_url=dead_letter_url,
        webhook_kms_key_id=create_key(raw("kms"), "WebhookSecretsKey"),
        webhook_allow_loopback_http=True,
    )
    container = wiring.Container(replace(stack.container.environment, settings=settings, jitter=lambda: 0.5))
    wiring.use(container)
    # The audit harness (tests/integration/audit) rebuilds from the stack's container: it keeps the webhooks.
    stack.container, stack.services = container, container.services
    return Hooks(stack, receiver, Deliveries(sqs, queue_url, dead_letter_url, clock, deliverer.lambda_handler), clock)
