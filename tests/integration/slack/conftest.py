"""A local Slack incoming webhook that checks Block Kit payloads and can be told to answer 429/5xx/4xx,
and the Slack notifier wired to it, with Secrets Manager and SQS on moto (the queue built from template.yaml)."""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import httpx
import pytest
from moto import mock_aws

from functions.slack_notifier import app
from keyhealth.aws import clients
from keyhealth.config import settings
from keyhealth.slack_delivery import RetryPolicy, SlackWebhook, new_slack_client
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


class SlackReceiver:
    """Answers like Slack: 200 `ok`, 400 `invalid_blocks` for a payload Slack would refuse, 404 `no_service`
    for an unknown webhook path; scripted answers (429, 500, ...) come first, in order."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self._script: deque[Answer] = deque()
        self._lock = threading.Lock()
        self.paths = {WEBHOOK_PATH}
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # or every keep-alive request waits ~44 ms

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    payload = json.loads(raw)
                except ValueError:
                    payload = None
                problems = block_kit_problems(payload)
                answer = receiver._answer_for(self.path, problems)
                receiver._record(
                    Received(self.path, self.headers.get("Content-Type"), payload, problems, answer.status)
                )
                if answer.drop:
                    self.close_connection = True
                    return
                body = answer.body.encode()
                self.send_response(answer.status)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass  # the request line holds the webhook path

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05})

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}{WEBHOOK_PATH}"

    def start(self) -> SlackReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

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


class FakeTime:
    """The notifier's clock and sleep: waits are recorded, never slept."""

    def __init__(self) -> None:
        self.now = 1_000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


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
    time: FakeTime
    secretsmanager: Any
    sqs: FaultyClient
    secret_arn: str
    dlq_url: str
    session: boto3.session.Session

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
    monkeypatch.setattr(
        clients, "client", lambda service: {"secretsmanager": secretsmanager, "sqs": faulty_sqs}[service]
    )
    fake_time = FakeTime()

    def webhook() -> SlackWebhook:
        config = settings()
        policy = RetryPolicy(max_attempts=config.slack_max_attempts, retry_after_cap=config.slack_retry_after_cap)
        return SlackWebhook(slack_http, policy, sleep=fake_time.sleep, clock=fake_time.clock, jitter=lambda: 0.5)

    monkeypatch.setattr(app, "webhook", webhook)
    _forget_container_state()
    yield Notifier(slack, fake_time, secretsmanager, faulty_sqs, secret_arn, dlq_url, aws)
    _forget_container_state()


def _forget_container_state() -> None:
    """A fresh container: settings, webhook URL and queue read again."""
    settings.cache_clear()
    app.webhook_url.cache_clear()
    app.dead_letters.cache_clear()
