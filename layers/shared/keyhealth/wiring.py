"""The one composition root: the only place that knows which adapter backs which port.

A `Container` builds binding management's services, the audit's dependencies and the Slack
relay's collaborators from an `Environment` (settings, AWS clients, the HTTP transport to
the exchanges, a clock). Every handler asks `container()`; the local stack, the test
fixtures and the benchmark build a Container from their own Environment and `use()` it.
Nothing else constructs an adapter for production use, and nothing rewires by patching.

Everything is built on first use, and adapter modules are imported only then: a handler
pays at import time for nothing it does not call (boto3 ~250 ms, httpx ~140 ms).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from datetime import time as dt_time
from functools import cached_property
from typing import TYPE_CHECKING, Any

from keyhealth.config import Settings, settings
from keyhealth.domain.exchange import ExchangeChecker, ExchangeName
from keyhealth.domain.http import HttpTransport

if TYPE_CHECKING:
    from keyhealth.adapters.dynamodb_bindings import DynamoBindingRepository
    from keyhealth.adapters.dynamodb_canary import DynamoCanaryStore
    from keyhealth.adapters.routed_credentials import RoutedCredentialStore
    from keyhealth.adapters.slack_webhook import SlackWebhook
    from keyhealth.adapters.sqs_audit_tasks import SqsRedelivery, SqsTaskQueue
    from keyhealth.adapters.sqs_dead_letters import SqsDeadLetters
    from keyhealth.audit.usecases import AuditDeps, RollingDeps
    from keyhealth.bindings.migration import MigrationDeps
    from keyhealth.bindings.ports import CredentialStore, Services
    from keyhealth.domain.credentials import Secret
    from keyhealth.webhooks.ports import EventPublisher
    from keyhealth.webhooks.usecases import FeedPublisher, WebhookDeps


def _aws_client(service: str) -> Any:
    from keyhealth.adapters.aws_clients import client

    return client(service)


def _exchange_transport(config: Settings) -> HttpTransport:
    from keyhealth.adapters.http_transport import HttpxTransport, new_http_client

    return HttpxTransport(
        new_http_client(
            source_address=config.egress_source_address,
            connect_timeout=config.connect_timeout,
            read_timeout=config.read_timeout,
        )
    )


@dataclass
class Environment:
    """The outside world a Container builds from. The defaults are a Lambda container's."""

    settings: Settings = field(default_factory=settings)
    #: AWS client by service name ("dynamodb", "kms", "secretsmanager", "sns", "sqs")
    aws_client: Callable[[str], Any] = _aws_client
    #: the transport exchange calls go through; None: an httpx client built from the settings
    exchange_transport: HttpTransport | None = None
    clock: Callable[[], float] = time.time  # seconds since the epoch
    sleep: Callable[[float], None] = time.sleep
    monotonic: Callable[[], float] = time.monotonic  # for deadlines within one invocation
    jitter: Callable[[], float] = random.random  # back-off jitter in [0, 1)
    #: the HTTP client of the Slack webhook; None: one built from the settings
    slack_http_client: Any | None = None
    #: host name -> addresses, for the webhook sender's SSRF checks; None: the system's resolver
    resolve_host: Callable[[str, int], Sequence[str]] | None = None
    #: the webhook sender's TLS verification (a test's own CA); None: the system's trust store
    webhook_tls_verify: Any | None = None

    def now(self) -> datetime:
        """The use cases' time: UTC, whole seconds (what is stored and shown)."""
        return datetime.fromtimestamp(self.clock(), UTC).replace(microsecond=0)


class _LazyCheckers(Mapping[ExchangeName, ExchangeChecker]):
    """The exchange checkers, built (with their HTTP client) on the first check, not before: the
    read and unbind routes never call an exchange and must not pay for httpx."""

    def __init__(self, build: Callable[[], dict[ExchangeName, ExchangeChecker]]) -> None:
        self._build = build
        self._built: dict[ExchangeName, ExchangeChecker] | None = None
        self._lock = threading.Lock()

    def _checkers(self) -> dict[ExchangeName, ExchangeChecker]:
        if self._built is None:
            with self._lock:
                if self._built is None:
                    self._built = self._build()
        return self._built

    def __getitem__(self, name: ExchangeName) -> ExchangeChecker:
        return self._checkers()[name]

    def __iter__(self) -> Iterator[ExchangeName]:
        return iter(self._checkers())

    def __len__(self) -> int:
        return len(self._checkers())


