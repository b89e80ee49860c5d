"""`make run`: all of keyhealth on one machine, in the foreground until Ctrl-C.

- moto in server mode (in this process), provisioned from template.yaml's own resource definitions;
  boto3 reaches it through AWS_ENDPOINT_URL, set before any handler imports boto3;
- the three exchange simulators, seeded with demo keys covering every status and finding (an
  exchange whose *_BASE_URL variable is set is not simulated: that URL is used);
- the local API (local/gateway.py) on http://127.0.0.1:3000 (KEYHEALTH_PORT), invoking the real
  handlers with API Gateway events;
- outbound exchange calls leave from a loopback source address (KEYHEALTH_EGRESS_SOURCE, default
  127.0.0.2), which GET /egress-ips reports and the simulators see as the peer; with
  KEYHEALTH_EGRESS_SOURCES=127.0.0.2,127.0.0.3 (up to 4) one audit worker leaves from each, with its
  own queues and rate budget, as a stack deployed with EgressIpCount does;
- an alert sink printing every SNS message as its email text, and an audit worker loop delivering
  the per-exchange queues' messages to the worker handler as Lambda's SQS event source would.

Ports: KEYHEALTH_PORT (3000), KEYHEALTH_MOTO_PORT, KEYHEALTH_BINANCE_PORT, KEYHEALTH_BITGET_PORT,
KEYHEALTH_BINGX_PORT (0, the default, means a free port).
"""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from local.gateway import DEFAULT_PRINCIPAL, PRINCIPAL_HEADER, LocalApi
from local.sqs_event_source import deliver_batch
from local.template import create_key, create_queue, create_table, create_topic, has_resource, resource
from simulators import simulator_module
from simulators.base import DemoKey, SimulatorServer

REGION = "us-east-1"
NAME_PREFIX = "keyhealth-local-"
DEFAULT_EGRESS = "127.0.0.2"
# The per-exchange audit queues, by the template's logical ids; created from the template when it
# declares them, otherwise with these names and the defaults below (and the start screen says so).
FALLBACK_VISIBILITY_SECONDS = "60"
DISPATCHER, WORKER = "functions.audit_dispatcher.app", "functions.audit_worker.app"
DELIVERER = "functions.webhook_deliverer.app"
BATCH_SIZE = 10  # Lambda's default batch size for SQS

log = logging.getLogger("keyhealth.local")


_screen = sys.stdout  # the stack's own output; handlers write through MetricFilter


def say(text: str = "") -> None:
    print(text, file=_screen, flush=True)


class MetricFilter(io.TextIOBase):
    """Stands in for stdout while handlers run: drops the CloudWatch EMF lines Powertools prints
    (one per metric: they would drown the screen), passes everything else (logs) through."""

    def __init__(self, target: Any) -> None:
        self._target = target
        self._partial = ""
        self._lock = threading.Lock()

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        with self._lock:
            *lines, self._partial = (self._partial + text).split("\n")
            for line in lines:
                if not line.startswith('{"_aws":'):
                    self._target.write(line + "\n")
            self._target.flush()
        return len(text)


class StackError(RuntimeError):
    """The stack cannot start; the message says why and what to do."""


