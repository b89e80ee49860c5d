"""Response models: every answer is validated against one (api.http.json_response) and the
OpenAPI document is generated from them, so the document says what the API sends.

`extra="forbid"`: a field the code sends but the model lacks fails the request in tests
instead of going out undocumented. Each error status has its own models, whose `code` lists
the stable codes that status carries: an answer with a code its status does not document
fails validation (in the tests), like a success body with an undocumented field.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel

from keyhealth.domain.credentials import KeyType
from keyhealth.domain.ids import BINDING_ID
from keyhealth.domain.model import Audience, FindingCode, Scope, Severity, Status


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


# The answer's timestamps: RFC 3339, UTC, to the second ("2026-11-21T02:00:00Z").
Timestamp = Annotated[str, Field(json_schema_extra={"format": "date-time"})]
BindingId = Annotated[str, Field(pattern=BINDING_ID.pattern)]


class FindingOut(_Out):
    code: FindingCode
    severity: Severity
    audience: Audience
    message: str
    remedy: str
    exchange_code: str | int | None = None
    exchange_message: str | None = None


class PermissionsOut(_Out):
    read: bool | None = None
    spot: bool | None = None
    futures: bool | None = None
    margin: bool | None = None
    withdraw: bool | None = None
    transfer: bool | None = None


class ReportOut(_Out):
    status: Status
    checked_at: Timestamp
    egress_ip: str | None = None
    permissions: PermissionsOut
    ip_restricted: bool | None = None
    ip_whitelist: list[str] | None = None
    trading_expires_at: Timestamp | None = None
    findings: list[FindingOut]


class BindingOut(_Out):
    binding_id: BindingId
    user_id: str
    exchange: str
    label: str | None = None
    key_type: KeyType
    api_key_masked: str
    scopes: list[Scope]
    status: Status
    account_id: str | None = None
    created_at: Timestamp
    updated_at: Timestamp
    last_checked_at: Timestamp | None = None
    last_report: ReportOut | None = None


class BindingWithReport(_Out):
    binding: BindingOut
    report: ReportOut
    same_account_bindings: list[BindingId] | None = None  # other keys of the same exchange account


class BindingList(_Out):
    items: list[BindingOut]
    next_cursor: str | None = None


class PlannedIpOut(_Out):
    ip: str
    effective_at: str  # YYYY-MM-DD (UTC): keys must whitelist `ip` before this day


class CanaryOut(_Out):
    """The egress canary's last call of an exchange's public time endpoint from one egress IP."""

    ok: bool
    code: str | None = None  # why not: egress_blocked (451, 403, 418), timeout, exchange_unavailable, rate_limited
    latency_ms: float
    clock_offset_ms: int | None = None  # the exchange's clock minus ours
    checked_at: str
    down_since: str | None = None  # set while the exchange refuses or does not answer this IP


class EgressIps(_Out):
    egress_ips: list[str]
    #: announced egress IPs (PlannedEgressIps): add them before their day, keeping the current ones
    planned: list[PlannedIpOut] = []
    #: {egress IP: {exchange: the canary's last result}}; empty until the canary has run
    canary: dict[str, dict[str, CanaryOut]] = {}


# -------------------------------------------------------------------------------- webhooks
WebhookEventTypeOut = Literal[
    "binding.status_changed",
    "binding.trading_permission_expiring",
    "binding.unreachable",
    "binding.deleted",
    "binding.planned_ip_missing",
    "ping",
]
EventId = Annotated[str, Field(pattern=r"^evt_[0-9A-HJKMNP-TV-Z]{26}$")]


class WebhookSet(_Out):
    """PUT /webhook's answer: `secret` only when the webhook was created (the one time it is shown)."""

    url: str
    events: list[WebhookEventTypeOut]
    created_at: Timestamp
    updated_at: Timestamp
    secret: str | None = Field(default=None, description="the signing secret (whsec_...): store it now")


class WebhookOut(_Out):
    """GET /webhook: where events go and how delivery has been going; never the secret."""

    url: str
    events: list[WebhookEventTypeOut]
    created_at: Timestamp
    updated_at: Timestamp
    failing_since: Timestamp | None = None  # the first failed attempt since the last delivery
    last_error: str | None = None  # the last failed attempt's reason ("http 500", "timeout after 10 s")
    last_delivered_at: Timestamp | None = None
    dead_lettered: int = 0  # events given up after 24 hours of retries
    last_dead_lettered_at: Timestamp | None = None
    previous_secret_expires_at: Timestamp | None = None  # until then, deliveries carry the old secret's v1= too


class WebhookSecret(_Out):
    secret: str = Field(description="the new signing secret (whsec_...): store it now")
    previous_secret_expires_at: Timestamp


class EventQueued(_Out):
    event_id: EventId


class FindingBrief(_Out):
    code: str
    severity: str
    audience: str
    message: str
    remedy: str


