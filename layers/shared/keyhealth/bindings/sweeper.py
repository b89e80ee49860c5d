"""The orphan sweep: stored credentials no binding points to are scheduled for deletion, daily.

bind creates the secret `<secret_prefix><binding_id>` (tagged with the tenant and the binding id) before it
writes the binding; when that write fails and the compensating delete fails too (a double fault, logged as
"orphan secret left after a failed bind"), the secret is left behind with no binding. The sweep lists the
secrets under the stack's prefix (names, tags and dates: never a value) and, for each one, decides:

- scheduled for deletion already (an unbind, or an earlier sweep): kept, Secrets Manager removes it;
- not named and tagged as bind makes them (`<prefix><binding id>`, both tags): kept and logged, because
  nothing proves it is bind's (an operator's secret under the prefix is left alone);
- younger than `min_age` (an hour): kept, a bind may be between its secret and its binding write;
- its binding exists and points to this very secret: kept;
- otherwise (no binding, or a binding that points to another secret) it is an orphan: read again
  (DescribeSecret: ListSecrets may be minutes behind, and an unbind may have scheduled it meanwhile) and,
  still live, scheduled for deletion.

Orphans are **scheduled for deletion with the recovery window** (`SECRET_RECOVERY_DAYS`), not force-deleted,
although they hold credentials that never backed a stored binding: the sweep decides from what it read, not
from what it did itself (bind's compensation knows its secret is unused and deletes it at once). A stale read,
an operator's mistake or a sweeper pointed at the wrong table must stay recoverable with `restore-secret`
for that window; meanwhile the secret cannot be read (GetSecretValue refuses a secret scheduled for
deletion), so the credentials are no more exposed than after an unbind. It also makes the step idempotent:
scheduling a secret already scheduled is the outcome asked for.

A storage error on one secret (reading its binding, describing or scheduling it) is counted and logged, and
the sweep goes on with the next: one bad secret never stops it. A listing that fails stops it (there is
nothing to go on with): what was done is still reported, then `StorageUnavailable("secret_list")` is raised.
One warning alert says what was removed and what failed (`orphans_removed`), only when there is something to
say: a sweep with nothing removed and nothing failed publishes nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum

from keyhealth.bindings.ports import Services, StoredCredential
from keyhealth.domain.errors import StorageAdapterError, StorageUnavailable
from keyhealth.domain.ids import is_binding_id
from keyhealth.notify import model as alerts

logger = logging.getLogger(__name__)

#: How old a secret must be before it can be an orphan: bind writes its binding right after the secret
#: (milliseconds), so an hour leaves any bind in flight, and ListSecrets' minutes of lag, far behind.
ORPHAN_MIN_AGE = timedelta(hours=1)


class Verdict(Enum):
    """What the sweep did with one listed secret."""

    BOUND = "bound"  # its binding points to it: kept
    YOUNG = "young"  # younger than the minimum age: kept
    SCHEDULED = "scheduled"  # already scheduled for deletion: kept (the store removes it)
    UNRECOGNISED = "unrecognised"  # not named and tagged as bind makes them: kept
    GONE = "gone"  # removed meanwhile: nothing to do
    REMOVED = "removed"  # an orphan, now scheduled for deletion
    FAILED = "failed"  # a storage error: not checked or not removed (the next sweep tries again)


@dataclass(frozen=True)
class SweepResult:
    """One sweep: how many secrets it checked, and the binding ids of those it removed or could not handle."""

    checked: int
    removed: tuple[str, ...]  # binding ids of the orphans scheduled for deletion
    failed: tuple[str, ...]  # binding ids of the secrets a storage error kept from being checked or removed
    kept: dict[str, int] = field(default_factory=dict)  # Verdict value -> count, for the other verdicts

    def counts(self) -> dict[str, int]:
        """The handler's answer: `{"checked": n, "removed": n, "failed": n}`."""
        return {"checked": self.checked, "removed": len(self.removed), "failed": len(self.failed)}