@dataclass(frozen=True)
class LocalConfig:
    port: int = 3000
    moto_port: int = 0
    simulator_ports: dict[str, int] = field(default_factory=dict)
    #: Loopback addresses outbound calls leave from, one audit worker each (KEYHEALTH_EGRESS_SOURCES), as a
    #: deployed stack has one NAT gateway and worker per egress IP; bind and verify leave from the first.
    egress_sources: tuple[str, ...] = (DEFAULT_EGRESS,)
    egress_ips: str = DEFAULT_EGRESS
    external_urls: dict[str, str] = field(default_factory=dict)  # the *_BASE_URL variables that are set
    log_level: str = "WARNING"
    credential_store: str = "secretsmanager"  # CREDENTIAL_STORE: where new credentials go
    canary_seconds: float = 300.0  # KEYHEALTH_CANARY_SECONDS: the egress canary's period (0: off)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> LocalConfig:
        env = dict(os.environ if env is None else env)

        def port(name: str, default: int) -> int:
            raw = env.get(name, "").strip()
            if not raw:
                return default
            if not raw.isdigit() or int(raw) > 65535:
                raise StackError(f"{name} must be a port number (0 for a free one), got {raw!r}")
            return int(raw)

        def seconds(name: str, default: float) -> float:
            raw = env.get(name, "").strip()
            try:
                value = float(raw) if raw else default
            except ValueError:
                value = -1.0
            if value < 0:
                raise StackError(f"{name} must be a number of seconds (0 for never), got {raw!r}")
            return value

        sources = tuple(s.strip() for s in env.get("KEYHEALTH_EGRESS_SOURCES", "").split(",") if s.strip())
        sources = sources or (env.get("KEYHEALTH_EGRESS_SOURCE", "").strip() or DEFAULT_EGRESS,)
        if len(sources) > 4:
            raise StackError(f"KEYHEALTH_EGRESS_SOURCES takes at most 4 addresses (EgressIpCount), got {len(sources)}")
        store = env.get("CREDENTIAL_STORE", "").strip().lower() or "secretsmanager"
        if store not in ("secretsmanager", "kms"):
            raise StackError(f"CREDENTIAL_STORE must be secretsmanager or kms, got {store!r}")
        return cls(
            credential_store=store,
            port=port("KEYHEALTH_PORT", 3000),
            moto_port=port("KEYHEALTH_MOTO_PORT", 0),
            simulator_ports={name: port(f"KEYHEALTH_{name.upper()}_PORT", 0) for name in exchanges()},
            egress_sources=sources,
            egress_ips=env.get("EGRESS_IPS", "").strip() or ",".join(sources),
            external_urls={
                name: env[name].strip()
                for variables in exchanges().values()
                for name in variables
                if env.get(name, "").strip()
            },
            log_level=env.get("KEYHEALTH_LOG_LEVEL", "").strip().upper() or "WARNING",
            canary_seconds=seconds("KEYHEALTH_CANARY_SECONDS", 300.0),
        )

    @property
    def egress_source(self) -> str:
        """Where bind, verify and the first audit worker's calls leave from."""
        return self.egress_sources[0]


def check_egress_source(address: str) -> None:
    """Outbound calls bind this source address: it must exist on this machine."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind((address, 0))
    except OSError as error:
        raise StackError(
            f"cannot use {address} as the egress source address ({error.strerror}). Linux routes all of "
            f"127.0.0.0/8 to loopback; on macOS add the alias first: sudo ifconfig lo0 alias {address} up "
            "(or set KEYHEALTH_EGRESS_SOURCE=127.0.0.1)"
        ) from None


def aws_environment(moto_url: str) -> dict[str, str]:
    """Dummy credentials and moto's endpoint; nothing from ~/.aws may leak into the local stack."""
    return {
        "AWS_ENDPOINT_URL": moto_url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    }


def apply_aws_environment(moto_url: str) -> None:
    for name in list(os.environ):
        if name.startswith("AWS_ENDPOINT_URL_") or name in (
            "AWS_PROFILE",
            "AWS_DEFAULT_PROFILE",
            "AWS_SESSION_TOKEN",
            "AWS_SECURITY_TOKEN",
        ):
            del os.environ[name]
    os.environ.update(aws_environment(moto_url))


@contextmanager
def moto_server(port: int) -> Iterator[str]:
    from moto.moto_server.werkzeug_app import MotoRequestHandler
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per AWS call otherwise
    MotoRequestHandler.disable_nagle_algorithm = True  # keep-alive answers would wait ~40 ms each
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    try:
        server.start()
    except OSError as error:
        raise StackError(f"moto cannot listen on 127.0.0.1:{port}: {error.strerror} (KEYHEALTH_MOTO_PORT)") from None
    try:
        host, bound = server.get_host_and_port()
        yield f"http://{host}:{bound}"
    finally:
        server.stop()


@dataclass
class Resources:
    table: str
    idempotency_table: str
    kms_key_arn: str
    credentials_table: str
    credentials_key_arn: str
    topic_arn: str
    queue_urls: dict[str, tuple[str, ...]]  # exchange -> its audit queues, one per egress source
    queue_arns: dict[str, tuple[str, ...]]
    alert_queue_url: str
    notes: list[str]
    events_table: str = ""
    webhook_queue_url: str = ""
    webhook_queue_arn: str = ""
    webhook_dlq_url: str = ""
    webhook_key_arn: str = ""