class Container:
    """One per process (a Lambda container, the local stack, a test)."""

    def __init__(self, environment: Environment | None = None) -> None:
        self.environment = environment or Environment()
        self.settings = self.environment.settings
        self._webhook_url: Secret | None = None

    def aws(self, service: str) -> Any:
        return self.environment.aws_client(service)

    # ------------------------------------------------------------- binding management
    @cached_property
    def checkers(self) -> Mapping[ExchangeName, ExchangeChecker]:
        def build() -> dict[ExchangeName, ExchangeChecker]:
            from keyhealth.exchanges.registry import build_checkers

            transport = self.environment.exchange_transport or _exchange_transport(self.settings)
            return build_checkers(
                transport=transport,
                urls=dict(self.settings.exchange_urls),
                egress_ips=self.settings.egress_ips_from_here,
                planned_ips=self.settings.planned_egress_ips,
                clock=self.environment.clock,
            )

        return _LazyCheckers(build)

    @cached_property
    def bindings(self) -> DynamoBindingRepository:
        from keyhealth.adapters.dynamodb_bindings import DynamoBindingRepository

        return DynamoBindingRepository(self.aws("dynamodb"), self.settings.table_name)

    @cached_property
    def credentials(self) -> RoutedCredentialStore:
        """Both credential stores; new credentials go to the configured one (CREDENTIAL_STORE)."""
        from keyhealth.adapters.routed_credentials import KMS, SECRETS_MANAGER, RoutedCredentialStore

        return RoutedCredentialStore(
            {SECRETS_MANAGER: self._secretsmanager_store, KMS: self._kms_store}, new_in=self.settings.credential_store
        )

    def _secretsmanager_store(self) -> CredentialStore:
        from keyhealth.adapters.secretsmanager_credentials import SecretsManagerCredentialStore

        return SecretsManagerCredentialStore(self.aws("secretsmanager"), kms_key_id=self.settings.secrets_kms_key_id)

    def _kms_store(self) -> CredentialStore | None:
        """None where it is not configured (a test or local stack on Secrets Manager only; a deployed
        stack always has both, see template.yaml's CredentialsTable)."""
        from keyhealth.adapters.kms_credentials import KmsCredentialStore

        config = self.settings
        if not (config.credentials_table_name and config.credentials_kms_key_id and config.stack_name):
            return None
        return KmsCredentialStore(
            self.aws("dynamodb"),
            self.aws("kms"),
            table_name=config.credentials_table_name,
            key_id=config.credentials_kms_key_id,
            stack_name=config.stack_name,
            clock=self.environment.clock,
        )

    def credential_migration(self) -> MigrationDeps:
        """What `keyhealth migrate-credentials` runs on: both stores (each must be configured: a
        `StorageAdapterError` "StoreNotConfigured" otherwise), the bindings and their index."""
        from keyhealth.adapters.routed_credentials import STORES, name_of, store_of
        from keyhealth.bindings.migration import MigrationDeps
        from keyhealth.exchanges.registry import NAMES

        routed, env = self.credentials, self.environment
        return MigrationDeps(
            bindings=self.bindings,
            stores={name: routed.store(name) for name in STORES},
            store_of=store_of,
            name_of=name_of,
            exchanges=tuple(NAMES),
            recovery_window_days=self.settings.recovery_window_days,
            monotonic=env.monotonic,
            sleep=env.sleep,
        )

    @cached_property
    def services(self) -> Services:
        from keyhealth.adapters.sns_alerts import SnsAlertPublisher
        from keyhealth.bindings.ports import Services

        config = self.settings
        return Services(
            checkers=self.checkers,
            bindings=self.bindings,
            secrets=self.credentials,
            alerts=SnsAlertPublisher(self.aws("sns"), config.alert_topic_arn),
            secret_prefix=config.secret_prefix,
            egress_ips=config.egress_ips_from_here,
            now=self.environment.now,
            recovery_window_days=config.recovery_window_days,
            events=self.events,
        )

    # ------------------------------------------------------------------------ webhooks
    @cached_property
    def events(self) -> EventPublisher:
        """The tenants' event feed and webhooks; telling nobody where the stack has no events table."""
        config = self.settings
        if not (config.events_table_name and config.webhook_queue_url):
            from keyhealth.webhooks.ports import NoEvents

            return NoEvents()
        return self._feed_publisher

    @cached_property
    def _feed_publisher(self) -> FeedPublisher:
        from keyhealth.adapters.dynamodb_webhooks import DynamoEventFeed, DynamoWebhookStore
        from keyhealth.adapters.sqs_webhook_deliveries import SqsDeliveryQueue
        from keyhealth.webhooks.usecases import FeedPublisher

        config, env = self.settings, self.environment
        dynamodb = self.aws("dynamodb")
        return FeedPublisher(
            DynamoEventFeed(dynamodb, config.events_table_name, clock=env.clock),
            DynamoWebhookStore(dynamodb, config.events_table_name),
            SqsDeliveryQueue(self.aws("sqs"), config.webhook_queue_url),
            now=env.now,
            clock=env.clock,
            monotonic=env.monotonic,
        )

    @cached_property
    def webhooks(self) -> WebhookDeps:
        """The webhooks API's and the deliverer's collaborators (the deliverer's HTTP client is built here)."""
        from keyhealth.adapters.dynamodb_webhooks import DynamoEventFeed, DynamoWebhookStore
        from keyhealth.adapters.kms_webhook_secrets import KmsSecretCipher
        from keyhealth.adapters.sqs_dead_letters import SqsDeadLetters
        from keyhealth.adapters.sqs_webhook_deliveries import SqsDeliveryQueue
        from keyhealth.adapters.webhook_http import PinnedWebhookSender
        from keyhealth.webhooks.usecases import WebhookDeps

        config, env = self.settings, self.environment
        dynamodb = self.aws("dynamodb")
        sender_options: dict[str, Any] = {"allow_loopback_http": config.webhook_allow_loopback_http}
        if env.resolve_host is not None:
            sender_options["resolve"] = env.resolve_host
        if env.webhook_tls_verify is not None:
            sender_options["verify"] = env.webhook_tls_verify
        return WebhookDeps(
            feed=DynamoEventFeed(dynamodb, config.events_table_name, clock=env.clock),
            webhooks=DynamoWebhookStore(dynamodb, config.events_table_name),
            queue=SqsDeliveryQueue(self.aws("sqs"), config.webhook_queue_url),
            cipher=KmsSecretCipher(self.aws("kms"), config.webhook_kms_key_id, monotonic=env.monotonic),
            sender=PinnedWebhookSender(**sender_options),
            publisher=self._feed_publisher,
            now=env.now,
            clock=env.clock,
            jitter=env.jitter,
            dead_letters=SqsDeadLetters(self.aws("sqs"), config.webhook_dlq_url) if config.webhook_dlq_url else None,
        )

    # ------------------------------------------------------------------------- audit
    @cached_property
    def audit(self) -> AuditDeps:
        from keyhealth.adapters.dynamodb_circuit import DynamoCircuit
        from keyhealth.adapters.dynamodb_rate_budget import DynamoRateBudget
        from keyhealth.adapters.dynamodb_runs import DynamoRunStore
        from keyhealth.audit.usecases import AuditDeps
        from keyhealth.exchanges.registry import RATE_PLANS

        config, env = self.settings, self.environment
        dynamodb = self.aws("dynamodb")
        plans = dict(RATE_PLANS)
        return AuditDeps(
            services=self.services,
            budget=DynamoRateBudget(
                dynamodb,
                config.table_name,
                plans,
                share=config.audit_budget_share,
                window_scale=config.audit_window_scale,
                sleep=env.sleep,
                clock=env.clock,
                egress_ip=config.audit_egress_ip,
            ),
            circuit=DynamoCircuit(
                dynamodb,
                config.table_name,
                clock=env.clock,
                cache_seconds=config.audit_circuit_cache_seconds,
                egress_ip=config.audit_egress_ip,
            ),
            runs=DynamoRunStore(dynamodb, config.table_name),
            plans=plans,
            clock=env.clock,
            max_wait_seconds=config.audit_max_wait_seconds,
            egress_ip=config.audit_egress_ip or None,
            rolling=self._rolling(dynamodb) if config.audit_mode == "rolling" else None,
        )

    def _rolling(self, dynamodb: Any) -> RollingDeps:
        from keyhealth.adapters.dynamodb_ticks import DynamoTickStore
        from keyhealth.audit.rolling import RollingPlan
        from keyhealth.audit.usecases import RollingDeps

        config = self.settings
        return RollingDeps(
            ticks=DynamoTickStore(dynamodb, config.table_name),
            plan=RollingPlan(config.audit_tick_minutes),
            incident_window=timedelta(minutes=config.audit_incident_window_minutes),
            summary_at=dt_time(config.audit_summary_hour, 0),
        )

    @cached_property
    def canary_store(self) -> DynamoCanaryStore:
        from keyhealth.adapters.dynamodb_canary import DynamoCanaryStore

        return DynamoCanaryStore(self.aws("dynamodb"), self.settings.table_name)

    @cached_property
    def task_queue(self) -> SqsTaskQueue:
        from keyhealth.adapters.sqs_audit_tasks import SqsTaskQueue
        from keyhealth.exchanges.registry import NAMES

        config = self.settings
        return SqsTaskQueue(
            self.aws("sqs"), {name: config.queue_urls_for(name) for name in NAMES}, egress_ips=config.egress_ips
        )

    @cached_property
    def redelivery(self) -> SqsRedelivery:
        from keyhealth.adapters.sqs_audit_tasks import SqsRedelivery

        return SqsRedelivery(self.aws("sqs"))

    # ------------------------------------------------------------------------ notify
    @cached_property
    def exchange_names(self) -> dict[ExchangeName, str]:
        """Each exchange's own spelling of its name, for alerts that carry none."""
        from keyhealth.exchanges.registry import SPECS

        return {spec.name: spec.display_name for spec in SPECS}

    @cached_property
    def slack_webhook(self) -> SlackWebhook:
        from keyhealth.adapters.slack_webhook import RetryPolicy, SlackWebhook, new_slack_client

        config, env = self.settings, self.environment
        policy = RetryPolicy(max_attempts=config.slack_max_attempts, retry_after_cap=config.slack_retry_after_cap)
        client = env.slack_http_client or new_slack_client(policy.request_timeout)
        return SlackWebhook(
            client, policy, sleep=env.sleep, clock=env.monotonic, jitter=env.jitter, wall_clock=env.clock
        )

    def slack_webhook_url(self) -> Secret:
        """Read once per container; `forget_slack_webhook_url` when Slack says it is gone (rotated)."""
        if self._webhook_url is None:
            from keyhealth.adapters.secretsmanager_slack_webhook import read_webhook_url

            self._webhook_url = read_webhook_url(self.aws("secretsmanager"), self.settings.slack_webhook_secret_arn)
        return self._webhook_url

    def forget_slack_webhook_url(self) -> None:
        self._webhook_url = None

    @cached_property
    def slack_dead_letters(self) -> SqsDeadLetters | None:
        from keyhealth.adapters.sqs_dead_letters import SqsDeadLetters

        queue_url = self.settings.slack_dlq_url
        return SqsDeadLetters(self.aws("sqs"), queue_url) if queue_url else None


_lock = threading.Lock()
_current: Container | None = None
#: A container for the handlers run in this thread or task only (`scoped`): the local stack and the benchmark
#: run one audit worker per egress IP in one process, each leaving from its own address.
_scoped: ContextVar[Container | None] = ContextVar("keyhealth_container", default=None)


def container() -> Container:
    """The process's container: built from the real environment on first use (a Lambda cold
    start), unless the local stack, a test or the benchmark chose another with `use()` (or, for the
    calling thread only, `scoped()`)."""
    global _current
    if (chosen := _scoped.get()) is not None:
        return chosen
    if _current is None:
        with _lock:
            if _current is None:
                _current = Container()
    return _current


@contextmanager
def scoped(chosen: Container) -> Iterator[Container]:
    """Run the handlers called in this thread (or asyncio task) on `chosen` until the block ends."""
    token = _scoped.set(chosen)
    try:
        yield chosen
    finally:
        _scoped.reset(token)


def use(chosen: Container | None) -> None:
    """Run the handlers on `chosen` (None: go back to building from the real environment)."""
    global _current
    with _lock:
        _current = chosen
