"""Wires the real services once per Lambda container (lazily: nothing connects at import)."""

from __future__ import annotations

from datetime import datetime
from functools import cache

from keyhealth.config import settings
from keyhealth.model import utc_now
from keyhealth.ports import Services


@cache
def services() -> Services:
    from keyhealth.aws.alerts import SnsAlertPublisher
    from keyhealth.aws.bindings import DynamoBindingRepository
    from keyhealth.aws.clients import client
    from keyhealth.aws.secrets import SecretsManagerStore
    from keyhealth.exchanges.registry import build_adapters, http_client_for

    config = settings()
    return Services(
        adapters=build_adapters(config, http_client_for(config)),
        bindings=DynamoBindingRepository(client("dynamodb"), config.table_name),
        secrets=SecretsManagerStore(client("secretsmanager"), kms_key_id=config.secrets_kms_key_id),
        alerts=SnsAlertPublisher(client("sns"), config.alert_topic_arn),
        secret_prefix=config.secret_prefix,
        egress_ips=config.egress_ips,
        now=_now,
        recovery_window_days=config.recovery_window_days,
    )


def _now() -> datetime:
    return utc_now().replace(microsecond=0)