def provision(session: Any, egress_count: int = 1) -> Resources:
    """The stack's data resources, from template.yaml's own definitions (`egress_count` queues per exchange)."""
    dynamodb, kms, sns, sqs = (session.client(s) for s in ("dynamodb", "kms", "sns", "sqs"))
    table, idempotency = f"{NAME_PREFIX}bindings", f"{NAME_PREFIX}idempotency"
    create_table(dynamodb, "BindingsTable", table)
    create_table(dynamodb, "IdempotencyTable", idempotency)
    key_arn = create_key(kms, "SecretsKey")
    # Both stores' resources, as template.yaml has them in every stack: `keyhealth migrate-credentials` can
    # move the local bindings either way whichever CREDENTIAL_STORE the stack runs.
    credentials_table = f"{NAME_PREFIX}credentials"
    create_table(dynamodb, "CredentialsTable", credentials_table)
    credentials_key_arn = create_key(kms, "CredentialsKey")
    topic_arn = create_topic(sns, "AlertTopic", f"{NAME_PREFIX}alerts")

    arns: dict[str, str] = {}

    def name_of(logical_id: str) -> str:
        return f"{NAME_PREFIX}{logical_id}"

    notes: list[str] = []
    queue_urls: dict[str, tuple[str, ...]] = {}
    for exchange in exchanges():
        urls = []
        for index in range(egress_count):
            logical_id = audit_queue_id(exchange, index)
            if has_resource(logical_id) and resource(logical_id)["Type"] == "AWS::SQS::Queue":
                urls.append(create_queue(sqs, logical_id, name_of=name_of, queues=arns))
                continue
            attributes = {"VisibilityTimeout": FALLBACK_VISIBILITY_SECONDS}
            url = sqs.create_queue(QueueName=name_of(logical_id), Attributes=attributes)["QueueUrl"]
            urls.append(url)
            arns[logical_id] = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
                "QueueArn"
            ]
            notes.append(logical_id)
        queue_urls[exchange] = tuple(urls)
    if notes:
        notes = [
            f"template.yaml declares no {', '.join(notes)}: created queues of those names with "
            f"VisibilityTimeout {FALLBACK_VISIBILITY_SECONDS} s and no dead-letter queue"
        ]

    events_table = f"{NAME_PREFIX}events"
    create_table(dynamodb, "EventsTable", events_table)
    webhook_queue = create_queue(sqs, "WebhookQueue", name_of=name_of, queues=arns)
    webhook_dlq = sqs.get_queue_url(QueueName=name_of("WebhookDeadLetterQueue"))["QueueUrl"]
    webhook_key = create_key(kms, "WebhookSecretsKey")

    alert_queue = sqs.create_queue(QueueName=f"{NAME_PREFIX}alert-sink")["QueueUrl"]
    alert_arn = sqs.get_queue_attributes(QueueUrl=alert_queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=alert_arn)
    return Resources(
        table=table,
        idempotency_table=idempotency,
        kms_key_arn=key_arn,
        credentials_table=credentials_table,
        credentials_key_arn=credentials_key_arn,
        topic_arn=topic_arn,
        queue_urls=queue_urls,
        queue_arns={
            exchange: tuple(arns[audit_queue_id(exchange, i)] for i in range(egress_count)) for exchange in queue_urls
        },
        alert_queue_url=alert_queue,
        notes=notes,
        events_table=events_table,
        webhook_queue_url=webhook_queue,
        webhook_queue_arn=arns["WebhookQueue"],
        webhook_dlq_url=webhook_dlq,
        webhook_key_arn=webhook_key,
    )


def exchanges() -> dict[str, tuple[str, ...]]:
    """Every exchange keyhealth knows (its registry) -> the base URL variables that point at it."""
    from keyhealth.exchanges.registry import SPECS

    return {spec.name: tuple(base.variable for base in spec.base_urls) for spec in SPECS}


def audit_queue_id(exchange: str, egress_index: int = 0) -> str:
    """The template's logical id of an exchange's audit queue for egress IP `egress_index` + 1
    (AuditQueueBinance, AuditQueueBingx; the second IP's AuditQueueBinanceB, ...)."""
    return f"AuditQueue{exchange.title()}{'' if egress_index == 0 else 'ABCD'[egress_index]}"


