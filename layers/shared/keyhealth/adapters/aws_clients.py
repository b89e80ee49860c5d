"""boto3 clients built from one session, created lazily (boto3 costs ~250 ms to import)."""

from __future__ import annotations

from functools import cache
from typing import Any

import keyhealth.adapters.aws_errors  # noqa: F401 - keeps botocore's DEBUG logs quiet


@cache
def session() -> Any:
    import boto3  # lazy: routes that never touch AWS do not pay for it

    return boto3.session.Session()


@cache
def client(service: str) -> Any:
    """One client per service; honours AWS_ENDPOINT_URL (moto server in the local stack)."""
    from botocore.config import Config

    config = Config(retries={"mode": "standard", "max_attempts": 3}, connect_timeout=3, read_timeout=5)
    return session().client(service, config=config)
