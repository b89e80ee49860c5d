"""Turns botocore failures into `StorageAdapterError`, without echoing AWS's message text."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from botocore.exceptions import BotoCoreError, ClientError

from keyhealth.domain.errors import StorageAdapterError

# botocore logs whole request bodies at DEBUG, CreateSecret's SecretString included: keep it
# quiet whatever level an operator sets for the function's own logs. Every AWS adapter imports
# this module, so this holds however its client was built (here, or by a test or the local stack).
for _name in ("botocore", "boto3", "urllib3"):
    logging.getLogger(_name).setLevel(logging.WARNING)


def error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", "Unknown"))


def conditional(operation: str, call: Callable[..., object], **params: object) -> bool:
    """`call(**params)`, a conditional write: False when its condition failed, True when it was written; any
    other failure is a StorageAdapterError naming `operation`."""
    try:
        call(**params)
        return True
    except ClientError as error:
        if error_code(error) == "ConditionalCheckFailedException":
            return False
        raise StorageAdapterError(operation, error_code(error)) from None
    except BotoCoreError as error:
        raise StorageAdapterError(operation, type(error).__name__) from None


@contextmanager
def storage_call(operation: str) -> Iterator[None]:
    try:
        yield
    except ClientError as error:
        raise StorageAdapterError(operation, error_code(error)) from None
    except BotoCoreError as error:
        raise StorageAdapterError(operation, type(error).__name__) from None
