"""The use cases behind the API: bind, verify, rotate, unbind, read and list.

Each takes its collaborators (`Services`) as a parameter and raises `KeyhealthError`s that
the API maps to HTTP answers. Consistency rule for bind, rotate and unbind: a binding is
either fully present (secret and metadata agree) or fully absent; any half-done step is
undone before the error reaches the caller, so a retry is always safe.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import replace

from keyhealth.bindings.model import (
    BindCommand,
    Binding,
    ListQuery,
    Outcome,
    Page,
    RotateCommand,
    api_key_hash,
)
from keyhealth.bindings.ports import BINDING_ID_TAG, TENANT_TAG, Services
from keyhealth.domain.errors import (
    AlreadyBound,
    BindingNotFound,
    ConcurrentUpdate,
    CredentialsBeingDeleted,
    CredentialsUnreadable,
    ExchangeUnreachable,
    KeyUnusable,
    StorageAdapterError,
    StorageUnavailable,
    storage_step,
)
from keyhealth.domain.exchange import CheckResult
from keyhealth.domain.findings import credentials_unreadable_report, make_finding
from keyhealth.domain.ids import new_binding_id
from keyhealth.domain.model import FindingCode, Report, Scope, Status
from keyhealth.notify import model as alerts
from keyhealth.webhooks import model as webhook_events

logger = logging.getLogger(__name__)


def _checked(
    services: Services, exchange: str, command: BindCommand | RotateCommand, scopes: Collection[Scope]
) -> CheckResult:
    """Check credentials live; refuse them unless usable. Nothing has been stored yet."""
    checker = services.checkers[exchange]
    result = checker.check(command.credentials, scopes, identify_account=True)
    report = result.report
    if command.trimmed_fields:
        trimmed = make_finding(FindingCode.WHITESPACE_TRIMMED, checker.spec.ui, fields=command.trimmed_fields)
        report = report.with_findings(trimmed)
        result = replace(result, report=report)
    if report.status is Status.FAILING:
        raise KeyUnusable(result)
    if report.status is Status.UNKNOWN:
        raise ExchangeUnreachable(result)
    return result


def bind_key(command: BindCommand, tenant: str, services: Services) -> Outcome:
    key_hash = api_key_hash(command.exchange, command.credentials.api_key)
    with storage_step("metadata_read"):
        existing = services.bindings.find_by_api_key(tenant, command.exchange, key_hash)
    if existing:
        raise AlreadyBound(existing)

    result = _checked(services, command.exchange, command, command.scopes)
    now = services.now()
    binding_id = new_binding_id(now.timestamp())
    with storage_step("secret_create"):
        secret_id = services.secrets.create(
            f"{services.secret_prefix}{binding_id}",
            command.credentials,
            tags={TENANT_TAG: tenant, BINDING_ID_TAG: binding_id},
            token=str(uuid.uuid4()),
        )

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
    except StorageAdapterError as error:
        _forget_secret(services, secret_id, binding_id)
        raise StorageUnavailable("metadata_write") from error
    return Outcome(binding, result.report, _same_account(services, binding))


def _same_account(services: Services, binding: Binding) -> tuple[str, ...]:
    """Best effort: the binding is stored; failing to list its siblings must not fail the bind."""
    if not binding.account_id:
        return ()
    try:
        ids = services.bindings.bindings_of_account(binding.tenant, binding.exchange, binding.account_id)
    except StorageAdapterError:
        logger.warning("could not list bindings of the same account", extra={"binding_id": binding.binding_id})
        return ()
    return tuple(i for i in ids if i != binding.binding_id)


def _forget_secret(services: Services, secret_id: str, binding_id: str) -> None:
    """Compensate a bind whose metadata was not stored: its secret must not outlive it."""
    try:
        services.secrets.delete_now(secret_id)
    except StorageAdapterError:
        # Both AWS calls failed: the secret is tagged with its tenant and binding id and no item
        # points to it. The daily orphan sweeper (keyhealth.bindings.sweeper, OrphanSweeperFunction)
        # finds it once it is an hour old and schedules its deletion; the line says which one.
        logger.error(
            "orphan secret left after a failed bind: the daily orphan sweeper (OrphanSweeperFunction) "
            "schedules its deletion",
            extra={"binding_id": binding_id, "secret_id": secret_id},
        )


def load_binding(tenant: str, binding_id: str, services: Services) -> Binding:
    with storage_step("metadata_read"):
        binding = services.bindings.get(tenant, binding_id)
    if binding is None:
        raise BindingNotFound(f"no binding {binding_id}")
    return binding


def _record(services: Services, binding: Binding, updated: Binding, report: Report) -> Binding:
    """Store a check's outcome; alert first, so that a failed write loses no alert (a retry
    re-detects the change; at worst an alert is repeated, never missed). Credentials that could not be
    decrypted alert ops once, when a check first finds them (the status does not change for them)."""
    exchange_name = services.checkers[binding.exchange].spec.display_name
    if updated.status is not binding.status:
        changed = alerts.status_changed(updated, binding.status, report, exchange_name=exchange_name)
        with storage_step("alert_publish"):
            services.alerts.publish(changed)
        _tell_tenant(services, changed)
    if report.credentials_unreadable and not binding.credentials_unreadable:
        with storage_step("alert_publish"):
            services.alerts.publish(alerts.credentials_unreadable(updated, report, exchange_name=exchange_name))
    planned = FindingCode.PLANNED_IP_MISSING.value
    if planned in report.codes and not (binding.last_report and planned in binding.last_report.codes):
        # Ops hear of it from the audit (one alert per binding); the platform is told as soon as a check finds it.
        _tell_tenant(services, alerts.planned_ip_missing(updated, report, exchange_name=exchange_name))
    with storage_step("metadata_write"):
        return services.bindings.save(updated, previous=binding)


def _tell_tenant(services: Services, alert: alerts.Alert) -> None:
    """The tenant's event for a binding alert (its feed, its webhook): before the write, like the alert."""
    draft = webhook_events.draft_from_alert(alert.body)
    if draft is not None:
        with storage_step("event_publish"):
            services.events.publish(draft)


