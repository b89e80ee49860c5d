"""Turns botocore failures into `StorageError`, without echoing AWS's message text."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from botocore.exceptions import BotoCoreError, ClientError

from keyhealth.errors import StorageError


def error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", "Unknown"))


@contextmanager
def storage_call(operation: str) -> Iterator[None]:
    try:
        yield
    except ClientError as error:
        raise StorageError(operation, error_code(error)) from None
    except BotoCoreError as error:
        raise StorageError(operation, type(error).__name__) from None
