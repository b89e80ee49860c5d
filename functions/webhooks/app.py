"""PUT|GET|DELETE /webhook, POST /webhook/secret, POST /webhook/test, GET /events: a tenant's webhook and its
event feed (docs/webhooks.md). Calls no exchange, so it runs outside the VPC."""

from __future__ import annotations

from typing import Annotated

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.params import Body, Query
from pydantic import Field

from keyhealth.api.http import documented, json_response, lambda_handler_for, new_resolver, tenant_of
from keyhealth.api.requests import WebhookRequest
from keyhealth.api.responses import EventList, EventQueued, WebhookOut, WebhookSecret, WebhookSet
from keyhealth.domain.model import format_time
from keyhealth.webhooks.model import EVENT_ID
from keyhealth.webhooks.usecases import (
    delete_webhook,
    list_events,
    rotate_secret,
    send_test,
    set_webhook,
    show_webhook,
)
from keyhealth.wiring import container

# Routes carry no return annotation: Powertools would build a schema from `Response`.
app = new_resolver()

_BODY = (
    "Where to POST the caller's events. The URL must be https and resolve to public addresses only "
    "(`invalid_webhook_url` otherwise); `events` chooses the types (all when omitted). A second PUT changes "
    "the URL and types and keeps the secret."
)


@app.put(
    "/webhook",
    summary="Set the caller's webhook (the signing secret is in the answer when it is created)",
    responses=documented(200, WebhookSet, "the webhook; `secret` only when this call created it", 409, 503),
)
def put_webhook(request: Annotated[WebhookRequest, Body(description=_BODY)]):
    tenant = tenant_of(app)
    webhook, secret = set_webhook(tenant, request.url, request.event_types(), container().webhooks)
    body = {
        "url": webhook.url,
        "events": list(webhook.events),
        "created_at": format_time(webhook.created_at),
        "updated_at": format_time(webhook.updated_at),
    }
    if secret is not None:
        body["secret"] = secret.reveal()
    return json_response(200, WebhookSet, body)


@app.get(
    "/webhook",
    summary="The caller's webhook and how delivery has been going (never the secret)",
    responses=documented(200, WebhookOut, "the webhook", 404, 503),
)
def get_webhook():
    tenant = tenant_of(app)
    return json_response(200, WebhookOut, show_webhook(tenant, container().webhooks).to_public_dict())


@app.delete(
    "/webhook",
    summary="Stop sending events (the feed keeps them)",
    responses=documented(204, None, "deleted", 404, 503),
)
def remove_webhook():
    tenant = tenant_of(app)
    delete_webhook(tenant, container().webhooks)
    return Response(status_code=204)


@app.post(
    "/webhook/secret",
    summary="A new signing secret; the old one keeps signing, as a second v1=, for 24 hours",
    responses=documented(200, WebhookSecret, "the new secret", 404, 409, 503),
)
def new_secret():
    tenant = tenant_of(app)
    secret, expires_at = rotate_secret(tenant, container().webhooks)
    body = {"secret": secret.reveal(), "previous_secret_expires_at": format_time(expires_at)}
    return json_response(200, WebhookSecret, body)


@app.post(
    "/webhook/test",
    summary="Send a ping event to the webhook now",
    responses=documented(202, EventQueued, "the ping is queued", 404, 503),
)
def test_webhook():
    tenant = tenant_of(app)
    return json_response(202, EventQueued, {"event_id": send_test(tenant, container().webhooks)})


@app.get(
    "/events",
    summary="The caller's events, oldest first, kept 30 days: the payloads the webhook gets",
    responses=documented(200, EventList, "a page of events", 503),
)
def get_events(
    after: Annotated[
        str | None,
        Query(pattern=EVENT_ID.pattern, description="only events after this event id (the last one read)"),
    ] = None,
    limit: Annotated[int, Query(description="at most this many events"), Field(ge=1, le=500)] = 100,
):
    tenant = tenant_of(app)
    events, more = list_events(tenant, after, limit, container().webhooks)
    return json_response(200, EventList, {"items": [e.payload() for e in events], "has_more": more})


lambda_handler = lambda_handler_for(app)
