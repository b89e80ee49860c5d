"""Response models: they document the API (the OpenAPI document is generated from them)."""

from __future__ import annotations

from pydantic import BaseModel


class FindingOut(BaseModel):
    code: str
    severity: str
    audience: str
    message: str
    remedy: str
    exchange_code: str | int | None = None
    exchange_message: str | None = None


class PermissionsOut(BaseModel):
    read: bool | None = None
    spot: bool | None = None
    futures: bool | None = None
    margin: bool | None = None
    withdraw: bool | None = None
    transfer: bool | None = None


class ReportOut(BaseModel):
    status: str
    checked_at: str
    egress_ip: str | None = None
    permissions: PermissionsOut
    ip_restricted: bool | None = None
    ip_whitelist: list[str] | None = None
    trading_expires_at: str | None = None
    findings: list[FindingOut]


class BindingOut(BaseModel):
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


class BindingWithReport(BaseModel):
    binding: BindingOut
    report: ReportOut
    same_account_bindings: list[str] | None = None  # other keys of the same exchange account


class BindingList(BaseModel):
    items: list[BindingOut]
    next_cursor: str | None = None


class ErrorDetail(BaseModel):
    code: str
    message: str
    binding_id: str | None = None
    field: str | None = None


class ErrorOut(BaseModel):
    error: ErrorDetail


class ErrorWithReport(BaseModel):
    error: ErrorDetail
    report: ReportOut


class EgressIps(BaseModel):
    egress_ips: list[str]
