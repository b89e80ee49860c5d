"""GET /bindings, GET /bindings/{binding_id}, GET /egress-ips: reads only, no exchange calls."""

from __future__ import annotations

from typing import Annotated

from aws_lambda_powertools.event_handler.openapi.params import Query
from pydantic import Field

from keyhealth.api.http import (
    BindingIdPath,
    documented,
    json_response,
    lambda_handler_for,
    new_resolver,
    tenant_of,
)
from keyhealth.api.responses import BindingList, BindingOut, EgressIps
from keyhealth.api.rules import USER_ID_PATTERN
from keyhealth.bindings.model import ListQuery
from keyhealth.bindings.usecases import list_bindings, load_binding
from keyhealth.canary.usecases import egress_canary
from keyhealth.domain.model import Status
from keyhealth.exchanges.registry import Exchange
from keyhealth.observability import logger
from keyhealth.wiring import container

# Routes carry no return annotation: Powertools would build a schema from `Response`.
# What each answers is documented with `responses=` (and so in docs/openapi.json).
app = new_resolver()

_CURSOR = (
    "the `next_cursor` of the previous page (opaque); a value this API did not hand out answers 400 `invalid_cursor`"
)


@app.get(
    "/bindings/<binding_id>",
    summary="One binding with its last report",
    responses=documented(200, BindingOut, "the binding", 404, 503),
)
def get_binding(binding_id: BindingIdPath):
    tenant = tenant_of(app)
    logger.append_keys(binding_id=binding_id)
    binding = load_binding(tenant, binding_id, container().services)
    return json_response(200, BindingOut, binding.to_public_dict())


@app.get(
    "/bindings",
    summary="The caller's bindings, newest first",
    responses=documented(200, BindingList, "a page of bindings", 503),
)
def get_bindings(
    user_id: Annotated[str | None, Query(pattern=USER_ID_PATTERN, description="only this user's bindings")] = None,
    exchange: Annotated[Exchange | None, Query(description="only this exchange's bindings")] = None,
    status: Annotated[Status | None, Query(description="only bindings in this status")] = None,
    limit: Annotated[int, Query(description="at most this many bindings"), Field(ge=1, le=100)] = 50,
    cursor: Annotated[str | None, Query(min_length=1, max_length=512, description=_CURSOR)] = None,
):
    tenant = tenant_of(app)
    query = ListQuery(
        user_id=user_id, exchange=exchange.value if exchange else None, status=status, limit=limit, cursor=cursor
    )
    page = list_bindings(tenant, query, container().services)
    body = {"items": [b.to_public_dict() for b in page.items], "next_cursor": page.next_cursor}
    return json_response(200, BindingList, body)


@app.get(
    "/egress-ips",
    summary="The addresses users must add to their keys' IP whitelists",
    responses=documented(200, EgressIps, "the egress addresses"),
)
def egress_ips():
    tenant_of(app)
    wired = container()
    config = wired.settings
    body = {
        "egress_ips": list(config.egress_ips),
        "planned": [p.to_dict() for p in config.planned_egress_ips],
        "canary": egress_canary(wired.canary_store),
    }
    return json_response(200, EgressIps, body)


lambda_handler = lambda_handler_for(app)
