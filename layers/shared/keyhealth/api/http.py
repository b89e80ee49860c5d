"""One place that turns domain outcomes and errors into HTTP answers.

Every function builds its resolver with `new_resolver()`, so error codes, body limits and
logging behave the same on every route. Nothing here logs a request body or an exception
message that could hold one.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.event_handler.openapi.exceptions import (
    RequestUnsupportedContentType,
    RequestValidationError,
)
from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse
from aws_lambda_powertools.logging import correlation_paths
from pydantic import BaseModel

from keyhealth.api import responses
from keyhealth.api.rules import MAX_BODY_BYTES, InvalidRequest
from keyhealth.domain.errors import (
    AlreadyBound,
    BindingNotFound,
    ConcurrentUpdate,
    ExchangeMismatch,
    ExchangeUnreachable,
    IdempotencyKeyReused,
    InvalidCursor,
    KeyUnusable,
    RequestInProgress,
    StorageUnavailable,
)
from keyhealth.domain.model import Report
from keyhealth.domain.tenancy import UnknownPrincipal, tenant_from_principal
from keyhealth.observability import entry_point, logger, record_check


def json_response(
    status: int, model: type[BaseModel], body: dict[str, Any], headers: dict[str, str] | None = None
) -> Response:
    """Answer `body` as the response model `model` says: validated against it (models forbid
    extra fields), so what the OpenAPI document declares is what is sent, or the test fails."""
    answer = model.model_validate(body).model_dump(mode="json", exclude_unset=True)
    return Response(
        status_code=status,
        content_type="application/json",
        body=json.dumps(answer, separators=(",", ":")),
        headers=headers or {},
    )


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    report: Report | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Response:
    error = {"code": code, "message": message, **{k: v for k, v in extra.items() if v is not None}}
    body: dict[str, Any] = {"error": error}
    if report is not None:
        body["report"] = report.to_dict()
        return json_response(status, responses.ErrorWithReport, body, headers)
    return json_response(status, responses.ErrorOut, body, headers)


def tenant_of(app: APIGatewayRestResolver) -> str:
    """The caller's tenant, from the IAM principal API Gateway authenticated (AWS_IAM)."""
    identity = app.current_event.request_context.identity
    tenant = tenant_from_principal(identity.user_arn)
    logger.append_keys(tenant=tenant)
    return tenant


def _too_large() -> Response:
    return error_response(400, "body_too_large", f"the body is larger than {MAX_BODY_BYTES} bytes")


class InvalidJson(ValueError):
    """The body is not JSON this API reads (not UTF-8, nested too deep, a number too long...)."""


def _refuse_constant(name: str) -> Any:
    raise InvalidJson(f"{name} is not JSON")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object whose keys repeat is refused: which value is meant is a guess (the last wins in
    Python, the first elsewhere), and a guess about credentials is not ours to make."""
    value: dict[str, Any] = {}
    for key, item in pairs:
        if key in value:
            raise InvalidRequest("duplicate_key", "the body repeats a key", key if len(key) <= 64 else None)
        value[key] = item
    return value


def _json_object(body: str) -> dict[str, Any]:
    """The body as a JSON object. The raw body was vetted before routing (`_refusal`)."""
    try:
        value = json.loads(body, object_pairs_hook=_no_duplicates, parse_constant=_refuse_constant)
    except RecursionError:
        raise InvalidJson("the body is nested too deep") from None
    except (json.JSONDecodeError, InvalidJson, InvalidRequest):
        raise  # Powertools answers a JSONDecodeError as invalid JSON; ours have handlers
    except ValueError:  # an integer past Python's 4,300-digit conversion limit
        raise InvalidJson("the body holds a number too long to read") from None
    # Powertools would take the first element of a list as the body (a form-data convenience).
    if not isinstance(value, dict):
        raise InvalidRequest("invalid_request", "the body must be a JSON object", "body")
    return value


_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})


def _refusal(event: dict[str, Any]) -> Response | None:
    """What is wrong with the raw request before any route sees it, or None.

    Checked once, at the door, for every route: a body that is not UTF-8 (API Gateway passes it
    base64-encoded) or holds a lone surrogate, a body over the size limit, and a body of another
    content type than JSON (form data included: Powertools would parse it as a form).
    """
    raw = event.get("body") or ""
    if not isinstance(raw, str):
        return error_response(400, "invalid_json", "the body is not valid JSON")
    try:
        data = base64.b64decode(raw, validate=True) if event.get("isBase64Encoded") else raw.encode("utf-8")
        data.decode("utf-8")
    except (ValueError, UnicodeError):  # binascii.Error is a ValueError
        return error_response(400, "invalid_json", "the body is not UTF-8 JSON")
    if len(data) > MAX_BODY_BYTES:
        return _too_large()
    if data and str(event.get("httpMethod", "")).upper() in _WITH_BODY:
        headers = {str(k).lower(): str(v) for k, v in (event.get("headers") or {}).items()}
        media_type = headers.get("content-type", "application/json").split(";")[0].strip().lower()
        if media_type != "application/json":
            return error_response(
                400, "unsupported_content_type", "the body must be JSON (Content-Type: application/json)"
            )
    return None


def _proxy_answer(response: Response) -> dict[str, Any]:
    """A Response as API Gateway's REST proxy integration takes it (answers given before routing)."""
    headers = {"Content-Type": str(response.content_type or "application/json")}
    headers.update({k: str(v) for k, v in (response.headers or {}).items() if isinstance(v, str)})
    return {"statusCode": response.status_code, "headers": headers, "body": response.body, "isBase64Encoded": False}


