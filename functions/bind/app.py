"""POST /bindings and PUT /bindings/{binding_id}/credentials: the routes that write secrets."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.params import Body

from keyhealth.api.http import (
    BindingIdPath,
    documented,
    json_response,
    lambda_handler_for,
    new_resolver,
    outcome_body,
    tenant_of,
)
from keyhealth.api.idempotency import IdempotencyKeyHeader, idempotency_key, once, register_context
from keyhealth.api.requests import BindRequest, RotateRequest
from keyhealth.api.responses import BindingWithReport
from keyhealth.bindings.model import Outcome
from keyhealth.bindings.usecases import bind_key, load_binding, rotate_credentials
from keyhealth.observability import logger, record_check
from keyhealth.wiring import container

# Routes carry no return annotation: Powertools would build a schema from `Response`.
# What each answers is documented with `responses=` (and so in docs/openapi.json). The
# `idempotency` parameter documents the header; `idempotency_key` reads it (whatever its case).
app = new_resolver()

_BODY = (
    "JSON, at most 16 KiB as sent (a larger body answers 400 `body_too_large`); an object that repeats a key "
    "answers 400 `duplicate_key`"
)
# The binding a bind creates, for the operations on one binding (OpenAPI links).
_BOUND = {
    name: {"operationId": operation, "parameters": {"binding_id": "$response.body#/binding/binding_id"}}
    for name, operation in (
        ("GetBinding", "get_binding_bindings__binding_id__get"),
        ("VerifyBinding", "verify_bindings__binding_id__verify_post"),
        ("RotateCredentials", "rotate_bindings__binding_id__credentials_put"),
        ("Unbind", "delete_binding_bindings__binding_id__delete"),
    )
}


def _idempotently(tenant: str, operation: str, run: Callable[[], Response]) -> Response:
    event = app.current_event
    wired = container()
    return once(
        key=idempotency_key(dict(event.headers or {})),
        tenant=tenant,
        operation=operation,
        body=event.body or "",
        run=run,
        table_name=wired.settings.idempotency_table_name,
        dynamodb=wired.aws("dynamodb"),
    )


def _answer(status: int, outcome: Outcome) -> Response:
    logger.append_keys(binding_id=outcome.binding.binding_id)
    record_check(outcome.binding.exchange, outcome.report.status.value)
    return json_response(status, BindingWithReport, outcome_body(outcome))


@app.post(
    "/bindings",
    summary="Check a key live and store it if usable",
    responses=documented(
        201, BindingWithReport, "stored: the binding and its report", 409, 422, 503, checks_key=True, links=_BOUND
    ),
)
def bind(request: Annotated[BindRequest, Body(description=_BODY)], idempotency: IdempotencyKeyHeader = None):
    tenant = tenant_of(app)
    command = request.to_command()
    app.append_context(exchange=command.exchange)
    logger.append_keys(exchange=command.exchange, api_key=command.credentials.masked_api_key)
    services = container().services
    return _idempotently(tenant, "bind", lambda: _answer(201, bind_key(command, tenant, services)))


@app.put(
    "/bindings/<binding_id>/credentials",
    summary="Rotate: check new credentials, swap them in only if usable",
    responses=documented(
        200, BindingWithReport, "rotated: the binding and its report", 404, 409, 422, 503, checks_key=True
    ),
)
def rotate(
    binding_id: BindingIdPath,
    request: Annotated[RotateRequest, Body(description=_BODY)],
    idempotency: IdempotencyKeyHeader = None,
):
    tenant = tenant_of(app)
    logger.append_keys(binding_id=binding_id)
    services = container().services
    binding = load_binding(tenant, binding_id, services)  # 404 before anything else
    command = request.to_command(binding.exchange)
    app.append_context(exchange=binding.exchange)
    logger.append_keys(exchange=binding.exchange, api_key=command.credentials.masked_api_key)
    return _idempotently(
        tenant,
        f"rotate:{binding_id}",
        lambda: _answer(200, rotate_credentials(tenant, binding_id, command, services)),
    )


lambda_handler = lambda_handler_for(app, before=register_context)