def verify_binding(tenant: str, binding_id: str, services: Services) -> Outcome:
    binding = load_binding(tenant, binding_id, services)
    with _secret_step(services, binding, "secret_read"):
        try:
            credentials = services.secrets.read(binding.secret_id)
        except CredentialsUnreadable:
            credentials = None  # reported, not raised: the exchange is not asked
    if credentials is None:
        result = CheckResult(credentials_unreadable_report(services.checkers[binding.exchange].spec.ui, services.now()))
    else:
        result = services.checkers[binding.exchange].check(credentials, binding.scopes)
    updated = binding.recorded(result.report, now=services.now())
    if result.account_id:
        updated = replace(updated, account_id=result.account_id)
    try:
        saved = _record(services, binding, updated, result.report)
    except ConcurrentUpdate:
        if _gone(services, binding):
            raise BindingNotFound(f"no binding {binding_id}") from None  # unbound during the check
        raise
    return Outcome(saved, result.report)


def rotate_credentials(tenant: str, binding_id: str, command: RotateCommand, services: Services) -> Outcome:
    binding = load_binding(tenant, binding_id, services)
    new_hash = api_key_hash(binding.exchange, command.credentials.api_key)
    if new_hash != binding.api_key_hash:
        with storage_step("metadata_read"):
            other = services.bindings.find_by_api_key(tenant, binding.exchange, new_hash)
        if other and other != binding.binding_id:
            raise AlreadyBound(other)

    secrets = services.secrets
    with _secret_step(services, binding, "secret_stage"):
        pending = secrets.stage_pending(binding.secret_id, command.credentials, token=str(uuid.uuid4()))
        staged = secrets.read(binding.secret_id, stage="AWSPENDING")  # check what was stored, not what was sent
    try:
        result = _checked(services, binding.exchange, replace(command, credentials=staged), binding.scopes)
    except BaseException:
        # Whatever stopped the check (the key refused, the exchange away, a bug), the pending
        # version must not stay: it holds credentials that were never accepted.
        _discard(services, binding, pending)
        raise
    try:
        with _secret_step(services, binding, "secret_promote"):
            previous_version = secrets.current_version(binding.secret_id)
            secrets.promote(binding.secret_id, pending)
    except (StorageUnavailable, BindingNotFound, ConcurrentUpdate):
        _discard(services, binding, pending)
        raise

    updated = replace(
        binding.recorded(result.report, now=services.now()),
        key_type=command.credentials.key_type,
        api_key_masked=command.credentials.masked_api_key,
        api_key_hash=new_hash,
        account_id=result.account_id or binding.account_id,
    )
    try:
        saved = _record(services, binding, updated, result.report)
    except (StorageUnavailable, ConcurrentUpdate, AlreadyBound) as error:
        try:
            secrets.demote(binding.secret_id, pending, restore_version_id=previous_version)
        except StorageAdapterError:
            logger.error("rotation could not be undone", extra={"binding_id": binding.binding_id})
        if isinstance(error, ConcurrentUpdate) and _gone(services, binding):
            raise BindingNotFound(f"no binding {binding.binding_id}") from None  # unbound meanwhile
        raise
    _discard(services, saved, pending)  # the new current version needs no AWSPENDING label any more
    return Outcome(saved, result.report)


