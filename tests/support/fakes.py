"""In-memory fakes of every port the use cases call (keyhealth.bindings.ports,
keyhealth.audit.ports, keyhealth.notify.ports), for unit tests without moto or HTTP.

Each fake keeps its state in plain attributes that tests read, records the operations called
on it (`calls`), and can be told to fail a chosen operation, as tests/support/faults.py does
for boto3 clients: `fake.fail("save")` makes every later `save` raise a StorageAdapterError
(or the given `error`) until `fake.heal()`, and `fake.before["save"] = hook` runs `hook` once
just before the next `save`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from keyhealth.audit.model import AuditTask, HeldAlert
from keyhealth.audit.ports import CircuitState, NotSent, RunState, TaskDone, Tick
from keyhealth.audit.rolling import WindowIncident
from keyhealth.bindings.model import Binding, ListQuery, Page
from keyhealth.bindings.ports import BINDING_ID_TAG, TENANT_TAG, StoredCredential
from keyhealth.canary.ports import CanaryState
from keyhealth.domain.credentials import Credentials
from keyhealth.domain.errors import AlreadyBound, ConcurrentUpdate, StorageAdapterError
from keyhealth.domain.exchange import CheckResult, ExchangeName, ExchangeSpec, Probe
from keyhealth.domain.model import Scope
from keyhealth.exchanges.registry import spec
from keyhealth.notify.model import Alert
from tests.support.clock import FakeClock


class Faults:
    """Operations of a fake that fail on demand."""

    def __init__(self) -> None:
        self.failing: dict[str, Exception | None] = {}
        self.calls: list[str] = []
        self.before: dict[str, Callable[[], object]] = {}  # operation -> run (once) just before it

    def fail(self, *operations: str, error: Exception | None = None) -> None:
        """Every later call of these operations raises `error` (default: a StorageAdapterError)."""
        for operation in operations:
            self.failing[operation] = error

    def heal(self, *operations: str) -> None:
        """Stop failing these operations (all of them when none is named)."""
        for operation in operations or tuple(self.failing):
            self.failing.pop(operation, None)

    def _call(self, operation: str) -> None:
        self.calls.append(operation)
        if hook := self.before.pop(operation, None):
            hook()  # e.g. another request getting in between, or a test looking at the state
        if operation in self.failing:
            error = self.failing[operation]
            raise error if error is not None else StorageAdapterError(f"fake:{operation}", "ServiceUnavailable")


# ---------------------------------------------------------------------------- bindings
class FakeBindings(Faults):
    """The binding repository: bindings by (tenant, binding id), with the repository's version
    check (`ConcurrentUpdate`) and its one-binding-per-key rule (`AlreadyBound`)."""

    def __init__(self) -> None:
        super().__init__()
        self.items: dict[tuple[str, str], Binding] = {}
        self.saves = 0
        self.conflicts_left = 0  # the next saves that find the binding changed meanwhile

    def add(self, binding: Binding) -> Binding:
        """Store a binding as it is (test setup: no fault, no check)."""
        self.items[(binding.tenant, binding.binding_id)] = binding
        return binding

    def get(self, tenant: str, binding_id: str) -> Binding | None:
        self._call("get")
        return self.items.get((tenant, binding_id))

    def find_by_api_key(self, tenant: str, exchange: ExchangeName, api_key_hash: str) -> str | None:
        self._call("find_by_api_key")
        return self._holder(tenant, exchange, api_key_hash)

    def create(self, binding: Binding) -> None:
        self._call("create")
        if holder := self._holder(binding.tenant, binding.exchange, binding.api_key_hash):
            raise AlreadyBound(holder)
        self.items[(binding.tenant, binding.binding_id)] = binding

    def save(self, binding: Binding, *, previous: Binding) -> Binding:
        self._call("save")
        stored = self.items.get((binding.tenant, binding.binding_id))
        if stored is None:
            raise ConcurrentUpdate("deleted meanwhile")
        if self.conflicts_left:
            self.conflicts_left -= 1
            self.items[(stored.tenant, stored.binding_id)] = replace(stored, version=stored.version + 1)
            raise ConcurrentUpdate("changed meanwhile")
        if stored.version != previous.version:
            raise ConcurrentUpdate("changed meanwhile")
        holder = self._holder(binding.tenant, binding.exchange, binding.api_key_hash)
        if holder not in (None, binding.binding_id):
            raise AlreadyBound(holder)
        saved = replace(binding, version=previous.version + 1)
        self.items[(binding.tenant, binding.binding_id)] = saved
        self.saves += 1
        return saved

    def delete(self, binding: Binding) -> None:
        self._call("delete")
        self.items.pop((binding.tenant, binding.binding_id), None)  # already gone: the outcome asked for

    def bindings_of_account(self, tenant: str, exchange: ExchangeName, account_id: str) -> list[str]:
        self._call("bindings_of_account")
        return sorted(
            b.binding_id
            for (t, _), b in self.items.items()
            if t == tenant and b.exchange == exchange and b.account_id == account_id
        )

    def _holder(self, tenant: str, exchange: ExchangeName, api_key_hash: str) -> str | None:
        return next(
            (
                b.binding_id
                for (t, _), b in self.items.items()
                if t == tenant and b.exchange == exchange and b.api_key_hash == api_key_hash
            ),
            None,
        )

    def list(self, tenant: str, query: ListQuery) -> Page:
        """Newest first (binding ids sort by creation time); the cursor is the last id returned."""
        self._call("list")
        matching = sorted(
            (
                b
                for (t, _), b in self.items.items()
                if t == tenant
                and (query.user_id is None or b.user_id == query.user_id)
                and (query.exchange is None or b.exchange == query.exchange)
                and (query.status is None or b.status is query.status)
            ),
            key=lambda b: b.binding_id,
            reverse=True,
        )
        if query.cursor is not None:
            matching = [b for b in matching if b.binding_id < query.cursor]
        page = matching[: query.limit]
        more = len(matching) > query.limit
        return Page(items=page, next_cursor=page[-1].binding_id if more else None)


@dataclass
class StoredSecret:
    name: str
    tags: dict[str, str]
    versions: dict[str, Credentials]  # version id -> credentials
    stages: dict[str, str]  # stage label (AWSCURRENT, AWSPENDING, AWSPREVIOUS) -> version id
    scheduled_deletion: int | None = None  # the recovery window, while the secret is scheduled for deletion
    created_at: datetime | None = None  # when it was created (FakeSecrets.now), for the orphan sweep


class FakeSecrets(Faults):
    """The credential store: secrets with versions and stage labels, as Secrets Manager keeps them
    (a version's id is the request token it was written with)."""

    ARN_PREFIX = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:"

    def __init__(self, *, now: Callable[[], datetime] | None = None) -> None:
        super().__init__()
        self.secrets: dict[str, StoredSecret] = {}
        self.reads: list[str] = []  # the secret id of every read
        self.now = now  # stamps each created secret's `created_at` (None: unknown)

    def add(self, secret_id: str, credentials: Credentials, *, version_id: str = "v1") -> None:
        """A secret that exists already (test setup: no fault, no call recorded)."""
        self.secrets[secret_id] = StoredSecret(secret_id, {}, {version_id: credentials}, {"AWSCURRENT": version_id})

    def current(self, secret_id: str) -> Credentials:
        """What AWSCURRENT holds (for assertions)."""
        stored = self.secrets[secret_id]
        return stored.versions[stored.stages["AWSCURRENT"]]

    def create(self, name: str, credentials: Credentials, *, tags: dict[str, str], token: str) -> str:
        self._call("create")
        secret_id = f"{self.ARN_PREFIX}{name}"
        if secret_id in self.secrets:
            raise StorageAdapterError("fake:create", "ResourceExistsException")
        created_at = self.now() if self.now is not None else None
        self.secrets[secret_id] = StoredSecret(
            name, dict(tags), {token: credentials}, {"AWSCURRENT": token}, created_at=created_at
        )
        return secret_id

    def read(self, secret_id: str, *, stage: str = "AWSCURRENT") -> Credentials:
        self._call("read")
        self.reads.append(secret_id)
        stored = self._live(secret_id, "read")
        if stage not in stored.stages:
            raise StorageAdapterError("fake:read", "ResourceNotFoundException")
        return stored.versions[stored.stages[stage]]

    def stage_pending(self, secret_id: str, credentials: Credentials, *, token: str) -> str:
        self._call("stage_pending")
        stored = self._live(secret_id, "stage_pending")
        stored.versions[token] = credentials
        stored.stages["AWSPENDING"] = token
        return token

    def current_version(self, secret_id: str) -> str:
        self._call("current_version")
        return self._live(secret_id, "current_version").stages["AWSCURRENT"]

    def promote(self, secret_id: str, version_id: str) -> None:
        self._call("promote")
        stored = self._live(secret_id, "promote")
        stored.stages["AWSPREVIOUS"] = stored.stages["AWSCURRENT"]
        stored.stages["AWSCURRENT"] = version_id

    def demote(self, secret_id: str, version_id: str, *, restore_version_id: str) -> None:
        self._call("demote")
        stored = self._live(secret_id, "demote")
        stored.stages["AWSCURRENT"] = restore_version_id
        stored.stages["AWSPREVIOUS"] = version_id

    def discard_pending(self, secret_id: str, version_id: str) -> None:
        self._call("discard_pending")
        stored = self._live(secret_id, "discard_pending")
        if stored.stages.get("AWSPENDING") == version_id:
            del stored.stages["AWSPENDING"]

    def schedule_deletion(self, secret_id: str, *, recovery_days: int) -> None:
        self._call("schedule_deletion")
        stored = self._existing(secret_id, "schedule_deletion")
        if stored.scheduled_deletion is None:  # idempotent, as the adapter is
            stored.scheduled_deletion = recovery_days

    def restore(self, secret_id: str) -> None:
        self._call("restore")
        self._existing(secret_id, "restore").scheduled_deletion = None

    def delete_now(self, secret_id: str) -> None:
        self._call("delete_now")
        self._existing(secret_id, "delete_now")
        del self.secrets[secret_id]

    def stored(
        self,
        name: str,
        credentials: Credentials,
        *,
        tenant: str | None = None,
        binding_id: str | None = None,
        created_at: datetime | None = None,
    ) -> str:
        """A secret that exists already under `name`, tagged as bind tags them (test setup: no fault, no call
        recorded); returns its id."""
        secret_id = f"{self.ARN_PREFIX}{name}"
        tags = {TENANT_TAG: tenant, BINDING_ID_TAG: binding_id}
        self.secrets[secret_id] = StoredSecret(
            name,
            {k: v for k, v in tags.items() if v is not None},
            {"v1": credentials},
            {"AWSCURRENT": "v1"},
            created_at=created_at,
        )
        return secret_id

    def list_stored(self, prefix: str) -> Iterator[StoredCredential]:
        """Lazily, as the adapter pages: a fault raises at the first `next`; `before["list_stored"]`
        runs then too (in creation order, a snapshot taken at that moment)."""
        self._call("list_stored")
        for secret_id, stored in list(self.secrets.items()):
            if stored.name.startswith(prefix):
                yield self._described(secret_id, stored)

    def describe(self, secret_id: str) -> StoredCredential | None:
        self._call("describe")
        stored = self.secrets.get(secret_id)
        return self._described(secret_id, stored) if stored is not None else None

    @staticmethod
    def _described(secret_id: str, stored: StoredSecret) -> StoredCredential:
        return StoredCredential(
            secret_id=secret_id,
            name=stored.name,
            tenant=stored.tags.get(TENANT_TAG),
            binding_id=stored.tags.get(BINDING_ID_TAG),
            created_at=stored.created_at,
            scheduled_for_deletion=stored.scheduled_deletion is not None,
        )

    def _existing(self, secret_id: str, operation: str) -> StoredSecret:
        if secret_id not in self.secrets:
            raise StorageAdapterError(f"fake:{operation}", "ResourceNotFoundException")
        return self.secrets[secret_id]

    def _live(self, secret_id: str, operation: str) -> StoredSecret:
        stored = self._existing(secret_id, operation)
        if stored.scheduled_deletion is not None:
            raise StorageAdapterError(f"fake:{operation}", "InvalidRequestException")  # marked for deletion
        return stored


class FakeAlerts(Faults):
    def __init__(self) -> None:
        super().__init__()
        self.published: list[Alert] = []

    def publish(self, alert: Alert) -> None:
        self._call("publish")
        self.published.append(alert)

    def types(self) -> list[str]:
        return [a.body["type"] for a in self.published]


class FakeChecker:
    """An exchange checker that answers each check with the next chosen result (the last one
    repeats); records the options of each check in `calls` and the credentials in `checked`."""

    def __init__(self, exchange: ExchangeName, *results: CheckResult) -> None:
        self.exchange = exchange
        self._spec = spec(exchange)
        self.results = list(results)
        self.calls: list[dict[str, Any]] = []
        self.checked: list[Credentials] = []
        self.probes: list[Probe] = []  # the egress canary's answers, in turn (the last repeats); none: up

    @property
    def spec(self) -> ExchangeSpec:
        return self._spec

    def check(
        self,
        credentials: Credentials,
        scopes: Collection[Scope],
        *,
        identify_account: bool = False,
        thorough: bool = True,
    ) -> CheckResult:
        self.calls.append({"scopes": tuple(scopes), "thorough": thorough, "identify_account": identify_account})
        self.checked.append(credentials)
        return self.results.pop(0) if len(self.results) > 1 else self.results[0]

    def probe(self) -> Probe:
        if not self.probes:
            return Probe(self.exchange, True, 42.0, clock_offset_ms=3)
        return self.probes.pop(0) if len(self.probes) > 1 else self.probes[0]


# ------------------------------------------------------------------------------- audit
class FakeBudget(Faults):
    def __init__(self, *, grant: bool = True) -> None:
        super().__init__()
        self.grant = grant
        self.acquired: list[tuple[ExchangeName, dict[str, int], float]] = []
        self.settled: list[tuple[ExchangeName, dict[str, int]]] = []

    def acquire(self, exchange: ExchangeName, cost: Mapping[str, int], *, deadline: float) -> bool:
        self._call("acquire")
        self.acquired.append((exchange, dict(cost), deadline))
        return self.grant

    def settle(self, exchange: ExchangeName, extra: Mapping[str, int]) -> None:
        self._call("settle")
        self.settled.append((exchange, dict(extra)))


class FakeCircuit(Faults):
    def __init__(self, clock: FakeClock) -> None:
        super().__init__()
        self.clock = clock
        self.states: dict[ExchangeName, CircuitState] = {}
        self.trips: list[tuple[ExchangeName, float, str]] = []
        self.closed: list[ExchangeName] = []

    def state(self, exchange: ExchangeName) -> CircuitState:
        self._call("state")
        return self.states.get(exchange, CircuitState())

    def trip(self, exchange: ExchangeName, seconds: float, code: str) -> CircuitState:
        self._call("trip")
        self.trips.append((exchange, seconds, code))
        old = self.states.get(exchange, CircuitState())
        self.states[exchange] = CircuitState(self.clock() + seconds, code, old.strikes + 1)
        return self.states[exchange]

    def close(self, exchange: ExchangeName) -> None:
        self._call("close")
        self.closed.append(exchange)
        self.states[exchange] = replace(self.states.get(exchange, CircuitState()), strikes=0)


class FakeRuns(Faults):
    """The run store, with the adapter's guarantees: a task counts once per (run, binding), the
    finalisation claim is a lease, and `finish` stores the summary once. `answers_lost["record"]
    = n`: the next n records are applied and then fail (a timeout after the write)."""

    def __init__(self) -> None:
        super().__init__()
        self.states: dict[str, RunState] = {}
        self.counts: dict[str, Counter[str]] = {}
        self.held_alerts: dict[str, dict[tuple[str, str], HeldAlert]] = {}
        self.done: dict[str, set[str]] = {}  # run -> the bindings recorded in it
        self.leases: dict[str, float] = {}  # run -> until when its finaliser holds the claim
        self.claims: list[tuple[str, float]] = []  # (run, when) of every claim granted
        self.finished: dict[str, dict[str, Any]] = {}
        self.finishes: list[str] = []  # the run of every finish that stored a summary
        self.records: list[tuple[str, list[str]]] = []  # (run, binding ids) of every record call
        self.answers_lost: dict[str, int] = {}

    def start(self, run_id: str, started_at: datetime) -> RunState:
        self._call("start")
        assert run_id not in self.states
        self.states[run_id] = RunState(run_id, started_at)
        self.counts[run_id] = Counter()
        self.held_alerts[run_id] = {}
        self.done[run_id] = set()
        return self.states[run_id]

    def dispatched(self, run_id: str, tasks_total: int, *, failed: str | None = None) -> RunState:
        self._call("dispatched")
        self.states[run_id] = replace(
            self.states[run_id], dispatch_done=True, tasks_total=tasks_total, dispatch_failed=failed
        )
        return self.states[run_id]

    def is_done(self, run_id: str, binding_id: str) -> bool:
        self._call("is_done")
        return binding_id in self.done.get(run_id, set())

    def record(self, run_id: str, tasks: Sequence[TaskDone]) -> RunState:
        self._call("record")
        self.records.append((run_id, [t.binding_id for t in tasks]))
        done, new = self.done[run_id], 0
        for task in tasks:
            if task.binding_id in done:
                continue
            done.add(task.binding_id)
            new += 1
            self.counts[run_id].update(task.counters)
            for alert in task.held:
                self.held_alerts[run_id][(alert.binding_id, alert.kind)] = alert
        state = self.states[run_id]
        self.states[run_id] = replace(state, tasks_done=state.tasks_done + new)
        if self.answers_lost.get("record"):
            self.answers_lost["record"] -= 1
            raise StorageAdapterError("fake:record", "ReadTimeoutError")
        return self.states[run_id]

    def claim_finalization(self, run_id: str, *, now: float, lease_seconds: float) -> bool:
        self._call("claim_finalization")
        state = self.states[run_id]
        if not state.complete or state.finished or self.leases.get(run_id, float("-inf")) > now:
            return False
        self.leases[run_id] = now + lease_seconds
        self.claims.append((run_id, now))
        return True

    def load(self, run_id: str) -> RunState | None:
        self._call("load")
        return self.states.get(run_id)

    def counters(self, run_id: str) -> dict[str, int]:
        self._call("counters")
        return dict(self.counts[run_id])

    def held(self, run_id: str) -> Iterator[HeldAlert]:
        self._call("held")
        yield from self.held_alerts[run_id].values()

    def finish(self, run_id: str, summary: dict[str, Any], finished_at: datetime) -> bool:
        self._call("finish")
        if self.states[run_id].finished:
            return False
        self.finished[run_id] = summary
        self.finishes.append(run_id)
        self.states[run_id] = replace(self.states[run_id], finished=True)
        return True


class FakeTaskQueue(Faults):
    """The audit's work queues: `sent` is every task SQS took, in order (one sent twice is there
    twice). `refuse(binding_id, ...)`: the next send refuses those tasks' entries (a partial
    SendMessageBatch failure) and takes the others; `answers_lost = n`: the next n sends are taken
    and then fail (a timeout after SQS took them); `fail("send")`: whole calls fail, nothing taken."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[AuditTask] = []
        self.calls_sent: list[list[str]] = []  # the binding ids of every send, in order
        self.refusing: set[str] = set()
        self.answers_lost = 0

    def refuse(self, *binding_ids: str) -> None:
        self.refusing.update(binding_ids)

    def send(self, tasks: list[AuditTask]) -> None:
        self._call("send")
        self.calls_sent.append([t.binding_id for t in tasks])
        refused = [t for t in tasks if t.binding_id in self.refusing]
        self.refusing -= {t.binding_id for t in refused}
        self.sent.extend(t for t in tasks if t not in refused)
        if refused:
            raise NotSent("fake:send", f"{len(refused)} messages refused", refused)
        if self.answers_lost:
            self.answers_lost -= 1
            raise NotSent("fake:send", "ReadTimeoutError", list(tasks))


class FakeTicks(Faults):
    """The rolling audit's tick store, with the adapter's guarantees: a claim is a lease taken only
    over the watermark the dispatcher read, an incident opens once, a day's summary is claimed once."""

    def __init__(self) -> None:
        super().__init__()
        self.stored_watermark: datetime | None = None
        self.claim_run: str | None = None
        self.claimed_until = float("-inf")
        self.log: list[Tick] = []
        self.incidents: dict[tuple[str, str], WindowIncident] = {}
        self.opened: list[WindowIncident] = []
        self.summaries: set[str] = set()

    def watermark(self) -> datetime | None:
        self._call("watermark")
        return self.stored_watermark

    def claim(self, run_id: str, expected: datetime | None, *, now: datetime, lease_seconds: float) -> bool:
        self._call("claim")
        if self.stored_watermark != expected or self.claimed_until > now.timestamp():
            return False
        self.claim_run, self.claimed_until = run_id, now.timestamp() + lease_seconds
        self.log.append(Tick(run_id, now))
        return True

    def advance(self, run_id: str, watermark: datetime) -> None:
        self._call("advance")
        if self.claim_run != run_id:
            raise StorageAdapterError("fake:advance", "the tick's claim was taken over")
        self.stored_watermark, self.claim_run, self.claimed_until = watermark, None, float("-inf")

    def release(self, run_id: str) -> None:
        self._call("release")
        if self.claim_run == run_id:
            self.claim_run, self.claimed_until = None, float("-inf")

    def ticks(self, since: datetime, until: datetime) -> list[Tick]:
        self._call("ticks")
        return [t for t in self.log if since < t.started_at <= until]

    def open_incidents(self) -> list[WindowIncident]:
        self._call("open_incidents")
        return list(self.incidents.values())

    def open_incident(self, incident: WindowIncident) -> bool:
        self._call("open_incident")
        if incident.key in self.incidents:
            return False
        self.incidents[incident.key] = incident
        self.opened.append(incident)
        return True

    def incidents_opened(self, since: datetime, until: datetime) -> list[WindowIncident]:
        self._call("incidents_opened")
        return [i for i in self.opened if since < i.opened_at <= until]

    def hold_incident(self, incident: WindowIncident) -> None:
        self._call("hold_incident")
        stored = self.incidents.get(incident.key)
        if stored is not None and stored.held_at < incident.held_at:
            self.incidents[incident.key] = incident

    def close_incident(self, incident: WindowIncident) -> None:
        self._call("close_incident")
        stored = self.incidents.get(incident.key)
        if stored is not None and stored.held_at == incident.held_at:
            del self.incidents[incident.key]

    def claim_summary(self, day: str) -> bool:
        self._call("claim_summary")
        if day in self.summaries:
            return False
        self.summaries.add(day)
        return True


# ---------------------------------------------------------------------------- canary
class FakeCanaryStore(Faults):
    """The canary's last results, with the adapter's guarantee: a save over a result read before another
    canary's save is refused."""

    def __init__(self) -> None:
        super().__init__()
        self.states: dict[tuple[str, str], CanaryState] = {}

    def last(self, egress_ip: str, exchange: ExchangeName) -> CanaryState | None:
        self._call("last")
        return self.states.get((egress_ip, exchange))

    def save(self, state: CanaryState, *, previous: CanaryState | None) -> bool:
        self._call("save")
        if self.states.get((state.egress_ip, state.exchange)) != previous:
            return False
        self.states[state.egress_ip, state.exchange] = state
        return True

    def all(self) -> list[CanaryState]:
        self._call("all")
        return list(self.states.values())


# ------------------------------------------------------------------------------ webhooks (keyhealth.webhooks.ports)
class FakeEventFeed(Faults):
    def __init__(self) -> None:
        super().__init__()
        self.events: dict[tuple[str, str], Any] = {}
        self.keys: dict[tuple[str, str], str] = {}

    def append(self, event: Any, *, dedupe_key: str | None = None) -> Any:
        self._call("append")
        if dedupe_key is not None and (event.tenant, dedupe_key) in self.keys:
            return self.events[(event.tenant, self.keys[(event.tenant, dedupe_key)])]
        self.events[(event.tenant, event.id)] = event
        if dedupe_key is not None:
            self.keys[(event.tenant, dedupe_key)] = event.id
        return event

    def get(self, tenant: str, event_id: str) -> Any:
        self._call("get")
        return self.events.get((tenant, event_id))

    def page(self, tenant: str, *, after: str | None, limit: int) -> tuple[list[Any], bool]:
        self._call("page")
        ids = sorted(i for t, i in self.events if t == tenant and (after is None or i > after))
        return [self.events[(tenant, i)] for i in ids[:limit]], len(ids) > limit


class FakeWebhookStore(Faults):
    def __init__(self) -> None:
        super().__init__()
        self.webhooks: dict[str, Any] = {}

    def get(self, tenant: str) -> Any:
        self._call("get")
        return self.webhooks.get(tenant)

    def create(self, webhook: Any) -> bool:
        self._call("create")
        if webhook.tenant in self.webhooks:
            return False
        self.webhooks[webhook.tenant] = webhook
        return True

    def update_target(self, tenant: str, *, url: str, events: tuple[str, ...], updated_at: datetime) -> Any:
        self._call("update_target")
        if tenant not in self.webhooks:
            return None
        self.webhooks[tenant] = replace(self.webhooks[tenant], url=url, events=events, updated_at=updated_at)
        return self.webhooks[tenant]

    def rotate_secret(
        self, tenant: str, *, secret_ciphertext: bytes, replaces: bytes, previous_expires_at: datetime, at: datetime
    ) -> bool:
        self._call("rotate_secret")
        current = self.webhooks.get(tenant)
        if current is None or current.secret_ciphertext != replaces:
            return False
        self.webhooks[tenant] = replace(
            current,
            secret_ciphertext=secret_ciphertext,
            previous_secret_ciphertext=replaces,
            previous_secret_expires_at=previous_expires_at,
            updated_at=at,
        )
        return True

    def delete(self, tenant: str) -> bool:
        self._call("delete")
        return self.webhooks.pop(tenant, None) is not None

    def _health(self, tenant: str, **changes: Any) -> None:
        if tenant in self.webhooks:
            self.webhooks[tenant] = replace(self.webhooks[tenant], **changes)

    def record_delivered(self, tenant: str, at: datetime) -> None:
        self._call("record_delivered")
        self._health(tenant, last_delivered_at=at, failing_since=None, last_error=None)

    def record_failure(self, tenant: str, at: datetime, error: str) -> None:
        self._call("record_failure")
        if tenant in self.webhooks:
            self._health(tenant, failing_since=self.webhooks[tenant].failing_since or at, last_error=error)

    def record_dead_letter(self, tenant: str, at: datetime, error: str) -> None:
        self._call("record_dead_letter")
        if tenant in self.webhooks:
            current = self.webhooks[tenant]
            self._health(
                tenant,
                failing_since=current.failing_since or at,
                last_error=error,
                dead_lettered=current.dead_lettered + 1,
                last_dead_lettered_at=at,
            )


class FakeDeliveryQueue(Faults):
    def __init__(self) -> None:
        super().__init__()
        self.queued: list[Any] = []
        self.postponed: list[tuple[str, int]] = []

    def enqueue(self, delivery: Any) -> None:
        self._call("enqueue")
        self.queued.append(delivery)

    def postpone(self, receipt_handle: str, seconds: int) -> None:
        self._call("postpone")
        self.postponed.append((receipt_handle, seconds))


class FakeSecretCipher(Faults):
    """'Encrypts' by tagging with the tenant: a ciphertext decrypts for its own tenant only."""

    def encrypt(self, tenant: str, secret: Any) -> bytes:
        self._call("encrypt")
        return f"{tenant}|{secret.reveal()}".encode()

    def decrypt(self, tenant: str, ciphertext: bytes) -> Any:
        from keyhealth.domain.credentials import Secret

        self._call("decrypt")
        owner, _, value = ciphertext.decode().partition("|")
        if owner != tenant:
            raise StorageAdapterError("fake:decrypt", "InvalidCiphertextException")
        return Secret(value)


class FakeWebhookSender(Faults):
    """Answers each post with the next of `answers` (a status code, or a SendOutcome), then 200."""

    def __init__(self, *answers: Any) -> None:
        super().__init__()
        self.answers = list(answers)
        self.posts: list[tuple[str, bytes, dict[str, str]]] = []
        self.refuse: set[str] = set()

    def vet(self, url: str) -> None:
        from keyhealth.webhooks.urls import WebhookUrlRefused

        self._call("vet")
        if url in self.refuse:
            raise WebhookUrlRefused("refused by the test")

    def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Any:
        from keyhealth.webhooks.ports import SendOutcome

        self._call("post")
        self.posts.append((url, body, dict(headers)))
        answer = self.answers.pop(0) if self.answers else 200
        if isinstance(answer, SendOutcome):
            return answer
        return SendOutcome(answer, None if 200 <= answer < 300 else f"http {answer}")


class FakeDeadLetters(Faults):
    def __init__(self) -> None:
        super().__init__()
        self.letters: list[tuple[dict[str, Any], str, str]] = []

    def send(self, letter: dict[str, Any], *, reason: str, message_type: str) -> None:
        self._call("send")
        self.letters.append((letter, reason, message_type))
