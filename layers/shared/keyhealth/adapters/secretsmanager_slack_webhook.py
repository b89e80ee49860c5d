"""The Slack incoming webhook's URL, kept in Secrets Manager."""

from __future__ import annotations

from typing import Any

from keyhealth.adapters.aws_errors import storage_call
from keyhealth.adapters.slack_webhook import webhook_url_from_secret
from keyhealth.domain.credentials import Secret


def read_webhook_url(client: Any, secret_arn: str) -> Secret:
    """The secret string is the URL itself or JSON `{"url": ...}`; it never leaves as a plain str."""
    with storage_call("secretsmanager:GetSecretValue"):
        secret_string = client.get_secret_value(SecretId=secret_arn)["SecretString"]
    return webhook_url_from_secret(secret_string)