def sweep_orphans(services: Services, *, min_age: timedelta = ORPHAN_MIN_AGE) -> SweepResult:
    """Schedule the deletion of every secret under `services.secret_prefix` that no binding points to."""
    now = services.now()
    checked = 0
    removed: list[str] = []
    failed: list[str] = []
    kept: dict[str, int] = {}
    listing = services.secrets.list_stored(services.secret_prefix)
    while True:
        try:
            stored = next(listing, None)
        except StorageAdapterError as error:
            logger.error("orphan sweep stopped: the secrets could not be listed", extra={"checked": checked})
            result = SweepResult(checked, tuple(removed), tuple(failed), kept)
            _alert(services, result, now, complete=False, best_effort=True)
            raise StorageUnavailable("secret_list") from error
        if stored is None:
            break
        checked += 1
        verdict = _sweep_one(services, stored, cutoff=now - min_age)
        if verdict is Verdict.REMOVED:
            removed.append(str(stored.binding_id))
        elif verdict is Verdict.FAILED:
            failed.append(str(stored.binding_id))
        else:
            kept[verdict.value] = kept.get(verdict.value, 0) + 1
    result = SweepResult(checked, tuple(removed), tuple(failed), kept)
    logger.info("orphan sweep finished", extra={**result.counts(), "kept": kept})
    _alert(services, result, now, complete=True)
    return result


def _sweep_one(services: Services, stored: StoredCredential, *, cutoff: datetime) -> Verdict:
    """One listed secret: kept, removed or failed (see the module's docstring for the order of the checks)."""
    if stored.scheduled_for_deletion:
        return Verdict.SCHEDULED
    if not _made_by_bind(stored, services.secret_prefix):
        logger.warning("secret under the prefix not made by bind: left alone", extra={"secret_name": stored.name})
        return Verdict.UNRECOGNISED
    if stored.created_at is None or stored.created_at > cutoff:
        return Verdict.YOUNG
    context = {"binding_id": stored.binding_id, "secret_name": stored.name}
    try:
        binding = services.bindings.get(str(stored.tenant), str(stored.binding_id))
    except StorageAdapterError as error:
        logger.warning(
            "orphan sweep could not read a binding",
            extra={**context, "operation": error.operation, "reason": error.reason},
        )
        return Verdict.FAILED
    if binding is not None and binding.secret_id == stored.secret_id:
        return Verdict.BOUND
    try:
        current = services.secrets.describe(stored.secret_id)
        if current is None:
            return Verdict.GONE
        if current.scheduled_for_deletion:
            return Verdict.SCHEDULED  # an unbind got there after the listing
        services.secrets.schedule_deletion(stored.secret_id, recovery_days=services.recovery_window_days)
    except StorageAdapterError as error:
        logger.warning(
            "orphan sweep could not remove a secret",
            extra={**context, "operation": error.operation, "reason": error.reason},
        )
        return Verdict.FAILED
    logger.warning(
        "orphan secret scheduled for deletion",
        extra={
            **context,
            "tenant": stored.tenant,
            "binding_points_elsewhere": binding is not None,
            "recovery_days": services.recovery_window_days,
        },
    )
    return Verdict.REMOVED


def _made_by_bind(stored: StoredCredential, prefix: str) -> bool:
    """Named `<prefix><binding id>` and tagged with that binding id and a tenant, as bind creates them."""
    binding_id = stored.binding_id
    return (
        bool(stored.tenant)
        and binding_id is not None
        and is_binding_id(binding_id)
        and stored.name == f"{prefix}{binding_id}"
    )


def _alert(
    services: Services, result: SweepResult, now: datetime, *, complete: bool, best_effort: bool = False
) -> None:
    """One warning when something was removed or failed; nothing otherwise (a listing that broke off before
    anything was done is said by the failed invocation alone)."""
    if not result.removed and not result.failed:
        return
    alert = alerts.orphans_removed(
        binding_ids=result.removed,
        failed_binding_ids=result.failed,
        checked=result.checked,
        secret_prefix=services.secret_prefix,
        recovery_days=services.recovery_window_days,
        swept_at=now,
        complete=complete,
    )
    try:
        services.alerts.publish(alert)
    except StorageAdapterError as error:
        # The per-secret log lines keep what was done; the failed invocation raises the function's alarm.
        logger.error("orphan sweep alert not published", extra=result.counts())
        if not best_effort:
            raise StorageUnavailable("alert_publish") from error
