"""The whole-stack test harness's types: the exchange simulators a test talks to, the stack
(moto, the wiring's container, fault-injecting AWS clients) and a handler's answer. The fixtures
that build them are in tests/integration/conftest.py."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from keyhealth import wiring
from keyhealth.bindings.ports import Services
from simulators.base import DemoKey, ExchangeSimulator
from tests.support.aws import TABLE
from tests.support.events import LambdaContext
from tests.support.faults import FaultyClient

SECRET_PREFIX = "keyhealth/test-stack/"


@dataclass
class Exchanges:
    urls: dict[str, str]
    simulators: dict[str, ExchangeSimulator]
    keys: dict[tuple[str, str], DemoKey]

    def key(self, exchange: str, label: str) -> DemoKey:
        return self.keys[(exchange, label)]

    def first(self, exchange: str, status: str) -> DemoKey:
        return next(k for (ex, _), k in self.keys.items() if ex == exchange and k.expected_status == status)


@dataclass
class Stack:
    services: Services
    dynamodb: FaultyClient
    secretsmanager: FaultyClient
    sns: FaultyClient
    sqs: Any
    queue_url: str
    exchanges: Exchanges
    kms_key_arn: str
    container: wiring.Container
    _alerts: list[dict[str, Any]] = field(default_factory=list)

    def invoke(self, function: ModuleType, event: dict[str, Any]) -> Response:
        answer = function.lambda_handler(event, LambdaContext())
        return Response(answer)

    def alerts(self) -> list[dict[str, Any]]:
        """SNS messages published so far (read through an SQS subscription)."""
        while True:
            batch = self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10).get("Messages", [])
            if not batch:
                return self._alerts
            for message in batch:
                envelope = json.loads(message["Body"])
                self._alerts.append(
                    {
                        "subject": envelope.get("Subject"),
                        "body": json.loads(envelope["Message"]),
                        "attributes": {k: v["Value"] for k, v in envelope.get("MessageAttributes", {}).items()},
                    }
                )
                self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])

    def table_items(self, table: str = TABLE) -> list[dict[str, Any]]:
        return self.dynamodb.scan(TableName=table)["Items"]

    def secret_names(self) -> list[str]:
        return [s["Name"] for s in self.secretsmanager.list_secrets()["SecretList"] if "DeletedDate" not in s]

    def binding_items(self) -> list[dict[str, Any]]:
        return [i for i in self.table_items() if i["sk"]["S"].startswith("B#")]


class Response:
    def __init__(self, answer: dict[str, Any]) -> None:
        self.raw = answer
        self.status = answer["statusCode"]
        self.text = answer.get("body") or ""
        headers = dict(answer.get("headers") or {})
        for name, values in (answer.get("multiValueHeaders") or {}).items():
            headers.setdefault(name, values[-1])
        self.headers = {k.lower(): v for k, v in headers.items()}

    @property
    def json(self) -> Any:
        return json.loads(self.text)

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.text[:300]}>"