def start_simulators(config: LocalConfig, stack: ExitStack) -> tuple[dict[str, str], dict[str, str], list[DemoKey]]:
    """(base URL variables for keyhealth, simulator URLs by exchange, demo keys)."""
    urls: dict[str, str] = {}
    simulated: dict[str, str] = {}
    keys: list[DemoKey] = []
    for name, variables in exchanges().items():
        if variables[0] in config.external_urls:
            urls.update({v: config.external_urls.get(v, config.external_urls[variables[0]]) for v in variables})
            continue
        module = simulator_module(name)
        simulator = module.SIMULATOR()
        keys.extend(module.seed_demo(simulator, config.egress_source, other_egress_ips=config.egress_sources[1:]))
        try:
            server = SimulatorServer(simulator, port=config.simulator_ports.get(name, 0))
        except OSError as error:
            raise StackError(
                f"the {name} simulator cannot listen on port {config.simulator_ports.get(name)}: {error.strerror} "
                f"(KEYHEALTH_{name.upper()}_PORT)"
            ) from None
        simulated[name] = stack.enter_context(server).url
        # One simulator serves every base URL of its exchange (Binance's spot, /sapi and /fapi).
        urls.update({v: config.external_urls.get(v, simulated[name]) for v in variables})
    return urls, simulated, keys


def keyhealth_environment(config: LocalConfig, resources: Resources, base_urls: dict[str, str]) -> dict[str, str]:
    """What template.yaml's Globals give every function, pointed at the local resources."""
    return {
        "TABLE_NAME": resources.table,
        "IDEMPOTENCY_TABLE_NAME": resources.idempotency_table,
        "ALERT_TOPIC_ARN": resources.topic_arn,
        "SECRET_PREFIX": "keyhealth/local/",
        "SECRETS_KMS_KEY_ID": resources.kms_key_arn,
        "CREDENTIAL_STORE": config.credential_store,
        "CREDENTIALS_TABLE_NAME": resources.credentials_table,
        "CREDENTIALS_KMS_KEY_ID": resources.credentials_key_arn,
        "STACK_NAME": "keyhealth-local",
        "EGRESS_IPS": config.egress_ips,
        "KEYHEALTH_EGRESS_SOURCE": config.egress_source,
        **{f"AUDIT_QUEUE_URL_{exchange.upper()}": ",".join(urls) for exchange, urls in resources.queue_urls.items()},
        **base_urls,
        "EVENTS_TABLE_NAME": resources.events_table,
        "WEBHOOK_QUEUE_URL": resources.webhook_queue_url,
        "WEBHOOK_DLQ_URL": resources.webhook_dlq_url,
        "WEBHOOK_KMS_KEY_ID": resources.webhook_key_arn,
        # Local only: webhook receivers on this machine (http://127.0.0.1:...) are accepted; a deployed stack
        # takes public https URLs only (docs/webhooks.md).
        "KEYHEALTH_WEBHOOK_ALLOW_LOOPBACK": "1",
        "POWERTOOLS_SERVICE_NAME": "keyhealth",
        "POWERTOOLS_METRICS_NAMESPACE": "keyhealth",
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_LOG_LEVEL": config.log_level,
    }


class AuditLoop:
    """Delivers each audit queue's messages to the worker handler, as Lambda's SQS event source
    does: batches of 10, messages named in batchItemFailures stay (their visibility is what the
    worker set), the others are deleted. One poller per queue; with several egress sources, the pollers
    of source n run the worker on `workers[n]` (its AUDIT_EGRESS_IP and source address), as each deployed
    worker runs in its own NAT gateway's subnet."""

    def __init__(
        self,
        sqs: Any,
        resources: Resources,
        invoke: Callable[[dict[str, Any]], dict[str, Any]],
        workers: Sequence[Any] = (),
    ) -> None:
        self._sqs = sqs
        self._resources = resources
        self._invoke = invoke
        self._workers = list(workers)
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._poll, args=(exchange, index), name=f"audit-{exchange}-{index}", daemon=True)
            for exchange, urls in resources.queue_urls.items()
            for index in range(len(urls))
        ]

    def start(self) -> AuditLoop:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=3)

    def _poll(self, exchange: str, index: int) -> None:
        if index < len(self._workers):
            from keyhealth import wiring

            with wiring.scoped(self._workers[index]):
                self._poll_queue(exchange, index)
        else:
            self._poll_queue(exchange, index)

    def _poll_queue(self, exchange: str, index: int) -> None:
        url, arn = self._resources.queue_urls[exchange][index], self._resources.queue_arns[exchange][index]
        poll_queue(self._sqs, url, arn, self._invoke, self._stop, f"[audit] the {exchange} worker")


