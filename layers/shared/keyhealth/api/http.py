"""One place that turns domain outcomes and errors into HTTP answers.

Every function builds its resolver with `new_resolver()`, so error codes, body limits and
logging behave the same on every route. Nothing here logs a request body or an exception
message that could hold one.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Annotated, Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.event_handler.openapi.exceptions import (
    RequestUnsupportedContentType,
    RequestValidationError,
)
from aws_lambda_powertools.event_handler.openapi.params import Path
from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse, OpenAPIResponseHeader
from aws_lambda_powertools.logging import correlation_paths
from pydantic import BaseModel

from keyhealth.api import responses
from keyhealth.api.rules import IDEMPOTENCY_HEADER, IDEMPOTENCY_KEY_RULE, MAX_BODY_BYTES, InvalidRequest
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
    WebhookNotFound,
)
from keyhealth.domain.ids import BINDING_ID
from keyhealth.domain.model import Report
from keyhealth.domain.tenancy import UnknownPrincipal, tenant_from_principal
from keyhealth.observability import entry_point, logger, record_check
from keyhealth.webhooks.urls import WebhookUrlRefused


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
    """An error answer, validated against the body model its status documents
    (`responses.ERROR_BODIES`): a code the document does not list for the status fails."""
    error = {"code": code, "message": message, **{k: v for k, v in extra.items() if v is not None}}
    body: dict[str, Any] = {"error": error}
    if report is not None:
        body["report"] = report.to_dict()
    return json_response(status, responses.ERROR_BODIES[(status, report is not None)], body, headers)


#: The `{binding_id}` of a route, documented with its shape (the repository answers any other as missing).
BindingIdPath = Annotated[
    str,
    Path(
        description="a binding id (`bnd_` and a ULID); any other value answers 404, as a missing binding does",
        json_schema_extra={"pattern": BINDING_ID.pattern},
    ),
]


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


def _names_idempotency_header(loc: Any) -> bool:
    return len(loc) == 2 and loc[0] == "header" and str(loc[1]).lower() == IDEMPOTENCY_HEADER.lower()


def _frames(error: BaseException) -> list[str]:
    """`file:line in function` of each frame of the error's traceback, innermost last."""
    import traceback

    frames = traceback.StackSummary.extract(traceback.walk_tb(error.__traceback__), lookup_lines=False)
    return [f"{f.filename}:{f.lineno} in {f.name}" for f in frames][-8:]


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
        if any(_names_idempotency_header(p.get("loc", ())) for p in problems):  # sent twice: which one?
            return error_response(400, "invalid_idempotency_key", IDEMPOTENCY_KEY_RULE, field=IDEMPOTENCY_HEADER)
        # loc and msg only: pydantic's `input` would echo the value, which may be a secret.
        details = [
            {"field": ".".join(str(part) for part in p.get("loc", ())[1:]) or "body", "problem": p.get("msg", "")}
            for p in problems
        ]
        first = details[0] if details else {"field": "body", "problem": "invalid"}
        message = f"{first['field']}: {first['problem']}"
        return error_response(400, "invalid_request", message, details=details)

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

    @app.exception_handler(WebhookNotFound)
    def _no_webhook(error: WebhookNotFound) -> Response:
        return error_response(404, error.code, str(error))

    @app.exception_handler(WebhookUrlRefused)
    def _refused_url(error: WebhookUrlRefused) -> Response:
        return error_response(400, error.code, str(error), field="url")

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
        # The type and where it was raised only: an unexpected exception's text is not known to be
        # free of secrets (a traceback would print it, and the source lines around each frame).
        logger.error("unexpected error", extra={"error_type": type(error).__name__, "raised_at": _frames(error)})
        return error_response(500, "internal_error", "an unexpected error occurred; it has been logged")

    return app


_RETRY_AFTER: dict[str, OpenAPIResponseHeader] = {
    "Retry-After": {
        "description": "seconds to wait before retrying",
        "schema": {"type": "integer", "minimum": 1},
    }
}

# What each error status means, and its body model. Every route can answer 400 (a body that is
# not UTF-8 JSON or over 16 KiB is refused at the door, on every route), 403 and 500.
_ERRORS: dict[int, tuple[str, type[BaseModel]]] = {
    400: (
        "the request breaks a rule; `error.code` says which, `error.field` names the field or header, "
        "and for `invalid_request` `error.details` lists every field with its problem (never the value)",
        responses.BadRequest,
    ),
    403: (
        "`forbidden`: the caller is not an IAM user or role. API Gateway itself answers 403 with "
        '`{"message": ...}` (or `{"Message": ...}`) before any function runs: no or an invalid SigV4 '
        "signature, a method or path the API does not have, a resource policy's deny",
        responses.ForbiddenAnswer,
    ),
    404: (
        "`binding_not_found`: no such binding for this caller (another tenant's binding alike); "
        "`webhook_not_found`: the caller has no webhook (PUT /webhook first)",
        responses.NotFound,
    ),
    409: (
        "`already_bound` (with the `binding_id` that holds this key), `concurrent_update` (another request "
        "changed the binding meanwhile: read and retry) or `request_in_progress` (the same `Idempotency-Key` "
        "is still running: `Retry-After`)",
        responses.Conflict,
    ),
    500: ("`internal_error`: an unexpected error, logged; nothing is left half-done", responses.InternalError),
    503: (
        "`storage_unavailable`: an AWS call failed and whatever was half-done was undone; retry after `Retry-After`",
        responses.StorageUnavailable,
    ),
}
# Bind and rotate check the key live: their 422 and 503 can carry the check's report.
_CHECK_ERRORS: dict[int, tuple[str, type[BaseModel]]] = {
    422: (
        "`key_failing` with the check's `report`: the key cannot be used and nothing changed; or "
        "`idempotency_key_reused` (no report): this `Idempotency-Key` came with another body",
        responses.Unprocessable,
    ),
    503: (
        "`exchange_unavailable` with the check's `report`: the exchange could not answer and nothing "
        "changed; or `storage_unavailable` (no report): an AWS call failed and whatever was half-done was "
        "undone. Retry after `Retry-After`",
        responses.CheckUnavailable,
    ),
}
_ALWAYS = (400, 403, 500)


def documented(
    status: int,
    model: type[BaseModel] | None,
    description: str,
    *errors: int,
    checks_key: bool = False,
    links: dict[str, Any] | None = None,
) -> dict[int, OpenAPIResponse]:
    """OpenAPI `responses` for a route: its success answer (`model` None: no body) and the errors
    it can give besides 400, 403 and 500, which every route can. `checks_key`: the route checks
    a key live (bind, rotate), so its 422 and 503 may carry the check's report."""
    success: OpenAPIResponse = {"description": description}
    # An empty content map says "no body" (scripts/openapi.py drops it); Powertools would otherwise
    # document a JSON body of any shape.
    success["content"] = {"application/json": {"model": model}} if model is not None else {}
    if links:
        success["links"] = links
    answers: dict[int, OpenAPIResponse] = {status: success}
    for code in sorted({*_ALWAYS, *errors}):
        text, body = (_CHECK_ERRORS if checks_key and code in _CHECK_ERRORS else _ERRORS)[code]
        answer: OpenAPIResponse = {"description": text, "content": {"application/json": {"model": body}}}
        if code in (409, 503):
            answer["headers"] = _RETRY_AFTER
        answers[code] = answer
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
