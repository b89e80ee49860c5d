"""Fixtures shared by the integration tests: a whole keyhealth stack for handler tests. moto
(tables, topic and KMS key built from template.yaml), the three exchange simulators on loopback,
and the real handlers invoked with API Gateway REST proxy events. AWS clients are wrapped so
tests can inject faults. The harness's types are in tests/support/stack.py."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import ExitStack

import boto3
import pytest
from moto import mock_aws

from keyhealth import wiring
from keyhealth.adapters.http_transport import HttpxTransport
from keyhealth.config import Settings, settings
from simulators import binance, bingx, bitget
from simulators.base import DemoKey, ExchangeSimulator, SimulatorServer
from tests.conftest import EGRESS_IP
from tests.support.aws import IDEMPOTENCY_TABLE, REGION, TABLE
from tests.support.clock import SkippableClock
from tests.support.faults import FaultyClient
from tests.support.stack import CREDENTIALS_TABLE, SECRET_PREFIX, Exchanges, Stack
from tests.support.template import create_key, create_table, create_topic


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


@pytest.fixture(params=["secretsmanager", "kms"])
def credential_store(request: pytest.FixtureRequest) -> str:
    """Every test on the stack runs once per credential store (CREDENTIAL_STORE, GitHub issue 11)."""
    return str(request.param)


@pytest.fixture
def stack(
    exchanges: Exchanges,
    egress_client,
    clock: SkippableClock,
    monkeypatch: pytest.MonkeyPatch,
    credential_store: str,
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
        "CREDENTIAL_STORE": credential_store,
        "STACK_NAME": "test-stack",
        "CREDENTIALS_TABLE_NAME": CREDENTIALS_TABLE,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        session = boto3.session.Session(region_name=REGION)
        raw_dynamodb = session.client("dynamodb")
        create_table(raw_dynamodb, "BindingsTable", TABLE)
        create_table(raw_dynamodb, "IdempotencyTable", IDEMPOTENCY_TABLE)
        kms_key_arn = create_key(session.client("kms"), "SecretsKey")
        create_table(raw_dynamodb, "CredentialsTable", CREDENTIALS_TABLE)
        monkeypatch.setenv("CREDENTIALS_KMS_KEY_ID", create_key(session.client("kms"), "CredentialsKey"))
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
        kms = FaultyClient(session.client("kms"))
        clients = {"dynamodb": dynamodb, "secretsmanager": secretsmanager, "sns": faulty_sns, "sqs": sqs, "kms": kms}
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
        yield Stack(
            services,
            dynamodb,
            secretsmanager,
            faulty_sns,
            sqs,
            queue_url,
            exchanges,
            kms_key_arn,
            container,
            kms=kms,
            store=credential_store,
        )
        wiring.use(None)
        if credential_store == "kms":  # the acceptance: Secrets Manager held no secret at any point
            assert secretsmanager.list_secrets(IncludePlannedDeletion=True)["SecretList"] == []
    settings.cache_clear()