def poll_queue(
    sqs: Any, url: str, arn: str, invoke: Callable[[dict[str, Any]], dict[str, Any]], stop: threading.Event, who: str
) -> None:
    """Lambda's SQS event source for one queue, until `stop`: long-poll, invoke with the batch, delete what the
    function did not name in batchItemFailures."""
    while not stop.is_set():
        try:
            messages = sqs.receive_message(
                QueueUrl=url, MaxNumberOfMessages=BATCH_SIZE, WaitTimeSeconds=1, AttributeNames=["All"]
            ).get("Messages", [])
            if messages:
                deliver_batch(sqs, url, arn, messages, invoke, region=REGION)
        except Exception:  # keep polling: Lambda's event source does not stop on one failure
            if stop.is_set():
                return
            say(f"{who} invocation failed:\n{traceback.format_exc(limit=3)}")
            stop.wait(1)


class WebhookLoop:
    """The webhook deliverer on its queue, as the deployed WebhookQueue event source runs it: a platform's
    local receiver gets each event within a second or two; a failed delivery comes back after its back-off."""

    def __init__(self, sqs: Any, resources: Resources, invoke: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=poll_queue,
            args=(sqs, resources.webhook_queue_url, resources.webhook_queue_arn, invoke, self._stop, "[webhooks]"),
            name="webhook-deliverer",
            daemon=True,
        )

    def start(self) -> WebhookLoop:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=3)


#: The event of the EgressCanary schedules (template.yaml), which the worker answers with the canary.
CANARY_EVENT = {"source": "keyhealth.canary", "scheduled_time": "local"}


class CanaryLoop:
    """The egress canary, as the deployed stack's EgressCanary schedules run it: the worker handler with the
    canary event, from each egress source (its worker composition), at start and every `seconds` (0: never)."""

    def __init__(self, invoke: Callable[[dict[str, Any]], dict[str, Any]], workers: Sequence[Any], seconds: float):
        self._invoke = invoke
        self._workers = list(workers) or [None]
        self._seconds = seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="egress-canary", daemon=True)

    def start(self) -> CanaryLoop:
        if self._seconds > 0:
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=3)

    def run_once(self) -> None:
        from keyhealth import wiring

        for worker in self._workers:
            try:
                if worker is None:
                    self._invoke(CANARY_EVENT)
                else:
                    with wiring.scoped(worker):
                        self._invoke(CANARY_EVENT)
            except Exception:  # the next run tries again, as the schedule would
                say(f"[canary] the egress canary failed:\n{traceback.format_exc(limit=3)}")

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.run_once()
            self._stop.wait(self._seconds)


class AlertSink:
    """Reads the alert topic through an SQS subscription and prints each message as the email
    subscribers would read it (the `email` text of the per-protocol message)."""

    def __init__(self, sqs: Any, queue_url: str, topic_arn: str) -> None:
        self._sqs = sqs
        self._queue_url = queue_url
        self._topic_arn = topic_arn
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="alert-sink", daemon=True)
        self.alerts: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def start(self) -> AlertSink:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=3)

    def since(self, index: int) -> list[dict[str, Any]]:
        with self._lock:
            return self.alerts[index:]

    def _poll(self) -> None:
        while not self._stop.is_set():
            try:
                batch = self._sqs.receive_message(
                    QueueUrl=self._queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
                ).get("Messages", [])
                for message in batch:
                    self._show(json.loads(message["Body"]))
                    self._sqs.delete_message(QueueUrl=self._queue_url, ReceiptHandle=message["ReceiptHandle"])
            except Exception:
                if self._stop.is_set():
                    return
                say(f"[alerts] reading the alert queue failed:\n{traceback.format_exc(limit=3)}")
                self._stop.wait(1)

    def _email_text(self, message_id: str) -> str | None:
        """SQS subscribers get the `default` body; the email text is read from moto's own record
        of the published message (moto runs in this process)."""
        from moto.core import DEFAULT_ACCOUNT_ID
        from moto.sns.models import sns_backends

        topic = sns_backends[DEFAULT_ACCOUNT_ID][REGION].topics.get(self._topic_arn)
        for _ in range(20):  # moto records the message just after delivering it
            for sent_id, raw, *_rest in reversed(topic.sent_notifications if topic else []):
                if sent_id == message_id:
                    try:
                        return json.loads(raw).get("email")
                    except (ValueError, AttributeError):
                        return raw
            time.sleep(0.025)
        return None

    def _show(self, envelope: dict[str, Any]) -> None:
        subject = envelope.get("Subject") or "(no subject)"
        attributes = {k: v.get("Value") for k, v in (envelope.get("MessageAttributes") or {}).items()}
        try:
            body = json.loads(envelope.get("Message") or "null")
        except ValueError:
            body = envelope.get("Message")
        text = self._email_text(envelope.get("MessageId", "")) or json.dumps(body, indent=2)
        alert = {"subject": subject, "text": text, "attributes": attributes, "body": body}
        with self._lock:
            self.alerts.append(alert)
        severity = attributes.get("severity", "?")
        rule = "=" * 100
        say(
            f"\n{rule}\nALERT [{severity}] {time.strftime('%H:%M:%S')}  type={attributes.get('type', '?')}\n"
            f"Subject: {subject}\n\n{text}\n{rule}\n"
        )


