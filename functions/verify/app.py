"""POST /bindings/{binding_id}/verify: re-check a stored key now (reads its secret)."""

from __future__ import annotations

from keyhealth.api.http import (
    BindingIdPath,
    documented,
    json_response,
    lambda_handler_for,
    new_resolver,
    outcome_body,
    tenant_of,
)
from keyhealth.api.responses import BindingWithReport
from keyhealth.bindings.usecases import verify_binding
from keyhealth.observability import logger, record_check
from keyhealth.wiring import container

# Routes carry no return annotation: Powertools would build a schema from `Response`.
# What each answers is documented with `responses=` (and so in docs/openapi.json).
app = new_resolver()


@app.post(
    "/bindings/<binding_id>/verify",
    summary="Re-check a binding now and store the report",
    responses=documented(200, BindingWithReport, "the binding and the new report", 404, 409, 503),
)
def verify(binding_id: BindingIdPath):
    tenant = tenant_of(app)
    logger.append_keys(binding_id=binding_id)
    outcome = verify_binding(tenant, binding_id, container().services)
    logger.append_keys(exchange=outcome.binding.exchange)
    record_check(outcome.binding.exchange, outcome.report.status.value)
    return json_response(200, BindingWithReport, outcome_body(outcome))


lambda_handler = lambda_handler_for(app)
