"""DELETE /bindings/{binding_id}: schedule the secret's deletion and remove the metadata."""

from __future__ import annotations

from aws_lambda_powertools.event_handler import Response

from keyhealth.api.http import BindingIdPath, documented, lambda_handler_for, new_resolver, tenant_of
from keyhealth.bindings.usecases import unbind
from keyhealth.observability import logger
from keyhealth.wiring import container

# Routes carry no return annotation: Powertools would build a schema from `Response`.
# What each answers is documented with `responses=` (and so in docs/openapi.json).
app = new_resolver()


@app.delete(
    "/bindings/<binding_id>",
    summary="Unbind: the secret is scheduled for deletion, the metadata removed",
    responses=documented(204, None, "unbound (no body)", 404, 409, 503),
)
def delete_binding(binding_id: BindingIdPath):
    tenant = tenant_of(app)
    logger.append_keys(binding_id=binding_id)
    unbind(tenant, binding_id, container().services)
    return Response(status_code=204, body="")


lambda_handler = lambda_handler_for(app)
