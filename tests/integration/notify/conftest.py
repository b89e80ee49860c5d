"""A local Slack incoming webhook that checks Block Kit payloads and can be told to answer 429/5xx/4xx,
and the Slack notifier wired to it, with Secrets Manager and SQS on moto (the queue built from template.yaml)."""

from __future__ import annotations

import json
import os
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import boto3
import httpx
import pytest
from moto import mock_aws

from functions.slack_notifier import app
from keyhealth import wiring
from keyhealth.adapters.slack_webhook import new_slack_client
from keyhealth.config import Settings
from simulators.base import ExchangeSimulator, SimRequest, SimResponse, SimulatorServer
from tests.support.clock import FakeClock
from tests.support.faults import FaultyClient
from tests.support.slack import block_kit_problems
from tests.support.template import resource

REGION = "eu-west-1"
WEBHOOK_PATH = "/services/T0KEYHEALTH/B0ALERTS/0123456789abcdefghijklmn"


@dataclass
class Received:
    path: str
    content_type: str | None
    payload: Any
    problems: list[str]
    status: int  # what the receiver answered


@dataclass(frozen=True)
class Answer:
    status: int
    body: str
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False  # close the connection without answering


class SlackReceiver(ExchangeSimulator):
    """Answers like Slack: 200 `ok`, 400 `invalid_blocks` for a payload Slack would refuse, 404 `no_service`
    for an unknown webhook path; scripted answers (429, 500, ...) come first, in order. Served by the
    simulators' own loopback server."""

    name = "slack"

    def __init__(self) -> None:
        super().__init__()
        self.received: list[Received] = []
        self._script: deque[Answer] = deque()
        self._lock = threading.Lock()
        self.paths = {WEBHOOK_PATH}
        self._server = SimulatorServer(self)

    def __call__(self, request: SimRequest) -> SimResponse | None:
        try:
            payload = json.loads(request.body)
        except ValueError:
            payload = None
        problems = block_kit_problems(payload)
        answer = self._answer_for(request.path, problems)
        self._record(Received(request.path, request.header("Content-Type"), payload, problems, answer.status))
        if answer.drop:
            return None  # the connection closes without an answer
        return SimResponse(answer.status, answer.body.encode(), dict(answer.headers))

    @property
    def url(self) -> str:
        return f"{self._server.url}{WEBHOOK_PATH}"

    def start(self) -> SlackReceiver:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def answer(self, status: int, body: str, *, times: int = 1, retry_after: str | None = None) -> None:
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        with self._lock:
            self._script.extend(Answer(status, body, headers) for _ in range(times))

    def drop(self, *, times: int = 1) -> None:
        with self._lock:
            self._script.extend(Answer(0, "", drop=True) for _ in range(times))

    def _answer_for(self, path: str, problems: list[str]) -> Answer:
        with self._lock:
            if self._script:
                return self._script.popleft()
        if path not in self.paths:
            return Answer(404, "no_service")
        if problems:
            return Answer(400, "invalid_blocks")
        return Answer(200, "ok")

    def _record(self, received: Received) -> None:
        with self._lock:
            self.received.append(received)


@pytest.fixture
def slack() -> Iterator[SlackReceiver]:
    receiver = SlackReceiver().start()
    yield receiver
    receiver.stop()


class Context:
    function_name = "keyhealth-SlackNotifierFunction"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:eu-west-1:123456789012:function:keyhealth-SlackNotifierFunction"
    aws_request_id = "req-slack-test"

    def __init__(self, remaining_ms: int) -> None:
        self.remaining_ms = remaining_ms

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


@dataclass
class Notifier:
    slack: SlackReceiver
    time: FakeClock
    secretsmanager: Any
    sqs: FaultyClient
    secret_arn: str
    dlq_url: str
    session: boto3.session.Session
    environment: wiring.Environment

    def cold_start(self) -> None:
        """A new Lambda container: settings read again from the environment (a test changed it)."""
        settings = Settings.from_env(os.environ)
        wiring.use(wiring.Container(replace(self.environment, settings=settings)))

    def invoke(self, event: dict[str, Any], *, remaining_ms: int = 60_000) -> dict[str, int]:
        return app.lambda_handler(event, Context(remaining_ms))

    def dead_letters(self) -> list[dict[str, Any]]:
        letters = []
        while batch := self.sqs.receive_message(
            QueueUrl=self.dlq_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
        ).get("Messages", []):
            for message in batch:
                letter = json.loads(message["Body"])
                letter["_attributes"] = {k: v["StringValue"] for k, v in message["MessageAttributes"].items()}
                letters.append(letter)
                self.sqs.delete_message(QueueUrl=self.dlq_url, ReceiptHandle=message["ReceiptHandle"])
        return letters


@pytest.fixture(scope="session")
def slack_http() -> Iterator[httpx.Client]:
    client = new_slack_client(timeout=2.0)
    yield client
    client.close()


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[boto3.session.Session]:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SECURITY_TOKEN", "AWS_SESSION_TOKEN"):
        monkeypatch.setenv(name, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        yield boto3.session.Session(region_name=REGION)


@pytest.fixture
def notifier(
    slack: SlackReceiver, aws: boto3.session.Session, slack_http: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Notifier]:
    """The deployed shape: webhook URL in a secret, a dead-letter queue as template.yaml declares it."""
    secretsmanager = aws.client("secretsmanager")
    secret_arn = secretsmanager.create_secret(Name="keyhealth/slack-webhook", SecretString=slack.url)["ARN"]
    sqs = aws.client("sqs")
    props = resource("SlackDeadLetterQueue")["Properties"]
    dlq_url = sqs.create_queue(
        QueueName="keyhealth-slack-dlq",
        Attributes={"MessageRetentionPeriod": str(props["MessageRetentionPeriod"])},
    )["QueueUrl"]
    faulty_sqs = FaultyClient(sqs)
    monkeypatch.setenv("SLACK_WEBHOOK_SECRET_ARN", secret_arn)
    monkeypatch.setenv("SLACK_DLQ_URL", dlq_url)
    fake_time = FakeClock(1_000.0)
    aws_clients = {"secretsmanager": secretsmanager, "sqs": faulty_sqs}
    environment = wiring.Environment(
        settings=Settings.from_env(os.environ),
        aws_client=aws_clients.__getitem__,
        sleep=fake_time.sleep,
        monotonic=fake_time,
        jitter=lambda: 0.5,
        slack_http_client=slack_http,
    )
    wiring.use(wiring.Container(environment))
    yield Notifier(slack, fake_time, secretsmanager, faulty_sqs, secret_arn, dlq_url, aws, environment)
    wiring.use(None)