def run_state(dynamodb: Any, table: str, run_id: str) -> dict[str, Any] | None:
    """An audit run's progress (the run store the handlers use) and, once finished, its summary."""
    from keyhealth import wiring

    state = wiring.container().audit.runs.load(run_id)
    if state is None:
        return None
    item = dynamodb.get_item(TableName=table, Key={"pk": {"S": f"RUN#{run_id}"}, "sk": {"S": "RUN"}}).get("Item", {})
    summary = json.loads(item["summary"]["S"]) if "summary" in item else None
    answer = asdict(state)
    answer["started_at"] = state.started_at.isoformat().replace("+00:00", "Z")
    return {**answer, "complete": state.complete, "summary": summary}


def demo_key_dict(key: DemoKey) -> dict[str, Any]:
    return {
        "exchange": key.exchange,
        "label": key.label,
        "key_type": key.key_type,
        "scopes": list(key.scopes),
        "expected_status": key.expected_status,
        "expected_codes": list(key.expected_codes),
        "api_key": key.api_key,
        "api_secret": key.api_secret,
        "passphrase": key.passphrase,
    }


def add_local_routes(
    api: LocalApi,
    resources: Resources,
    sink: AlertSink,
    keys: list[DemoKey],
    dynamodb: Any,
    outputs: dict[str, Any] | None = None,
) -> None:
    def health(_params: dict[str, str], _query: dict[str, str], _body: bytes) -> tuple[int, Any]:
        return 200, {"status": "ok", "api": api.url}

    def stack_outputs(_params: dict[str, str], _query: dict[str, str], _body: bytes) -> tuple[int, Any]:
        """What a deployed stack's CloudFormation outputs say (`keyhealth doctor` reads them here)."""
        return 200, outputs or {}

    def audit(_params: dict[str, str], _query: dict[str, str], body: bytes) -> tuple[int, Any]:
        try:
            request = json.loads(body or b"{}")
        except ValueError:
            return 400, {"error": {"code": "invalid_request", "message": "the body must be JSON"}}
        event = {"run_id": request["run_id"]} if isinstance(request, dict) and request.get("run_id") else {}
        answer = api.functions.invoke(DISPATCHER, event)
        return 202, answer

    def audit_state(params: dict[str, str], _query: dict[str, str], _body: bytes) -> tuple[int, Any]:
        state = run_state(dynamodb, resources.table, params["run_id"])
        if state is None:
            return 404, {"error": {"code": "not_found", "message": "no such audit run"}}
        return 200, state

    def alerts(_params: dict[str, str], query: dict[str, str], _body: bytes) -> tuple[int, Any]:
        after = int(query["after"]) if query.get("after", "").isdigit() else 0
        items = sink.since(after)
        return 200, {"alerts": items, "next": after + len(items)}

    def demo_keys(_params: dict[str, str], _query: dict[str, str], _body: bytes) -> tuple[int, Any]:
        return 200, {"keys": [demo_key_dict(k) for k in keys]}

    api.add_local_route("GET", "/_local/health", health)
    api.add_local_route("GET", "/_local/outputs", stack_outputs)
    api.add_local_route("POST", "/_local/audit", audit)
    api.add_local_route("GET", "/_local/audit/{run_id}", audit_state)
    api.add_local_route("GET", "/_local/alerts", alerts)
    api.add_local_route("GET", "/_local/demo-keys", demo_keys)


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    return [line.format(*header).rstrip(), line.format(*("-" * w for w in widths)).rstrip()] + [
        line.format(*row).rstrip() for row in rows
    ]