class EventOut(BaseModel):
    """One event, as it is POSTed to the webhook. Fields besides these depend on `type` (docs/webhooks.md);
    new ones may be added, so receivers must ignore fields they do not know."""

    model_config = ConfigDict(extra="allow")

    id: EventId
    type: WebhookEventTypeOut
    created_at: Timestamp
    binding_id: BindingId | None = None
    user_id: str | None = None
    exchange: str | None = None
    exchange_name: str | None = None
    api_key_masked: str | None = None
    previous_status: Status | None = None
    status: Status | None = None
    findings: list[FindingBrief] | None = None


class EventList(_Out):
    items: list[EventOut]
    has_more: bool  # another page follows: ask again with `after` = the last item's id


# ---------------------------------------------------------------------------------- errors
# `{"error": {"code", "message", ...}}`; 422 key_failing and 503 exchange_unavailable add the
# check's `report`. One body model per (status, shape); `error_body` picks it.

BadRequestCode = Literal[
    "invalid_request",
    "invalid_json",
    "body_too_large",
    "unsupported_content_type",
    "duplicate_key",
    "whitespace_in_credential",
    "invalid_api_key_format",
    "invalid_secret_format",
    "invalid_passphrase_format",
    "passphrase_required",
    "passphrase_not_allowed",
    "key_type_not_supported",
    "exchange_mismatch",
    "invalid_cursor",
    "invalid_idempotency_key",
    "invalid_webhook_url",
]


class Problem(_Out):
    field: str
    problem: str


class BadRequestError(_Out):
    code: BadRequestCode
    message: str
    field: str | None = None  # the field (or header) that broke the rule, when one did
    details: list[Problem] | None = None  # invalid_request: every field that broke a rule


class BadRequest(_Out):
    error: BadRequestError


class ForbiddenError(_Out):
    code: Literal["forbidden"]
    message: str


class Forbidden(_Out):
    error: ForbiddenError


def _gateway_schema(schema: dict[str, Any]) -> None:
    schema["properties"] = {"message": {"type": "string"}, "Message": {"type": "string"}}
    schema["minProperties"] = 1


class GatewayDenied(BaseModel):
    """API Gateway's own answer, given before any function runs (no or an invalid SigV4 signature,
    a method or path the API does not have, a resource policy's deny): `{"message": ...}`, or
    `{"Message": ...}` for a resource policy's deny. Documentation only: no handler sends it."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, json_schema_extra=_gateway_schema)

    message: str | None = None
    policy_message: str | None = Field(default=None, alias="Message")


def _one_of(schema: dict[str, Any]) -> None:
    # pydantic writes a union as anyOf; these branches exclude each other (one requires what the
    # other forbids), and oneOf says so.
    schema["oneOf"] = schema.pop("anyOf")


class ForbiddenAnswer(RootModel[Forbidden | GatewayDenied]):
    model_config = ConfigDict(json_schema_extra=_one_of)


class NotFoundError(_Out):
    code: Literal["binding_not_found", "webhook_not_found"]
    message: str


class NotFound(_Out):
    error: NotFoundError


class ConflictError(_Out):
    code: Literal["already_bound", "concurrent_update", "request_in_progress"]
    message: str
    binding_id: BindingId | None = None  # already_bound: the binding that holds this key


class Conflict(_Out):
    error: ConflictError


class KeyFailingError(_Out):
    code: Literal["key_failing"]
    message: str


class KeyFailing(_Out):
    error: KeyFailingError
    report: ReportOut


class IdempotencyKeyReusedError(_Out):
    code: Literal["idempotency_key_reused"]
    message: str


class IdempotencyKeyReused(_Out):
    error: IdempotencyKeyReusedError


class Unprocessable(RootModel[KeyFailing | IdempotencyKeyReused]):
    model_config = ConfigDict(json_schema_extra=_one_of)


class InternalErrorError(_Out):
    code: Literal["internal_error"]
    message: str


class InternalError(_Out):
    error: InternalErrorError


class StorageUnavailableError(_Out):
    code: Literal["storage_unavailable"]
    message: str


class StorageUnavailable(_Out):
    error: StorageUnavailableError


class ExchangeUnavailableError(_Out):
    code: Literal["exchange_unavailable"]
    message: str


class ExchangeUnavailable(_Out):
    error: ExchangeUnavailableError
    report: ReportOut


class CheckUnavailable(RootModel[ExchangeUnavailable | StorageUnavailable]):
    model_config = ConfigDict(json_schema_extra=_one_of)


#: The body model of each error answer, by (status, whether it carries the check's report).
ERROR_BODIES: dict[tuple[int, bool], type[_Out]] = {
    (400, False): BadRequest,
    (403, False): Forbidden,
    (404, False): NotFound,
    (409, False): Conflict,
    (422, True): KeyFailing,
    (422, False): IdempotencyKeyReused,
    (500, False): InternalError,
    (503, True): ExchangeUnavailable,
    (503, False): StorageUnavailable,
}