def _discard(services: Services, binding: Binding, version_id: str) -> None:
    try:
        services.secrets.discard_pending(binding.secret_id, version_id)
    except StorageAdapterError:
        # Harmless: an AWSPENDING version is never read as the current credentials.
        logger.warning("pending secret version left labelled", extra={"binding_id": binding.binding_id})


#: How often unbind re-reads a binding that changed under it (a rotate or check committing)
#: before it answers 409 concurrent_update.
UNBIND_ATTEMPTS = 3


def unbind(tenant: str, binding_id: str, services: Services) -> None:
    """Schedule the secret's deletion, then delete the binding and its markers as read.

    A binding that changed between the read and the delete (a rotate moved its key marker) is
    read again and deleted as it now is; one that went meanwhile answers 404.
    """
    for attempt in range(1, UNBIND_ATTEMPTS + 1):
        binding = load_binding(tenant, binding_id, services)
        with storage_step("secret_delete"):
            services.secrets.schedule_deletion(binding.secret_id, recovery_days=services.recovery_window_days)
        try:
            services.bindings.delete(binding)
        except ConcurrentUpdate:
            if _gone(services, binding):
                raise BindingNotFound(f"no binding {binding_id}") from None  # unbound meanwhile
            if attempt == UNBIND_ATTEMPTS:
                _restore(services, binding)
                raise
        except StorageAdapterError as error:
            _restore(services, binding)
            raise StorageUnavailable("metadata_delete") from error
        else:
            _tell_deleted(services, binding)
            return


def _tell_deleted(services: Services, binding: Binding) -> None:
    """After the delete: a `binding.deleted` for a binding that stays would be worse than none. An unbind is
    not undone because its event could not be stored; the line names the binding for ops to tell by hand."""
    draft = webhook_events.binding_deleted(
        tenant=binding.tenant,
        binding_id=binding.binding_id,
        user_id=binding.user_id,
        exchange=binding.exchange,
        api_key_masked=binding.api_key_masked,
        deleted_at=services.now(),
    )
    try:
        services.events.publish(draft, dedupe_key=f"deleted:{binding.binding_id}")
    except StorageAdapterError:
        logger.error("binding.deleted event not published", extra={"binding_id": binding.binding_id})


def _restore(services: Services, binding: Binding) -> None:
    """Undo an unbind's first step: the binding stays whole, so retrying is safe."""
    try:
        services.secrets.restore(binding.secret_id)
    except StorageAdapterError:
        logger.error("unbind half done: secret scheduled, metadata kept", extra={"binding_id": binding.binding_id})


def _gone(services: Services, binding: Binding) -> bool:
    """Whether `binding` was unbound meanwhile (read again; a failed read is not "gone")."""
    try:
        return services.bindings.get(binding.tenant, binding.binding_id) is None
    except StorageAdapterError:
        return False


@contextmanager
def _secret_step(services: Services, binding: Binding, step: str) -> Iterator[None]:
    """A step on the binding's secret: when it fails because the binding was unbound meanwhile
    (its secret is scheduled for deletion), the answer is 404, not a transient 503."""
    try:
        yield
    except CredentialsBeingDeleted:
        if _gone(services, binding):
            raise BindingNotFound(f"no binding {binding.binding_id}") from None
        raise ConcurrentUpdate("the binding is being unbound") from None
    except StorageAdapterError as error:
        if _gone(services, binding):
            raise BindingNotFound(f"no binding {binding.binding_id}") from None
        raise StorageUnavailable(step) from error


def list_bindings(tenant: str, query: ListQuery, services: Services) -> Page:
    with storage_step("metadata_read"):
        return services.bindings.list(tenant, query)