def new_resolver() -> APIGatewayRestResolver:
    app = APIGatewayRestResolver(enable_validation=True, json_body_deserializer=_json_object)

    @app.exception_handler(InvalidJson)
    def _invalid_json(error: InvalidJson) -> Response:
        return error_response(400, "invalid_json", str(error))

    @app.exception_handler(RequestValidationError)
    def _invalid(error: RequestValidationError) -> Response:
        problems = error.errors()
        if any(p.get("type") == "json_invalid" for p in problems):
            return error_response(400, "invalid_json", "the body is not valid JSON")
        # loc and msg only: pydantic's `input` would echo the value, which may be a secret.
        details = [
            {"field": ".".join(str(part) for part in p.get("loc", ())[1:]) or "body", "problem": p.get("msg", "")}
            for p in problems
        ]
        first = details[0] if details else {"field": "body", "problem": "invalid"}
        body: dict[str, Any] = {
            "error": {"code": "invalid_request", "message": f"{first['field']}: {first['problem']}"}
        }
        body["error"]["details"] = details
        return json_response(400, responses.ErrorOut, body)

    @app.exception_handler(RequestUnsupportedContentType)
    def _not_json(error: RequestUnsupportedContentType) -> Response:
        return error_response(400, "unsupported_content_type", "the body must be JSON (Content-Type: application/json)")

    @app.exception_handler(InvalidRequest)
    def _bad_input(error: InvalidRequest) -> Response:
        return error_response(400, error.code, str(error), field=error.field)

    @app.exception_handler(InvalidCursor)
    def _bad_cursor(error: InvalidCursor) -> Response:
        return error_response(400, "invalid_cursor", str(error), field="cursor")

    @app.exception_handler(ExchangeMismatch)
    def _mismatch(error: ExchangeMismatch) -> Response:
        return error_response(400, error.code, str(error))

    @app.exception_handler(UnknownPrincipal)
    def _forbidden(error: UnknownPrincipal) -> Response:
        return error_response(403, "forbidden", str(error))

    @app.exception_handler(BindingNotFound)
    def _not_found(error: BindingNotFound) -> Response:
        return error_response(404, error.code, "no such binding")

    @app.exception_handler(AlreadyBound)
    def _already_bound(error: AlreadyBound) -> Response:
        return error_response(409, error.code, str(error), binding_id=error.binding_id)

    @app.exception_handler(ConcurrentUpdate)
    def _conflict(error: ConcurrentUpdate) -> Response:
        return error_response(409, error.code, str(error))

    @app.exception_handler(RequestInProgress)
    def _in_progress(error: RequestInProgress) -> Response:
        return error_response(409, error.code, str(error), headers={"Retry-After": "1"})

    @app.exception_handler(IdempotencyKeyReused)
    def _reused(error: IdempotencyKeyReused) -> Response:
        return error_response(422, error.code, str(error))

    @app.exception_handler(KeyUnusable)
    def _unusable(error: KeyUnusable) -> Response:
        record_check(app.context.get("exchange", "unknown"), "failing")
        return error_response(422, error.code, "the key cannot be used; nothing was stored", report=error.result.report)

    @app.exception_handler(ExchangeUnreachable)
    def _unreachable(error: ExchangeUnreachable) -> Response:
        record_check(app.context.get("exchange", "unknown"), "unknown")
        retry = max(1, int(error.result.retry_after or 30))
        return error_response(
            503, error.code, str(error), report=error.result.report, headers={"Retry-After": str(retry)}
        )

    @app.exception_handler(StorageUnavailable)
    def _storage(error: StorageUnavailable) -> Response:
        logger.warning("storage failure", extra={"step": error.step, "cause": str(error.__cause__ or "")})
        return error_response(503, error.code, str(error), headers={"Retry-After": "1"})

    @app.exception_handler(Exception)
    def _unexpected(error: Exception) -> Response:
        # The type only: an unexpected exception's text is not known to be free of secrets.
        logger.error("unexpected error", extra={"error_type": type(error).__name__})
        import traceback

        traceback.print_exc()
        return error_response(500, "internal_error", "an unexpected error occurred; it has been logged")

    return app


_ERROR_DESCRIPTIONS = {
    400: ("malformed request (stable `error.code`)", "ErrorOut"),
    404: ("no such binding for this caller", "ErrorOut"),
    409: ("already_bound, concurrent_update or request_in_progress", "ErrorOut"),
    422: ("the key fails its check (nothing changed), or idempotency_key_reused", "ErrorWithReport"),
    503: ("the exchange or storage could not answer; retry after Retry-After", "ErrorWithReport"),
}


def documented(status: int, model: type | None, description: str, *errors: int) -> dict[int, OpenAPIResponse]:
    """OpenAPI `responses` for a route: its success answer and the errors it can give."""
    answers: dict[int, OpenAPIResponse] = {status: {"description": description}}
    if model is not None:
        answers[status]["content"] = {"application/json": {"model": model}}
    for code in errors:
        text, name = _ERROR_DESCRIPTIONS[code]
        answers[code] = {"description": text, "content": {"application/json": {"model": getattr(responses, name)}}}
    return answers


def outcome_body(outcome: Any) -> dict[str, Any]:
    body = {"binding": outcome.binding.to_public_dict(), "report": outcome.report.to_dict()}
    if outcome.same_account_bindings:
        body["same_account_bindings"] = list(outcome.same_account_bindings)
    return body


def lambda_handler_for(
    app: APIGatewayRestResolver, *, before: Callable[[Any], None] | None = None
) -> Callable[[dict[str, Any], Any], dict[str, Any]]:
    """The Lambda entry point of an API function: its resolver behind the logging context."""

    @entry_point(correlation_id_path=correlation_paths.API_GATEWAY_REST)
    def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        if before is not None:
            before(context)
        refused = _refusal(event)
        if refused is not None:
            return _proxy_answer(refused)
        return app.resolve(event, context)

    return lambda_handler
