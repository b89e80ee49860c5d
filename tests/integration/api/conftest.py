"""A whole keyhealth stack for handler tests: moto (tables, topic and KMS key built from
template.yaml), the three exchange simulators on loopback, and the real handlers invoked
with API Gateway REST proxy events. AWS clients are wrapped so tests can inject faults."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import boto3
import pytest
from moto import mock_aws

from keyhealth import wiring
from keyhealth.adapters.http_transport import HttpxTransport
from keyhealth.bindings.ports import Services
from keyhealth.config import Settings, settings
from simulators import binance, bingx, bitget
from simulators.base import DemoKey, ExchangeSimulator, SimulatorServer
from tests.conftest import EGRESS_IP
from tests.support.clock import SkippableClock
from tests.support.events import LambdaContext
from tests.support.faults import FaultyClient
from tests.support.template import create_key, create_table, create_topic

REGION = "eu-west-1"
TABLE = "keyhealth-bindings"
IDEMPOTENCY_TABLE = "keyhealth-idempotency"
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


@pytest.fixture
def clock() -> SkippableClock:
    """The one clock of the exchanges and of keyhealth in a test (see tests/support/clock.py)."""
    return SkippableClock()


@pytest.fixture
def exchanges(clock: SkippableClock) -> Iterator[Exchanges]:
    """Fresh simulators seeded with the demo keys: rate-limit windows start empty per test."""
    with ExitStack() as stack:
        sims: dict[str, ExchangeSimulator] = {
            "binance": binance.BinanceSimulator(clock=clock),
            "bitget": bitget.BitgetSimulator(clock=clock),
            "bingx": bingx.BingXSimulator(clock=clock),
        }
        keys: dict[tuple[str, str], DemoKey] = {}
        seeders = {"binance": binance.seed_demo, "bitget": bitget.seed_demo, "bingx": bingx.seed_demo}
        urls = {}
        for name, sim in sims.items():
            for key in seeders[name](sim, EGRESS_IP):
                keys[(name, key.label)] = key
            urls[name] = stack.enter_context(SimulatorServer(sim)).url
        yield Exchanges(urls, sims, keys)


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


@pytest.fixture
def stack(
    exchanges: Exchanges, egress_client, clock: SkippableClock, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Stack]:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SECURITY_TOKEN", "AWS_SESSION_TOKEN"):
        monkeypatch.setenv(name, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    env = {
        "TABLE_NAME": TABLE,
        "IDEMPOTENCY_TABLE_NAME": IDEMPOTENCY_TABLE,
        "SECRET_PREFIX": SECRET_PREFIX,
        "EGRESS_IPS": EGRESS_IP,
        "BINANCE_BASE_URL": exchanges.urls["binance"],
        "BINANCE_FUTURES_BASE_URL": exchanges.urls["binance"],
        "BITGET_BASE_URL": exchanges.urls["bitget"],
        "BINGX_BASE_URL": exchanges.urls["bingx"],
        "POWERTOOLS_METRICS_NAMESPACE": "keyhealth",
        "POWERTOOLS_SERVICE_NAME": "keyhealth",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        session = boto3.session.Session(region_name=REGION)
        raw_dynamodb = session.client("dynamodb")
        create_table(raw_dynamodb, "BindingsTable", TABLE)
        create_table(raw_dynamodb, "IdempotencyTable", IDEMPOTENCY_TABLE)
        kms_key_arn = create_key(session.client("kms"), "SecretsKey")
        sns = session.client("sns")
        topic_arn = create_topic(sns, "AlertTopic", "keyhealth-alerts")
        sqs = session.client("sqs")
        queue_url = sqs.create_queue(QueueName="alert-reader")["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn)
        monkeypatch.setenv("ALERT_TOPIC_ARN", topic_arn)
        monkeypatch.setenv("SECRETS_KMS_KEY_ID", kms_key_arn)
        settings.cache_clear()

        dynamodb = FaultyClient(raw_dynamodb)
        secretsmanager = FaultyClient(session.client("secretsmanager"))
        faulty_sns = FaultyClient(sns)
        clients = {"dynamodb": dynamodb, "secretsmanager": secretsmanager, "sns": faulty_sns, "sqs": sqs}
        container = wiring.Container(
            wiring.Environment(
                settings=Settings.from_env(os.environ),
                aws_client=clients.__getitem__,
                exchange_transport=HttpxTransport(egress_client),
                clock=clock,
            )
        )
        services = container.services
        wiring.use(container)
        for sim in exchanges.simulators.values():
            sim.fault = None
        yield Stack(services, dynamodb, secretsmanager, faulty_sns, sqs, queue_url, exchanges, kms_key_arn, container)
        wiring.use(None)
    settings.cache_clear()
