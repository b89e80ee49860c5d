"""Moving every binding's credentials to the other credential store (`keyhealth migrate-credentials`).

A binding's `secret_id` says which store holds its credentials (keyhealth.adapters.routed_credentials):
a Secrets Manager ARN or a KMS-store credential id, both named `<secret_prefix><binding_id>`. Moving a
binding is four steps, each safe to repeat:

1. **read** its credentials from the store its `secret_id` names (the source);
2. **copy** them to the target store under the same name, with a create token derived from the binding id,
   its version and the target (a rerun after a crash asks for the same create). A copy already there (an
   earlier run crashed after it, the orphan sweeper scheduled it meanwhile, or a migration the other way
   retired it) is reused: restored if scheduled for deletion, and in every case **read back** and, if it
   does not hold exactly the credentials just read (a rotation happened since it was written), brought up
   to date with a new version (stage, promote) and read back again;
3. **switch**: `save(replace(binding, secret_id=<the copy's id>), previous=binding)`, conditional on the
   version read in step 1. A binding that changed meanwhile (a rotation, a check) is read again and moved
   from the start (its copy is refreshed in step 2); one that was unbound meanwhile leaves a copy nobody
   points to, which is scheduled for deletion;
4. only then **schedule the old copy's deletion** (the recovery window of the stack, SECRET_RECOVERY_DAYS).

No binding is ever unreadable: until step 3 it points to its live old copy; from step 3 to its live, verified
new copy. A reader that read the binding before the switch and reads the old copy after step 4 finds it
scheduled for deletion and RoutedCredentialStore falls back to the other store under the same name: the
new copy.

**Resuming** is running it again. A binding already in the target is skipped, except that a live copy under
its name in the other store (a crash between steps 3 and 4) is scheduled for deletion then ("leftovers");
a binding whose copy was made but not switched (a crash between 2 and 3) goes through 2 again, which reuses
and refreshes that copy. Nothing is written twice, nothing is lost: a run over finished work only reads.

**Rotations during the move.** A rotation writes the binding (version + 1) after promoting its new version,
so a rotation that commits before step 3 makes the switch fail and the binding is moved again with the new
credentials; one that commits after step 3 fails its own binding write and undoes itself (the platform was
told 409/503, nothing is lost). Credentials whose api key does not match the binding's `api_key_hash` belong
to a rotation promoted but not yet committed: the binding is left for a moment and tried again.

**Pacing.** Writes are paced by a token bucket: `rate_per_second` bindings on average, in batches of at
most `batch_size` back to back. Each moved binding costs one create in the target and one deletion in the
source, so its rate is what the tighter store sees (Secrets Manager's CreateSecret and DeleteSecret: 50
requests per second each, by default, per account and region; see docs/cli.md for the others). A binding
that needs no write (already moved) costs one metadata read and is not paced.

The report counts everything and names every failed binding with the step and the storage error's
reason; it never holds a credential. Nothing here logs one either.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import suppress
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Protocol

from keyhealth.bindings.model import Binding, api_key_hash
from keyhealth.bindings.ports import BINDING_ID_TAG, TENANT_TAG, BindingRepository, CredentialStore, StoredCredential
from keyhealth.domain.credentials import Credentials
from keyhealth.domain.errors import ConcurrentUpdate, CredentialsUnreadable, StorageAdapterError
from keyhealth.domain.exchange import ExchangeName

logger = logging.getLogger(__name__)

#: Bindings per second, on average: half of Secrets Manager's 50 TPS for CreateSecret/DeleteSecret, so the
#: stack's own binds, rotations and unbinds keep the other half.
DEFAULT_RATE = 25.0
#: The most `--rate` may ask for: Secrets Manager's default quota of the write calls a move makes.
MAX_RATE = 50.0
DEFAULT_BATCH = 10
#: Reads of a binding that kept changing (or a storage error that kept coming) before it is reported failed.
DEFAULT_ATTEMPTS = 4
#: The first pause before another attempt at a binding, doubled at each attempt.
RETRY_PAUSE = 0.5

#: The steps a binding goes through; `on_step(step, binding)` is called after each.
READ, COPIED, SWITCHED, SCHEDULED = "read", "copied", "switched", "scheduled"

_TOKENS = uuid.UUID("5b0c4f0e-2f1d-4c43-9a57-6f3d1b6b0a11")  # namespace of the copies' create tokens
_GONE = "ResourceNotFoundException"


class BindingIndex(Protocol):
    """Every binding, by exchange and shard (DynamoBindingRepository's ByExchange index, as the audit reads it)."""

    shards: int

    def iter_exchange(self, exchange: ExchangeName, shard: int) -> Iterator[tuple[str, str]]:
        """(tenant, binding_id) of every binding of `exchange` in `shard`, page by page."""
        ...


class MigrationRepository(BindingRepository, BindingIndex, Protocol):
    """The binding repository with its index."""


@dataclass(frozen=True)
class MigrationDeps:
    """What the migration needs; built by keyhealth.wiring (`Container.credential_migration()`)."""

    bindings: MigrationRepository
    stores: Mapping[str, CredentialStore]  # both stores, by name ("secretsmanager", "kms")
    store_of: Callable[[str], str]  # which store a secret id names
    name_of: Callable[[str], str]  # the credential's name (`<prefix><binding_id>`) a secret id names
    exchanges: tuple[ExchangeName, ...]
    recovery_window_days: int
    monotonic: Callable[[], float]
    sleep: Callable[[float], None]


@dataclass(frozen=True)
class MigrationOptions:
    target: str  # the store to move every binding to
    dry_run: bool = False  # count only: nothing is written
    rate_per_second: float = DEFAULT_RATE
    batch_size: int = DEFAULT_BATCH
    attempts: int = DEFAULT_ATTEMPTS

    def __post_init__(self) -> None:
        if not 0 < self.rate_per_second <= MAX_RATE:
            raise ValueError(f"rate_per_second must be above 0 and at most {MAX_RATE:g}")
        if self.batch_size < 1 or self.attempts < 1:
            raise ValueError("batch_size and attempts must be at least 1")


@dataclass(frozen=True)
class Failure:
    """A binding the run could not move (or whose old copy it could not schedule): ids and reasons only."""

    tenant: str
    binding_id: str
    step: str  # read, copy, switch, schedule, leftover
    reason: str  # the storage error's operation and reason, or what was found


@dataclass(frozen=True)
class MigrationReport:
    """One run. Each binding seen is counted once in `moved`, `already_there`, `gone` or `failed`, except that a
    moved binding whose old copy could not be scheduled is in `moved` and in `failed` (step "leftover": the
    next run schedules it). In a dry run `moved` and `leftovers` say what a real run would do."""

    target: str
    dry_run: bool
    complete: bool  # every binding of the index was reached (False: the index could not be read to its end)
    total: int  # bindings in the index when the run started
    seen: int
    moved: int  # switched to the target by this run
    already_there: int  # in the target when this run reached them
    leftovers: int  # of those, bindings whose old copy was still live: scheduled for deletion now
    scheduled: int  # old copies scheduled for deletion by this run (moved ones and leftovers)
    reused: int  # target copies an earlier run (or migration) had left, reused and brought up to date
    retried: int  # bindings that changed during their move and were moved again
    gone: int  # unbound before or during their move
    failed: tuple[Failure, ...] = ()
    stopped_by: str | None = None  # why the index could not be read to its end

    @property
    def ok(self) -> bool:
        return self.complete and not self.failed

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "failed": [asdict(failure) for failure in self.failed], "ok": self.ok}


