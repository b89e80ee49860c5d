"""Response models: every answer is validated against one (api.http.json_response) and the
OpenAPI document is generated from them, so the document says what the API sends.

`extra="forbid"`: a field the code sends but the model lacks fails the request in tests
instead of going out undocumented.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FindingOut(_Out):
    code: str
    severity: str
    audience: str
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
    status: str
    checked_at: str
    egress_ip: str | None = None
    permissions: PermissionsOut
    ip_restricted: bool | None = None
    ip_whitelist: list[str] | None = None
    trading_expires_at: str | None = None
    findings: list[FindingOut]


class BindingOut(_Out):
    binding_id: str
    user_id: str
    exchange: str
    label: str | None = None
    key_type: str
    api_key_masked: str
    scopes: list[str]
    status: str
    account_id: str | None = None
    created_at: str
    updated_at: str
    last_checked_at: str | None = None
    last_report: ReportOut | None = None


class BindingWithReport(_Out):
    binding: BindingOut
    report: ReportOut
    same_account_bindings: list[str] | None = None  # other keys of the same exchange account


class BindingList(_Out):
    items: list[BindingOut]
    next_cursor: str | None = None


class Problem(_Out):
    field: str
    problem: str


class ErrorDetail(_Out):
    code: str
    message: str
    binding_id: str | None = None
    field: str | None = None
    details: list[Problem] | None = None  # invalid_request: every field that broke a rule


class ErrorOut(_Out):
    error: ErrorDetail


class ErrorWithReport(_Out):
    error: ErrorDetail
    report: ReportOut


class EgressIps(_Out):
    egress_ips: list[str]
