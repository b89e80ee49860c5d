"""`Idempotency-Key` for bind and rotate, on Powertools' idempotency utility.

The record is keyed by (tenant, operation, key) and validated against a SHA-256 of the
body, so it never holds a credential in clear; it stores the answer, which holds none.
Only successes are remembered: a 422 or 503 depends on the exchange's state at that
moment, and a retry after the user fixed the key must be checked again, not replayed.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from functools import cache
from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.params import Header
from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyAlreadyInProgressError,
    IdempotencyPersistenceLayerError,
    IdempotencyValidationError,
)

from keyhealth.api.rules import IDEMPOTENCY_HEADER, IDEMPOTENCY_KEY_RULE, InvalidRequest
from keyhealth.domain.errors import IdempotencyKeyReused, RequestInProgress, StorageUnavailable

HEADER = IDEMPOTENCY_HEADER
_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")
EXPIRES_AFTER_SECONDS = 24 * 3600

#: The header as the OpenAPI document declares it on bind and rotate. Read by `idempotency_key`
#: (whatever the name's case; a bad value is 400 `invalid_idempotency_key`); Powertools only
#: refuses it sent twice, which api.http answers with the same code.
IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        alias=HEADER,
        description=(
            "1 to 255 visible ASCII characters (anything else answers 400 `invalid_idempotency_key`): a retry "
            "with the same key and body within 24 h gets the first success back and changes nothing; the same "
            "key with another body answers 422 `idempotency_key_reused`, and while the first request runs, "
            "409 `request_in_progress`"
        ),
        json_schema_extra={"pattern": _KEY.pattern},
    ),
]


class _NotRemembered(Exception):
    def __init__(self, response: Response) -> None:
        super().__init__("not remembered")
        self.response = response


@cache
def _persistence(table_name: str, dynamodb: Any) -> DynamoDBPersistenceLayer:
    return DynamoDBPersistenceLayer(table_name=table_name, boto3_client=dynamodb)


_CONFIG = IdempotencyConfig(
    event_key_jmespath="[tenant, operation, key]",
    payload_validation_jmespath="payload",
    expires_after_seconds=EXPIRES_AFTER_SECONDS,
    raise_on_no_idempotency_key=True,
)


def register_context(context: Any) -> None:
    """Lets in-progress records expire with the invocation (a crashed call does not block retries)."""
    _CONFIG.register_lambda_context(context)


def idempotency_key(headers: dict[str, str]) -> str | None:
    """The header's value, whatever its case (API Gateway passes names as sent)."""
    value = next((v for k, v in headers.items() if k.lower() == HEADER.lower()), None)
    if value is None:
        return None
    if not _KEY.fullmatch(value):
        raise InvalidRequest("invalid_idempotency_key", IDEMPOTENCY_KEY_RULE, HEADER)
    return value


def once(
    *,
    key: str | None,
    tenant: str,
    operation: str,
    body: str,
    run: Callable[[], Response],
    table_name: str,
    dynamodb: Any,
) -> Response:
    """Run `run` once per (tenant, operation, key); a retry gets the first success back."""
    if key is None:
        return run()

    @idempotent_function(
        data_keyword_argument="request", config=_CONFIG, persistence_store=_persistence(table_name, dynamodb)
    )
    def remembered(request: dict[str, str]) -> dict[str, Any]:
        response = run()
        if not 200 <= response.status_code < 300:
            raise _NotRemembered(response)
        return {"status": response.status_code, "body": response.body, "headers": dict(response.headers)}

    request = {
        "tenant": tenant,
        "operation": operation,
        "key": key,
        "payload": hashlib.sha256(body.encode()).hexdigest(),
    }
    try:
        answer = remembered(request=request)
    except _NotRemembered as outcome:
        return outcome.response
    except IdempotencyAlreadyInProgressError:
        raise RequestInProgress(f"a request with this {HEADER} is still in progress; retry shortly") from None
    except IdempotencyValidationError:
        raise IdempotencyKeyReused(f"this {HEADER} was used with a different body") from None
    except IdempotencyPersistenceLayerError as error:
        raise StorageUnavailable("idempotency") from error
    headers = {k: v for k, v in answer["headers"].items() if k.lower() != "content-type"}
    return Response(
        status_code=answer["status"],
        content_type="application/json",
        body=answer["body"] if isinstance(answer["body"], str) else json.dumps(answer["body"]),
        headers=headers,
    )