@dataclass
class _Tally:
    total: int = 0
    seen: int = 0
    moved: int = 0
    already_there: int = 0
    leftovers: int = 0
    scheduled: int = 0
    reused: int = 0
    retried: int = 0
    gone: int = 0
    failed: list[Failure] = field(default_factory=list)


class _RotationInFlight(Exception):
    """The source holds credentials of another api key than the binding's: a rotation has promoted them and
    not yet written the binding (it will, or it will undo the promotion)."""


class _Pacer:
    """A token bucket: at most `batch` writes back to back, `rate` per second on average."""

    def __init__(self, rate: float, batch: int, monotonic: Callable[[], float], sleep: Callable[[float], None]) -> None:
        self._rate, self._capacity = rate, float(batch)
        self._tokens = float(batch)
        self._monotonic, self._sleep = monotonic, sleep
        self._last = monotonic()

    def take(self) -> None:
        now = self._monotonic()
        self._tokens = min(self._capacity, self._tokens + max(0.0, now - self._last) * self._rate)
        self._last = now
        if self._tokens < 1:
            self._sleep((1 - self._tokens) / self._rate)
            self._last = self._monotonic()
            self._tokens = 1.0
        self._tokens -= 1


class Migration:
    """One run over every binding; `report()` says where it stands (also after an interruption)."""

    def __init__(
        self,
        deps: MigrationDeps,
        options: MigrationOptions,
        *,
        progress: Callable[[int, int], None] | None = None,
        on_step: Callable[[str, Binding], None] | None = None,
    ) -> None:
        if options.target not in deps.stores or len(deps.stores) != 2:
            raise ValueError(f"the target must be one of the two stores {sorted(deps.stores)}")
        self._deps, self._options = deps, options
        self._target = deps.stores[options.target]
        self._progress = progress or (lambda done, total: None)
        self._on_step = on_step or (lambda step, binding: None)
        self._pacer = _Pacer(options.rate_per_second, options.batch_size, deps.monotonic, deps.sleep)
        self._tally = _Tally()
        self._complete = False
        self._stopped_by: str | None = None

    # ------------------------------------------------------------------------ the run
    def run(self) -> MigrationReport:
        """Every binding of the index, one by one. A storage error on one binding is retried, then reported,
        and the run goes on; an index that cannot be read stops the run (reported, not raised). Anything else
        (a bug, an interruption) propagates: the next run resumes."""
        tally = self._tally
        try:
            tally.total = sum(1 for _ in self._index())
            self._progress(0, tally.total)
            for tenant, binding_id in self._index():
                self._one(tenant, binding_id)
                tally.seen += 1
                self._progress(tally.seen, max(tally.total, tally.seen))
        except StorageAdapterError as error:
            self._stopped_by = f"{error.operation}: {error.reason}"
            logger.error("credential migration stopped: the bindings could not be listed", extra=self._counts())
            return self.report()
        self._complete = True
        logger.info("credential migration finished", extra=self._counts())
        return self.report()

    def report(self) -> MigrationReport:
        t = self._tally
        return MigrationReport(
            target=self._options.target,
            dry_run=self._options.dry_run,
            complete=self._complete,
            total=t.total,
            seen=t.seen,
            moved=t.moved,
            already_there=t.already_there,
            leftovers=t.leftovers,
            scheduled=t.scheduled,
            reused=t.reused,
            retried=t.retried,
            gone=t.gone,
            failed=tuple(t.failed),
            stopped_by=self._stopped_by,
        )

    def _counts(self) -> dict[str, Any]:
        counts = self.report().to_dict()
        counts["failed"] = len(self._tally.failed)
        return counts

    def _index(self) -> Iterator[tuple[str, str]]:
        index = self._deps.bindings
        for exchange in self._deps.exchanges:
            for shard in range(index.shards):
                yield from index.iter_exchange(exchange, shard)

    # ------------------------------------------------------------------------ one binding
    def _one(self, tenant: str, binding_id: str) -> None:
        """Move one binding (or finish its move), retrying what changed under it; the outcome goes to the tally."""
        tally, attempts = self._tally, self._options.attempts
        switched = False  # by this run: a failed schedule retried is not a leftover of an earlier run
        step = "read"
        for attempt in range(1, attempts + 1):
            try:
                step = "read"
                binding = self._deps.bindings.get(tenant, binding_id)
                if binding is None:
                    tally.gone += 1
                    return
                if self._deps.store_of(binding.secret_id) == self._options.target:
                    if not switched:
                        tally.already_there += 1
                    step = "leftover"
                    self._leftover(binding, counted=not switched)
                    return
                if self._options.dry_run:
                    tally.moved += 1
                    return
                step = "move"
                self._move(binding)
                switched = True
                tally.moved += 1
                step = "schedule"
                self._schedule_old(binding)
                return
            except ConcurrentUpdate:
                tally.retried += 1
                reason = "the binding kept changing"
            except _RotationInFlight:
                reason = "a rotation was in progress"
            except CredentialsUnreadable as error:
                tally.failed.append(Failure(tenant, binding_id, step, f"{error.operation}: {error.reason}"))
                return
            except StorageAdapterError as error:
                if switched and step == "schedule":
                    step = "leftover"
                reason = f"{error.operation}: {error.reason}"
            if attempt < attempts:
                self._deps.sleep(RETRY_PAUSE * 2 ** (attempt - 1))
        logger.warning("binding not migrated", extra={"binding_id": binding_id, "step": step, "reason": reason})
        tally.failed.append(Failure(tenant, binding_id, step, reason))

    def _move(self, binding: Binding) -> None:
        """Steps 1 to 3; raises ConcurrentUpdate when the binding changed before the switch."""
        deps = self._deps
        source = deps.stores[deps.store_of(binding.secret_id)]
        self._pacer.take()
        credentials = source.read(binding.secret_id)
        if api_key_hash(binding.exchange, credentials.api_key) != binding.api_key_hash:
            raise _RotationInFlight
        self._on_step(READ, binding)
        new_id = self._copy(binding, deps.name_of(binding.secret_id), credentials)
        self._on_step(COPIED, binding)
        try:
            deps.bindings.save(replace(binding, secret_id=new_id), previous=binding)
        except ConcurrentUpdate:
            if deps.bindings.get(binding.tenant, binding.binding_id) is not None:
                raise  # changed, not gone: moved again from the start, the copy is kept and refreshed then
            self._discard(binding, new_id)
            raise
        self._on_step(SWITCHED, binding)

    def _copy(self, binding: Binding, name: str, credentials: Credentials) -> str:
        """The target's copy of `credentials` under `name`, created or reused, verified by reading it back."""
        target = self._target
        token = str(uuid.uuid5(_TOKENS, f"{binding.binding_id}:{binding.version}:{self._options.target}"))
        tags = {TENANT_TAG: binding.tenant, BINDING_ID_TAG: binding.binding_id}
        try:
            copy_id = target.create(name, credentials, tags=tags, token=token)
        except StorageAdapterError:
            stored = target.describe(name)
            if stored is None:
                raise  # not there: the create failed for another reason
            copy_id = self._reuse(binding, stored, name, credentials, tags, token)
        if target.read(copy_id) != credentials:  # a create retried with our token answers what it stored then
            version = target.stage_pending(copy_id, credentials, token=str(uuid.uuid4()))
            target.promote(copy_id, version)
            # An AWSPENDING label left on the current version is never read as anything else.
            with suppress(StorageAdapterError):
                target.discard_pending(copy_id, version)
            if target.read(copy_id) != credentials:
                raise StorageAdapterError("migration:verify_copy", "CopyMismatch")
        return copy_id

    def _reuse(
        self,
        binding: Binding,
        stored: StoredCredential,
        name: str,
        credentials: Credentials,
        tags: dict[str, str],
        token: str,
    ) -> str:
        """A copy already under the name: ours (same tenant and binding), made live again if it was scheduled."""
        if (stored.tenant, stored.binding_id) != (binding.tenant, binding.binding_id):
            raise StorageAdapterError("migration:copy", "NameTakenByAnotherBinding")
        self._tally.reused += 1
        if stored.scheduled_for_deletion:
            try:
                self._target.restore(stored.secret_id)
            except StorageAdapterError as error:
                if error.reason != _GONE:
                    raise
                # Past its recovery window but not yet removed (DynamoDB's TTL lags): remove it, write anew.
                self._target.delete_now(stored.secret_id)
                return self._target.create(name, credentials, tags=tags, token=token)
        return stored.secret_id

    def _discard(self, binding: Binding, copy_id: str) -> None:
        """The binding was unbound during its move: its new copy backs nothing."""
        try:
            self._target.schedule_deletion(copy_id, recovery_days=self._deps.recovery_window_days)
        except StorageAdapterError:
            # The orphan sweeper schedules it within a day (it is tagged with its binding).
            logger.warning(
                "copy of an unbound binding left for the orphan sweeper", extra={"binding_id": binding.binding_id}
            )

    def _schedule_old(self, binding: Binding) -> None:
        """Step 4, once the binding points to its new copy."""
        source = self._deps.stores[self._deps.store_of(binding.secret_id)]
        source.schedule_deletion(binding.secret_id, recovery_days=self._deps.recovery_window_days)
        self._tally.scheduled += 1
        self._on_step(SCHEDULED, binding)

    def _leftover(self, binding: Binding, *, counted: bool) -> None:
        """A binding already in the target: its old copy (same name, the other store), if still live, is
        scheduled for deletion. `counted`: a leftover of an earlier run (not this run's own failed schedule)."""
        deps = self._deps
        other = next(name for name in deps.stores if name != self._options.target)
        source = deps.stores[other]
        stored = source.describe(deps.name_of(binding.secret_id))
        if stored is None or stored.scheduled_for_deletion:
            return
        if (stored.tenant, stored.binding_id) not in ((binding.tenant, binding.binding_id), (None, None)):
            return  # not this binding's copy: not ours to schedule
        if counted:
            self._tally.leftovers += 1
        if self._options.dry_run:
            return
        self._pacer.take()
        source.schedule_deletion(stored.secret_id, recovery_days=deps.recovery_window_days)
        self._tally.scheduled += 1
        self._on_step(SCHEDULED, binding)


def migrate_credentials(
    deps: MigrationDeps,
    options: MigrationOptions,
    *,
    progress: Callable[[int, int], None] | None = None,
    on_step: Callable[[str, Binding], None] | None = None,
) -> MigrationReport:
    """Move every binding to `options.target` (see the module docstring); the report of the run."""
    return Migration(deps, options, progress=progress, on_step=on_step).run()
