"""Configuration, read once from the environment (contract section 4).

A wrong value fails at start with a message naming the variable, never deep in a request.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from functools import cache

from keyhealth.domain.model import PlannedEgressIp
from keyhealth.exchanges.registry import NAMES, SPECS

#: Every base URL an exchange module declares (BINANCE_BASE_URL, ...), with its default.
DEFAULT_BASE_URLS: dict[str, str] = {url.variable: url.default for spec in SPECS for url in spec.base_urls}


#: CREDENTIAL_STORE's values (template parameter CredentialStore).
CREDENTIAL_STORES = ("secretsmanager", "kms")
#: AUDIT_MODE's values (template parameter AuditMode): one nightly run, or a tick every few minutes
#: checking the bindings whose slot of the day is due (keyhealth.audit.rolling).
AUDIT_MODES = ("nightly", "rolling")


class ConfigError(ValueError):
    """The environment is wrong; the message names the variable and what it should be."""


@dataclass(frozen=True)
class Settings:
    table_name: str = ""
    secret_prefix: str = "keyhealth/"  # noqa: S105 - a name prefix, not a secret
    alert_topic_arn: str = ""
    audit_queue_url: str = ""
    egress_ips: tuple[str, ...] = ()
    #: PLANNED_EGRESS_IPS (`IP@YYYY-MM-DD`, comma-separated): announced egress IPs keys must whitelist by then
    planned_egress_ips: tuple[PlannedEgressIp, ...] = ()
    #: BaseUrl.variable -> URL, for every base URL the exchange specs declare
    exchange_urls: tuple[tuple[str, str], ...] = tuple(DEFAULT_BASE_URLS.items())
    audit_budget_share: float = 0.5
    idempotency_table_name: str = ""
    secrets_kms_key_id: str | None = None  # the stack's customer-managed key for binding secrets
    #: where bind stores new credentials: "secretsmanager" or "kms" (both stay readable: see
    #: keyhealth.adapters.routed_credentials)
    credential_store: str = "secretsmanager"
    credentials_table_name: str = ""  # the KMS store's table (CredentialsTable)
    credentials_kms_key_id: str = ""  # the KMS store's key (CredentialsKey): data keys under it
    stack_name: str = ""  # the KMS encryption context's keyhealth:stack
    recovery_window_days: int = 7  # how long an unbound key's secret can still be restored
    # Local stack only: the loopback address outbound exchange calls leave from.
    egress_source_address: str | None = None
    connect_timeout: float = 3.0
    read_timeout: float = 5.0
    # Slack notifier: no secret ARN means no Slack (the stack deploys it only when one is given).
    slack_webhook_secret_arn: str = ""
    slack_dlq_url: str = ""  # where messages Slack did not take are kept
    slack_max_attempts: int = 5
    slack_retry_after_cap: float = 15.0  # seconds: the longest wait honoured on one 429

    # Webhooks and the event feed (docs/webhooks.md): no table means no events (a tool, a test).
    events_table_name: str = ""  # EventsTable: webhooks, the feed, dedupe markers
    webhook_queue_url: str = ""  # WebhookQueue: deliveries on their way
    webhook_dlq_url: str = ""  # WebhookDeadLetterQueue: deliveries given up after the retry window
    webhook_kms_key_id: str = ""  # WebhookSecretsKey: encrypts the signing secrets
    #: Local stack only (KEYHEALTH_WEBHOOK_ALLOW_LOOPBACK=1): http:// webhook URLs on loopback are accepted.
    webhook_allow_loopback_http: bool = False

    # Audit: one queue per exchange (AUDIT_QUEUE_URL_<EXCHANGE>; AUDIT_QUEUE_URL serves any
    # exchange without its own), so that one throttled exchange never blocks another's backlog. With
    # several egress IPs, AUDIT_QUEUE_URL_<EXCHANGE> lists one queue per IP, in EGRESS_IPS' order.
    audit_queue_urls: tuple[tuple[str, str], ...] = ()
    #: The egress IP this process's exchange calls leave from (an audit worker pinned to its NAT's subnet;
    #: empty for the API functions, whose calls leave from any): its rate budget and circuit are this IP's.
    audit_egress_ip: str = ""
    audit_window_scale: float = 1.0  # benchmarks only: windows and their budgets shrink together
    audit_max_wait_seconds: float = 20.0  # how long one worker invocation waits for budget
    audit_concurrency: int = 10  # checks in flight per worker invocation
    audit_circuit_cache_seconds: float = 1.0  # how long a worker trusts the circuit it last read
    audit_mode: str = "nightly"
    audit_tick_minutes: int = 5  # rolling: a tick every this many minutes (a divisor of 1440)
    audit_summary_hour: int = 6  # rolling: the daily summary's hour (UTC) covers the 24 hours before it
    audit_incident_window_minutes: int = 30  # rolling: incidents are judged over the checks of this window

    @property
    def egress_ips_from_here(self) -> tuple[str, ...]:
        """EGRESS_IPS with this process's own egress IP first (reports name it as the one checked from)."""
        if not self.audit_egress_ip:
            return self.egress_ips
        return (self.audit_egress_ip, *(ip for ip in self.egress_ips if ip != self.audit_egress_ip))

    @property
    def audit_spread_ips(self) -> tuple[str, ...]:
        """The egress IPs the dispatcher spreads bindings over: every one when each has its own queues (and
        its own worker), else none (one worker whose calls leave from any NAT: tasks name no IP)."""
        if len(self.egress_ips) > 1 and all(len(self.queue_urls_for(name)) == len(self.egress_ips) for name in NAMES):
            return self.egress_ips
        return ()

    def queue_urls_for(self, exchange: str) -> tuple[str, ...]:
        """The exchange's audit queues, one per egress IP (in EGRESS_IPS' order) or one for all."""
        listed = dict(self.audit_queue_urls).get(exchange) or self.audit_queue_url
        return tuple(url.strip() for url in listed.split(",") if url.strip())

    def url(self, variable: str) -> str:
        """A configured exchange base URL by its variable (BINANCE_BASE_URL)."""
        return dict(self.exchange_urls)[variable]

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env

        def text(name: str, default: str = "") -> str:
            return env.get(name, default).strip()

        def number(name: str, default: float, low: float, high: float) -> float:
            raw = text(name)
            if not raw:
                return default
            try:
                value = float(raw)
            except ValueError:
                raise ConfigError(f"{name} must be a number, got {raw!r}") from None
            if not low <= value <= high:
                raise ConfigError(f"{name} must be between {low} and {high}, got {value}")
            return value

        egress = tuple(ip.strip() for ip in text("EGRESS_IPS").split(",") if ip.strip())
        for ip in egress:
            try:
                ipaddress.ip_address(ip)
            except ValueError:
                raise ConfigError(f"EGRESS_IPS must be comma-separated IP addresses, got {ip!r}") from None
        planned = tuple(_planned_ip(item.strip()) for item in text("PLANNED_EGRESS_IPS").split(",") if item.strip())
        slack_secret = text("SLACK_WEBHOOK_SECRET_ARN")
        if slack_secret and not (slack_secret.startswith("arn:") and ":secretsmanager:" in slack_secret):
            raise ConfigError(f"SLACK_WEBHOOK_SECRET_ARN must be a Secrets Manager secret ARN, got {slack_secret!r}")
        slack_dlq = text("SLACK_DLQ_URL")
        if slack_dlq and not slack_dlq.startswith(("https://", "http://")):
            raise ConfigError(f"SLACK_DLQ_URL must be an SQS queue URL, got {slack_dlq!r}")
        store = text("CREDENTIAL_STORE", "secretsmanager").lower() or "secretsmanager"
        if store not in CREDENTIAL_STORES:
            raise ConfigError(f"CREDENTIAL_STORE must be one of {', '.join(CREDENTIAL_STORES)}, got {store!r}")
        if store == "kms":
            for name in ("CREDENTIALS_TABLE_NAME", "CREDENTIALS_KMS_KEY_ID", "STACK_NAME"):
                if not text(name):
                    raise ConfigError(f"{name} must be set when CREDENTIAL_STORE is kms")
        audit_egress_ip = text("AUDIT_EGRESS_IP")
        if audit_egress_ip and audit_egress_ip not in egress:
            raise ConfigError(
                f"AUDIT_EGRESS_IP must be one of EGRESS_IPS ({', '.join(egress)}), got {audit_egress_ip!r}"
            )
        for name in NAMES:
            queues = [u for u in text(f"AUDIT_QUEUE_URL_{name.upper()}").split(",") if u.strip()]
            if len(queues) > 1 and len(queues) != len(egress):
                raise ConfigError(
                    f"AUDIT_QUEUE_URL_{name.upper()} must list one queue, or one per egress IP ({len(egress)}), "
                    f"got {len(queues)}"
                )
        mode = text("AUDIT_MODE", "nightly").lower() or "nightly"
        if mode not in AUDIT_MODES:
            raise ConfigError(f"AUDIT_MODE must be one of {', '.join(AUDIT_MODES)}, got {mode!r}")
        tick_minutes = int(number("AUDIT_TICK_MINUTES", 5, 1, 60))
        if 1440 % tick_minutes:
            raise ConfigError(f"AUDIT_TICK_MINUTES must divide a day (1440 minutes), got {tick_minutes}")
        webhook_queue = text("WEBHOOK_QUEUE_URL")
        if webhook_queue and not text("EVENTS_TABLE_NAME"):
            raise ConfigError("EVENTS_TABLE_NAME must be set when WEBHOOK_QUEUE_URL is")
        loopback = text("KEYHEALTH_WEBHOOK_ALLOW_LOOPBACK").lower()
        if loopback not in ("", "0", "1", "true", "false"):
            raise ConfigError(f"KEYHEALTH_WEBHOOK_ALLOW_LOOPBACK must be 1 or 0, got {loopback!r}")
        urls = []
        for name, default in DEFAULT_BASE_URLS.items():
            url = text(name) or default
            if not url.startswith(("https://", "http://")):
                raise ConfigError(f"{name} must be an http(s) URL, got {url!r}")
            urls.append((name, url.rstrip("/")))
        return cls(
            table_name=text("TABLE_NAME"),
            secret_prefix=text("SECRET_PREFIX", "keyhealth/") or "keyhealth/",
            alert_topic_arn=text("ALERT_TOPIC_ARN"),
            audit_queue_url=text("AUDIT_QUEUE_URL"),
            egress_ips=egress,
            planned_egress_ips=planned,
            audit_budget_share=number("AUDIT_BUDGET_SHARE", 0.5, 0.01, 1.0),
            idempotency_table_name=text("IDEMPOTENCY_TABLE_NAME"),
            secrets_kms_key_id=text("SECRETS_KMS_KEY_ID") or None,
            credential_store=store,
            credentials_table_name=text("CREDENTIALS_TABLE_NAME"),
            credentials_kms_key_id=text("CREDENTIALS_KMS_KEY_ID"),
            stack_name=text("STACK_NAME"),
            recovery_window_days=int(number("SECRET_RECOVERY_DAYS", 7, 7, 30)),
            egress_source_address=text("KEYHEALTH_EGRESS_SOURCE") or None,
            connect_timeout=number("EXCHANGE_CONNECT_TIMEOUT", 3.0, 0.1, 30.0),
            read_timeout=number("EXCHANGE_READ_TIMEOUT", 5.0, 0.1, 60.0),
            audit_queue_urls=tuple(
                (name, text(f"AUDIT_QUEUE_URL_{name.upper()}"))
                for name in NAMES
                if text(f"AUDIT_QUEUE_URL_{name.upper()}")
            ),
            audit_window_scale=number("AUDIT_WINDOW_SCALE", 1.0, 0.001, 100.0),
            audit_max_wait_seconds=number("AUDIT_MAX_WAIT_SECONDS", 20.0, 0.0, 600.0),
            audit_concurrency=int(number("AUDIT_CONCURRENCY", 10, 1, 64)),
            audit_circuit_cache_seconds=number("AUDIT_CIRCUIT_CACHE_SECONDS", 1.0, 0.0, 60.0),
            audit_egress_ip=audit_egress_ip,
            audit_mode=mode,
            audit_tick_minutes=tick_minutes,
            audit_summary_hour=int(number("AUDIT_SUMMARY_HOUR", 6, 0, 23)),
            audit_incident_window_minutes=int(number("AUDIT_INCIDENT_WINDOW_MINUTES", 30, 5, 1440)),
            slack_webhook_secret_arn=slack_secret,
            slack_dlq_url=slack_dlq,
            slack_max_attempts=int(number("SLACK_MAX_ATTEMPTS", 5, 1, 10)),
            slack_retry_after_cap=number("SLACK_RETRY_AFTER_CAP", 15.0, 0.0, 300.0),
            exchange_urls=tuple(urls),
            events_table_name=text("EVENTS_TABLE_NAME"),
            webhook_queue_url=webhook_queue,
            webhook_dlq_url=text("WEBHOOK_DLQ_URL"),
            webhook_kms_key_id=text("WEBHOOK_KMS_KEY_ID"),
            webhook_allow_loopback_http=loopback in ("1", "true"),
        )


def _planned_ip(item: str) -> PlannedEgressIp:
    ip, at, day = item.partition("@")
    try:
        ipaddress.ip_address(ip.strip())
        effective_at = date.fromisoformat(day.strip()) if at else None
    except ValueError:
        effective_at = None
    if effective_at is None:
        raise ConfigError(f"PLANNED_EGRESS_IPS must be comma-separated IP@YYYY-MM-DD, got {item!r}")
    return PlannedEgressIp(ip.strip(), effective_at)


@cache
def settings() -> Settings:
    """The process's settings, read on first use (Lambda: at cold start)."""
    return Settings.from_env()