def start_screen(
    api_url: str,
    moto_url: str,
    simulated: dict[str, str],
    config: LocalConfig,
    resources: Resources,
    keys: list[DemoKey],
) -> str:
    out = ["", "keyhealth local stack is running (Ctrl-C stops it)", ""]
    out.append(f"  API          {api_url}   (also {api_url}/v1; caller: {PRINCIPAL_HEADER} header)")
    out.append(f"  moto         {moto_url}   (aws --endpoint-url {moto_url} --region {REGION} ...)")
    for name, variables in exchanges().items():
        variable = variables[0]
        where = simulated.get(name) or f"{config.external_urls[variable]}  (from {variable}: not simulated)"
        out.append(f"  {name:<12} {where}")
    out.append(
        f"  egress       {', '.join(config.egress_sources)} (EGRESS_IPS={config.egress_ips}): keys must whitelist "
        + ("this" if len(config.egress_sources) == 1 else "every one (a worker leaves from each)")
    )
    out.append(f"  table        {resources.table}   topic {resources.topic_arn}")
    out.append(
        f"  queues       {', '.join(u.rsplit('/', 1)[-1] for urls in resources.queue_urls.values() for u in urls)}"
    )
    out += [f"  note         {note}" for note in resources.notes]
    out.append(f"  principal    {DEFAULT_PRINCIPAL} unless the request sends {PRINCIPAL_HEADER}")
    out.append("")
    if keys:
        out.append("Demo keys (demo secrets of the simulators; bind them with these exact values and scopes):")
        pem: list[DemoKey] = []
        rows = []
        for key in keys:
            is_pem = key.api_secret.startswith("-----BEGIN")
            if is_pem:
                pem.append(key)
            rows.append(
                (
                    key.exchange,
                    key.label,
                    ",".join(key.scopes),
                    key.expected_status,
                    ",".join(key.expected_codes) or "-",
                    key.api_key,
                    f"({key.key_type} PEM below)" if is_pem else key.api_secret,
                    key.passphrase or "",
                )
            )
        header = ("exchange", "label", "scopes", "expect", "findings", "api_key", "api_secret", "passphrase")
        out += ["  " + line for line in _table(header, rows)]
        for key in pem:
            out += ["", f"  {key.exchange} {key.label} (key_type {key.key_type}) api_secret:", key.api_secret.strip()]
        out.append("")
    healthy = next((k for k in keys if k.exchange == "binance" and k.label == "healthy"), None)
    out.append("Try it (another terminal):")
    out.append("  make demo                      bind every demo key, run an audit, print the results and alerts")
    out.append("  make audit                     run the scheduled audit now and follow it")
    out.append("  bin/keyhealth list             the CLI (bin/keyhealth --help)")
    out.append(f"  curl -s {api_url}/v1/egress-ips")
    out.append(f"  curl -s {api_url}/v1/bindings -H '{PRINCIPAL_HEADER}: arn:aws:iam::111111111111:user/platform'")
    if healthy:
        body = json.dumps(
            {
                "user_id": "u-42",
                "exchange": "binance",
                "api_key": healthy.api_key,
                "api_secret": healthy.api_secret,
                "scopes": list(healthy.scopes),
                "label": "grid bot",
            }
        )
        out.append(f"  curl -s -X POST {api_url}/v1/bindings -H 'Content-Type: application/json' \\")
        out.append(f"       -H '{PRINCIPAL_HEADER}: arn:aws:iam::111111111111:user/platform' -d '{body}'")
    out.append(f"  curl -s -X POST {api_url}/_local/audit     (local only: start an audit run)")
    out.append("")
    out.append("Alerts (SNS messages, as email subscribers read them) and requests are printed below.")
    return "\n".join(out)


