"""The use cases behind the API: bind, verify, rotate, unbind, read and list.

Each takes its collaborators (`Services`) as a parameter and raises `KeyhealthError`s that
the API maps to HTTP answers. Consistency rule for bind, rotate and unbind: a binding is
either fully present (secret and metadata agree) or fully absent; any half-done step is
undone before the error reaches the caller, so a retry is always safe.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from dataclasses import dataclass, replace

from keyhealth import alerts
from keyhealth.binding import Binding
from keyhealth.credentials import Credentials
from keyhealth.errors import (
    AlreadyBound,
    BindingNotFound,
    ConcurrentUpdate,
    ExchangeUnreachable,
    KeyUnusable,
    StorageError,
    StorageFailure,
)
from keyhealth.exchanges.base import CheckResult
from keyhealth.findings import make_finding
from keyhealth.ids import new_binding_id
from keyhealth.model import Exchange, FindingCode, Report, Scope, Status
from keyhealth.ports import Page, Services

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BindCommand:
    user_id: str
    exchange: Exchange
    credentials: Credentials
    scopes: tuple[Scope, ...]
    label: str | None = None
    trimmed_fields: tuple[str, ...] = ()  # credentials whose surrounding whitespace was removed


@dataclass(frozen=True)
class RotateCommand:
    credentials: Credentials
    trimmed_fields: tuple[str, ...] = ()


@dataclass(frozen=True)
class Outcome:
    binding: Binding
    report: Report
    # Other bindings of the same exchange account (Binance uid, Bitget userId...) under other keys.
    same_account_bindings: tuple[str, ...] = ()


def api_key_hash(exchange: Exchange, api_key: str) -> str:
    return hashlib.sha256(f"{exchange.value}:{api_key}".encode()).hexdigest()


def _checked(services: Services, exchange: Exchange, command: BindCommand | RotateCommand, scopes) -> CheckResult:
    """Check credentials live; refuse them unless usable. Nothing has been stored yet."""
    result = services.adapters[exchange].check(command.credentials, scopes, identify_account=True)
    report = result.report
    if command.trimmed_fields:
        trimmed = make_finding(FindingCode.WHITESPACE_TRIMMED, exchange, fields=command.trimmed_fields)
        report = report.with_findings(trimmed)
        result = replace(result, report=report)
    if report.status is Status.FAILING:
        raise KeyUnusable(result)
    if report.status is Status.UNKNOWN:
        raise ExchangeUnreachable(result)
    return result


def bind_key(command: BindCommand, tenant: str, services: Services) -> Outcome:
    key_hash = api_key_hash(command.exchange, command.credentials.api_key)
    try:
        existing = services.bindings.find_by_api_key(tenant, command.exchange, key_hash)
    except StorageError as error:
        raise StorageFailure("metadata_read") from error
    if existing:
        raise AlreadyBound(existing)

    result = _checked(services, command.exchange, command, command.scopes)
    now = services.now()
    binding_id = new_binding_id(now.timestamp())
    try:
        secret_id = services.secrets.create(
            f"{services.secret_prefix}{binding_id}",
            command.credentials,
            tags={"keyhealth:tenant": tenant, "keyhealth:binding_id": binding_id},
            token=str(uuid.uuid4()),
        )
    except StorageError as error:
        raise StorageFailure("secret_create") from error

    binding = Binding(
        binding_id=binding_id,
        tenant=tenant,
        user_id=command.user_id,
        exchange=command.exchange,
        label=command.label,
        key_type=command.credentials.key_type,
        api_key_masked=command.credentials.masked_api_key,
        api_key_hash=key_hash,
        scopes=command.scopes,
        status=result.report.status,
        created_at=now,
        updated_at=now,
        secret_id=secret_id,
        last_checked_at=result.report.checked_at,
        last_report=result.report,
        account_id=result.account_id,
    )
    try:
        services.bindings.create(binding)
    except AlreadyBound:
        _forget_secret(services, secret_id, binding_id)  # a concurrent bind of the same key won
        raise
    except StorageError as error:
        _forget_secret(services, secret_id, binding_id)
        raise StorageFailure("metadata_write") from error
    return Outcome(binding, result.report, _same_account(services, binding))


def _same_account(services: Services, binding: Binding) -> tuple[str, ...]:
    """Best effort: the binding is stored; failing to list its siblings must not fail the bind."""
    if not binding.account_id:
        return ()
    try:
        ids = services.bindings.bindings_of_account(binding.tenant, binding.exchange, binding.account_id)
    except StorageError:
        logger.warning("could not list bindings of the same account", extra={"binding_id": binding.binding_id})
        return ()
    return tuple(i for i in ids if i != binding.binding_id)


def _forget_secret(services: Services, secret_id: str, binding_id: str) -> None:
    """Compensate a bind whose metadata was not stored: its secret must not outlive it."""
    try:
        services.secrets.delete_now(secret_id)
    except StorageError:
        # Both AWS calls failed: the secret is tagged with its binding id and no item points to
        # it; the log line lets ops remove it (it holds credentials that were never used).
        logger.error(
            "orphan secret left after a failed bind",
            extra={"binding_id": binding_id, "secret_id": secret_id},
        )


def load_binding(tenant: str, binding_id: str, services: Services) -> Binding:
    try:
        binding = services.bindings.get(tenant, binding_id)
    except StorageError as error:
        raise StorageFailure("metadata_read") from error
    if binding is None:
        raise BindingNotFound(f"no binding {binding_id}")
    return binding


def _record(services: Services, binding: Binding, updated: Binding, report: Report) -> Binding:
    """Store a check's outcome; alert first, so that a failed write loses no alert (a retry
    re-detects the change; at worst an alert is repeated, never missed)."""
    if updated.status is not binding.status:
        try:
            services.alerts.publish(alerts.status_changed(updated, binding.status, report))
        except StorageError as error:
            raise StorageFailure("alert_publish") from error
    try:
        return services.bindings.save(updated, previous=binding)
    except StorageError as error:
        raise StorageFailure("metadata_write") from error


def verify_binding(tenant: str, binding_id: str, services: Services) -> Outcome:
    binding = load_binding(tenant, binding_id, services)
    try:
        credentials = services.secrets.read(binding.secret_id)
    except StorageError as error:
        raise StorageFailure("secret_read") from error
    result = services.adapters[binding.exchange].check(credentials, binding.scopes)
    updated = binding.recorded(result.report, now=services.now())
    if result.account_id:
        updated = replace(updated, account_id=result.account_id)
    saved = _record(services, binding, updated, result.report)
    return Outcome(saved, result.report)


def rotate_credentials(tenant: str, binding_id: str, command: RotateCommand, services: Services) -> Outcome:
    binding = load_binding(tenant, binding_id, services)
    new_hash = api_key_hash(binding.exchange, command.credentials.api_key)
    if new_hash != binding.api_key_hash:
        try:
            other = services.bindings.find_by_api_key(tenant, binding.exchange, new_hash)
        except StorageError as error:
            raise StorageFailure("metadata_read") from error
        if other and other != binding.binding_id:
            raise AlreadyBound(other)

    secrets = services.secrets
    try:
        pending = secrets.stage_pending(binding.secret_id, command.credentials, token=str(uuid.uuid4()))
        staged = secrets.read(binding.secret_id, stage="AWSPENDING")  # check what was stored, not what was sent
    except StorageError as error:
        raise StorageFailure("secret_stage") from error
    try:
        result = _checked(services, binding.exchange, replace(command, credentials=staged), binding.scopes)
    except (KeyUnusable, ExchangeUnreachable):
        _discard(services, binding, pending)
        raise
    try:
        previous_version = secrets.current_version(binding.secret_id)
        secrets.promote(binding.secret_id, pending)
    except StorageError as error:
        _discard(services, binding, pending)
        raise StorageFailure("secret_promote") from error

    updated = replace(
        binding.recorded(result.report, now=services.now()),
        key_type=command.credentials.key_type,
        api_key_masked=command.credentials.masked_api_key,
        api_key_hash=new_hash,
        account_id=result.account_id or binding.account_id,
    )
    try:
        saved = _record(services, binding, updated, result.report)
    except (StorageFailure, ConcurrentUpdate, AlreadyBound):
        try:
            secrets.demote(binding.secret_id, pending, restore_version_id=previous_version)
        except StorageError:
            logger.error("rotation could not be undone", extra={"binding_id": binding.binding_id})
        raise
    _discard(services, saved, pending)  # the new current version needs no AWSPENDING label any more
    return Outcome(saved, result.report)


def _discard(services: Services, binding: Binding, version_id: str) -> None:
    try:
        services.secrets.discard_pending(binding.secret_id, version_id)
    except StorageError:
        # Harmless: an AWSPENDING version is never read as the current credentials.
        logger.warning("pending secret version left labelled", extra={"binding_id": binding.binding_id})


def unbind(tenant: str, binding_id: str, services: Services) -> None:
    binding = load_binding(tenant, binding_id, services)
    try:
        services.secrets.schedule_deletion(binding.secret_id, recovery_days=services.recovery_window_days)
    except StorageError as error:
        raise StorageFailure("secret_delete") from error
    try:
        services.bindings.delete(binding)
    except StorageError as error:
        try:
            services.secrets.restore(binding.secret_id)  # the binding stays whole; retrying is safe
        except StorageError:
            logger.error("unbind half done: secret scheduled, metadata kept", extra={"binding_id": binding_id})
        raise StorageFailure("metadata_delete") from error


def list_bindings(
    tenant: str,
    services: Services,
    *,
    user_id: str | None = None,
    exchange: Exchange | None = None,
    status: Status | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> Page:
    try:
        return services.bindings.list(
            tenant, user_id=user_id, exchange=exchange, status=status, limit=limit, cursor=cursor
        )
    except StorageError as error:
        raise StorageFailure("metadata_read") from error