def serve(config: LocalConfig, ready: Callable[[str], None] | None = None, stop: threading.Event | None = None) -> int:
    stop = stop or threading.Event()
    for source in config.egress_sources:
        check_egress_source(source)
    with ExitStack() as stack:
        moto_url = stack.enter_context(moto_server(config.moto_port))
        apply_aws_environment(moto_url)
        import boto3  # after AWS_ENDPOINT_URL is set

        session = boto3.session.Session(region_name=REGION)
        resources = provision(session, len(config.egress_sources))
        base_urls, simulated, keys = start_simulators(config, stack)
        os.environ.update(keyhealth_environment(config, resources, base_urls))

        from keyhealth.config import settings

        settings.cache_clear()
        settings()  # a wrong environment fails here, naming the variable
        try:
            api = LocalApi("127.0.0.1", config.port)
        except OSError as error:
            raise StackError(
                f"the API cannot listen on 127.0.0.1:{config.port}: {error.strerror} (KEYHEALTH_PORT)"
            ) from None
        sqs = session.client("sqs")
        sink = AlertSink(sqs, resources.alert_queue_url, resources.topic_arn)
        outputs = {
            "outputs": {
                "ApiUrl": f"{api.url}/v1",
                "EgressIps": config.egress_ips,
                "AlertTopicArn": resources.topic_arn,
                "TableName": resources.table,
                "Region": REGION,
            },
            "aws_endpoint_url": moto_url,
        }
        add_local_routes(api, resources, sink, keys, session.client("dynamodb"), outputs)
        # Import the handlers now, so the first request does not pay for it.
        api.functions.preload([r.module for r in api.routes] + [DISPATCHER, WORKER, DELIVERER])
        workers = egress_workers(config)
        loop = AuditLoop(sqs, resources, lambda event: api.functions.invoke(WORKER, event), workers)
        canary = CanaryLoop(lambda event: api.functions.invoke(WORKER, event), workers, config.canary_seconds)
        webhooks = WebhookLoop(sqs, resources, lambda event: api.functions.invoke(DELIVERER, event))
        stack.callback(sink.stop)
        stack.callback(webhooks.stop)
        stack.callback(loop.stop)
        stack.callback(canary.stop)
        stack.callback(api.stop)
        sink.start()
        webhooks.start()
        loop.start()
        canary.start()
        api.start()
        say(start_screen(api.url, moto_url, simulated, config, resources, keys))
        if ready:
            ready(api.url)
        try:
            while not stop.wait(0.5):
                pass
        except StopRequested:
            pass
        say("\nStopping keyhealth local stack...")
    say("Stopped.")
    return 0


def egress_workers(config: LocalConfig) -> list[Any]:
    """With several egress sources, one worker composition per source: its AUDIT_EGRESS_IP (the n-th of
    EGRESS_IPS) and its source address. With one, none: the worker runs on the process's composition."""
    if len(config.egress_sources) < 2:
        return []
    from keyhealth import wiring
    from keyhealth.config import settings

    base = settings()
    if len(base.egress_ips) != len(config.egress_sources):
        raise StackError(
            f"EGRESS_IPS lists {len(base.egress_ips)} addresses for {len(config.egress_sources)} "
            "KEYHEALTH_EGRESS_SOURCES: one per source (leave EGRESS_IPS unset to use the sources)"
        )
    return [
        wiring.Container(wiring.Environment(settings=replace(base, audit_egress_ip=ip, egress_source_address=source)))
        for ip, source in zip(base.egress_ips, config.egress_sources, strict=True)
    ]


class StopRequested(BaseException):
    """SIGINT or SIGTERM arrived: unwinds the main thread, which then stops everything."""


def on_stop_signal(signum: int, _frame: Any) -> None:
    """Stop on the first SIGINT/SIGTERM, and only once.

    It raises rather than setting an Event: an Event's lock may be held by the very wait the
    signal interrupts (the main thread waits on it), and a handler that takes that lock would
    deadlock. Further signals are ignored so that they cannot cut the shutdown short.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise StopRequested(signal.Signals(signum).name)


def main() -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGINT, on_stop_signal)
    signal.signal(signal.SIGTERM, on_stop_signal)
    if os.environ.get("KEYHEALTH_LOG_LEVEL", "").upper() != "DEBUG":
        sys.stdout = MetricFilter(sys.stdout)
    say("Starting keyhealth local stack (Ctrl-C stops it)...")
    try:
        return serve(LocalConfig.from_env())
    except StopRequested:  # during start-up: what was started has been stopped on the way out
        say("Stopped.")
        return 0
    except StackError as error:
        print(f"keyhealth local stack: {error}", file=sys.stderr, flush=True)
        return 2
    except Exception as error:
        from keyhealth.config import ConfigError

        if isinstance(error, ConfigError):
            print(f"keyhealth local stack: {error}", file=sys.stderr, flush=True)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
