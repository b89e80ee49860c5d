"""The credential migration on moto (GitHub issue 11): 1,000 bindings moved from Secrets Manager to the KMS
store with a crash at 40% and a resume, then moved back; a reader reads bindings through the real
RoutedCredentialStore after every step of the move and always gets the original credentials; the old copies
are scheduled for deletion, each after its binding's switch. Also: the dry run, a crash between the switch
and the schedule, a rotation between a binding's copy and its switch, an unbind during a move, pacing."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from moto import mock_aws

from keyhealth import wiring
from keyhealth.adapters.dynamodb_bindings import to_item
from keyhealth.adapters.routed_credentials import KMS, SECRETS_MANAGER, name_of, store_of
from keyhealth.bindings.migration import (
    COPIED,
    READ,
    SCHEDULED,
    SWITCHED,
    Migration,
    MigrationOptions,
    MigrationReport,
    migrate_credentials,
)
from keyhealth.bindings.model import Binding, api_key_hash
from keyhealth.bindings.ports import BINDING_ID_TAG, TENANT_TAG
from keyhealth.config import Settings
from keyhealth.domain.credentials import Credentials, KeyType, Secret
from keyhealth.domain.ids import new_binding_id
from keyhealth.domain.model import Scope, Status
from tests.support.aws import SESSION, TABLE, Recording
from tests.support.clock import FakeClock
from tests.support.template import create_key, create_table

CREDENTIALS_TABLE = "keyhealth-credentials"
PREFIX = "keyhealth/test/"
TENANTS = ("111111111111:role/platform-a", "222222222222:role/platform-b", "333333333333:role/platform-c")
EXCHANGES = ("binance", "bitget", "bingx")
RATE = 50.0


class Crash(Exception):
    """The fault a test injects: the process dies where it is raised."""


@dataclass
class Rig:
    container: wiring.Container
    clock: FakeClock
    dynamodb: Recording
    secretsmanager: Recording
    originals: dict[str, Credentials] = field(default_factory=dict)  # binding id -> what was bound
    tenants: dict[str, str] = field(default_factory=dict)  # binding id -> tenant
    first_ids: dict[str, str] = field(default_factory=dict)  # binding id -> its secret id when it was bound

    def binding(self, binding_id: str) -> Binding:
        binding = self.container.bindings.get(self.tenants[binding_id], binding_id)
        assert binding is not None
        return binding

    def bindings(self) -> list[Binding]:
        return [self.binding(binding_id) for binding_id in self.originals]

    def run(self, target: str, **hooks: Any) -> MigrationReport:
        options = MigrationOptions(target=target, rate_per_second=RATE, dry_run=hooks.pop("dry_run", False))
        return migrate_credentials(self.container.credential_migration(), options, **hooks)

    def store(self, name: str) -> Any:
        return self.container.credentials.store(name)

    def switches(self) -> list[tuple[int, str, str]]:
        """(position in the DynamoDB call log, binding id, new secret id) of every binding write."""
        return [
            (position, params["Item"]["binding_id"]["S"], params["Item"]["secret_id"]["S"])
            for position, (name, params) in enumerate(self.dynamodb.calls)
            if name == "put_item" and params["TableName"] == TABLE
        ]


@pytest.fixture
def rig(monkeypatch: pytest.MonkeyPatch) -> Iterator[Rig]:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    with mock_aws():
        raw_dynamodb = SESSION.client("dynamodb")
        create_table(raw_dynamodb, "BindingsTable", TABLE)
        create_table(raw_dynamodb, "CredentialsTable", CREDENTIALS_TABLE)
        kms = SESSION.client("kms")
        key = create_key(kms, "CredentialsKey")
        dynamodb, secretsmanager = Recording(raw_dynamodb), Recording(SESSION.client("secretsmanager"))
        secretsmanager.calls = dynamodb.calls  # one log of both, in call order
        clients = {"dynamodb": dynamodb, "secretsmanager": secretsmanager, "kms": kms}
        clock = FakeClock()
        settings = Settings(
            table_name=TABLE,
            secret_prefix=PREFIX,
            credential_store=KMS,  # new binds go to the target first (docs/cli.md: the order of steps)
            credentials_table_name=CREDENTIALS_TABLE,
            credentials_kms_key_id=key,
            stack_name="test",
        )
        container = wiring.Container(
            wiring.Environment(
                settings=settings, aws_client=clients.__getitem__, clock=clock, monotonic=clock, sleep=clock.sleep
            )
        )
        yield Rig(container, clock, dynamodb, secretsmanager)


def credentials_of(n: int) -> Credentials:
    passphrase = Secret(f"pass-{n:06d}") if n % 3 == 1 else None
    return Credentials(
        api_key=f"key{n:06d}" + "k" * 55, api_secret=Secret(f"secret-{n:06d}-" + "s" * 40), passphrase=passphrase
    )


def seed(rig: Rig, count: int) -> None:
    """`count` bindings on Secrets Manager, written straight through the repository and the store."""
    secrets = rig.store(SECRETS_MANAGER)
    now = datetime(2026, 1, 1, tzinfo=UTC)
    for n in range(count):
        binding_id = new_binding_id(now.timestamp() + n)
        tenant, exchange = TENANTS[n % len(TENANTS)], EXCHANGES[n % len(EXCHANGES)]
        credentials = credentials_of(n)
        secret_id = secrets.create(
            f"{PREFIX}{binding_id}",
            credentials,
            tags={TENANT_TAG: tenant, BINDING_ID_TAG: binding_id},
            token=f"seed-{n:06d}-0000-4000-8000-000000000000",
        )
        binding = Binding(
            binding_id=binding_id,
            tenant=tenant,
            user_id=f"u-{n}",
            exchange=exchange,
            label=None,
            key_type=KeyType.HMAC,
            api_key_masked=credentials.masked_api_key,
            api_key_hash=api_key_hash(exchange, credentials.api_key),
            scopes=(Scope.SPOT,),
            status=Status.HEALTHY,
            created_at=now,
            updated_at=now,
            secret_id=secret_id,
        )
        # The repository's own item, put without its api key marker: moto's TransactWriteItems (the
        # repository's create) copies the table on every call, and the migration never reads the markers.
        rig.dynamodb.put_item(TableName=TABLE, Item=to_item(binding), ConditionExpression="attribute_not_exists(pk)")
        rig.originals[binding_id] = credentials
        rig.tenants[binding_id] = tenant
        rig.first_ids[binding_id] = secret_id
    rig.dynamodb.calls.clear()


class Reader:
    """Reads bindings as keyhealth's own readers do (verify, the audit), through the routed store, and checks
    that each read answers the credentials the binding was bound with: by the binding's current secret id,
    and by the id it had when it was bound (a reader that read the binding just before its switch)."""

    def __init__(self, rig: Rig, *, others_every: int = 16) -> None:
        self.rig, self.others_every, self.reads, self.steps = rig, others_every, 0, 0
        self.random = random.Random(11)
        self.ids = list(rig.originals)

    def read(self, binding_id: str, *, stale: bool = True) -> None:
        routed = self.rig.container.credentials
        expected = self.rig.originals[binding_id]
        ids = [self.rig.binding(binding_id).secret_id]
        if stale and self.rig.first_ids[binding_id] != ids[0]:
            ids.append(self.rig.first_ids[binding_id])
        for secret_id in ids:
            assert routed.read(secret_id) == expected, binding_id
            self.reads += 1

    def __call__(self, step: str, binding: Binding) -> None:
        """After every step of a move: the binding being moved (by its stale id too once its old copy is
        scheduled: the read that needs the fallback), and every `others_every` steps another binding, at random.
        (moto answers a call in about 4 ms: reading everything after every step would take hours.)"""
        self.steps += 1
        self.read(binding.binding_id, stale=step == SCHEDULED)
        if self.steps % self.others_every == 0:
            self.read(self.random.choice(self.ids))

    def everything(self, *, stale: bool = True) -> None:
        for binding_id in self.ids:
            self.read(binding_id, stale=stale)


def crash_at(position: int, step: str, then: Callable[[str, Binding], None]) -> Callable[[str, Binding], None]:
    """A hook that passes every step to `then` and raises Crash after `step` of the `position`-th binding."""
    started: list[str] = []

    def hook(seen: str, binding: Binding) -> None:
        then(seen, binding)
        if seen == READ and binding.binding_id not in started:
            started.append(binding.binding_id)
        if seen == step and len(started) == position:
            raise Crash(f"crashed after {step} of binding {position}")

    return hook


def assert_scheduled_after_switch(rig: Rig, source: str) -> None:
    """Each old copy's deletion was asked for (DeleteSecret, or the KMS store's UpdateItem setting deleted_at)
    after its binding's switch (the binding's PutItem naming the new copy), by the shared AWS call log."""
    switched: dict[str, int] = {}
    for position, binding_id, secret_id in rig.switches():
        if store_of(secret_id) != source:
            switched.setdefault(binding_id, position)
    deleted: dict[str, int] = {}
    for position, (name, params) in enumerate(rig.dynamodb.calls):
        if source == SECRETS_MANAGER and name == "delete_secret":
            deleted.setdefault(name_of(params["SecretId"])[len(PREFIX) :], position)
        elif source == KMS and name == "update_item" and "#deleted = :now" in params.get("UpdateExpression", ""):
            deleted.setdefault(params["Key"]["pk"]["S"][len(PREFIX) :], position)
    assert set(switched) == set(deleted) == set(rig.originals)
    assert all(deleted[binding_id] > switched[binding_id] for binding_id in rig.originals)


def test_a_thousand_bindings_move_to_kms_through_a_crash_at_40_percent_and_a_resume(rig: Rig) -> None:
    started = time.monotonic()
    seed(rig, 1000)
    reader = Reader(rig)
    order: list[tuple[str, str]] = []  # (step, binding id), across both runs

    def observe(step: str, binding: Binding) -> None:
        order.append((step, binding.binding_id))
        reader(step, binding)

    # --- run 1 crashes between the copy and the switch of the 400th binding
    migration = Migration(
        rig.container.credential_migration(),
        MigrationOptions(target=KMS, rate_per_second=RATE),
        on_step=crash_at(400, COPIED, observe),
    )
    with pytest.raises(Crash):
        migration.run()
    partial = migration.report()
    assert (partial.total, partial.seen, partial.moved, partial.scheduled, partial.complete) == (
        1000,
        399,
        399,
        399,
        False,
    )
    in_kms = [b for b in rig.bindings() if store_of(b.secret_id) == KMS]
    assert len(in_kms) == 399
    crashed = order[-1][1]
    assert rig.binding(crashed).secret_id == rig.first_ids[crashed]  # not switched
    copy = rig.store(KMS).describe(f"{PREFIX}{crashed}")
    assert copy is not None
    assert not copy.scheduled_for_deletion
    retired = [rig.store(SECRETS_MANAGER).describe(rig.first_ids[b.binding_id]) for b in in_kms]
    assert all(old is not None and old.scheduled_for_deletion for old in retired)
    reader.everything()  # the crash left every binding readable, by its current id and by its old one

    # --- run 2 resumes: the crashed binding's copy is asked for again with the same token and reused
    resumed = rig.run(KMS, on_step=observe)
    assert resumed.ok
    counts = (resumed.total, resumed.seen, resumed.moved, resumed.already_there, resumed.leftovers, resumed.scheduled)
    assert counts == (1000, 1000, 601, 399, 0, 601)
    assert (resumed.gone, resumed.failed) == (0, ())
    assert partial.moved + resumed.moved == 1000
    switches = [(binding_id, secret_id) for _, binding_id, secret_id in rig.switches()]
    assert sorted(binding_id for binding_id, _ in switches) == sorted(rig.originals)  # each switched once
    assert all(store_of(secret_id) == KMS for _, secret_id in switches)
    for binding_id, secret_id in rig.first_ids.items():
        old = rig.store(SECRETS_MANAGER).describe(secret_id)
        assert old is not None, binding_id
        assert old.scheduled_for_deletion, binding_id
    for binding_id in rig.originals:  # each scheduled after its switch, by the steps' order
        steps = [step for step, seen in order if seen == binding_id]
        assert steps.index(SCHEDULED) > steps.index(SWITCHED), binding_id
    assert_scheduled_after_switch(rig, SECRETS_MANAGER)
    assert reader.steps == 4 * 1000 + 2  # read, copied, switched, scheduled; the crashed one's first two again
    reader.everything()
    # Paced: the fake clock moved on by the pauses alone.
    assert rig.clock.sleeps

    # --- a third run has nothing to do and writes nothing
    rig.dynamodb.calls.clear()
    again = rig.run(KMS)
    assert (again.moved, again.already_there, again.scheduled, again.ok) == (0, 1000, 0, True)
    assert not [name for name, _ in rig.dynamodb.calls if name not in ("query", "get_item", "describe_secret")]
    print(f"\n1,000 bindings, crash at binding 400, resume: {reader.reads} reads, {time.monotonic() - started:.1f} s")


def test_moving_back_restores_and_reuses_the_retired_copies(rig: Rig) -> None:
    seed(rig, 60)
    reader = Reader(rig, others_every=4)
    assert rig.run(KMS, on_step=reader).ok
    rig.dynamodb.calls.clear()
    back = rig.run(SECRETS_MANAGER, on_step=reader)
    assert back.ok
    assert (back.moved, back.reused, back.scheduled, back.already_there) == (60, 60, 60, 0)
    assert all(b.secret_id == rig.first_ids[b.binding_id] for b in rig.bindings())  # the same secrets again
    for binding_id in rig.originals:
        kms_copy = rig.store(KMS).describe(f"{PREFIX}{binding_id}")
        assert kms_copy is not None
        assert kms_copy.scheduled_for_deletion
    assert_scheduled_after_switch(rig, KMS)
    reader.everything()


def test_a_dry_run_counts_and_writes_nothing(rig: Rig) -> None:
    seed(rig, 30)
    report = rig.run(KMS, dry_run=True)
    assert (report.dry_run, report.total, report.moved, report.already_there, report.scheduled) == (True, 30, 30, 0, 0)
    assert report.ok
    assert {name for name, _ in rig.dynamodb.calls} <= {"query", "get_item"}
    assert all(b.secret_id == rig.first_ids[b.binding_id] for b in rig.bindings())
    assert not list(rig.store(KMS).list_stored(PREFIX))


def test_a_crash_between_the_switch_and_the_schedule_is_finished_as_a_leftover(rig: Rig) -> None:
    seed(rig, 10)
    with pytest.raises(Crash):
        rig.run(KMS, on_step=crash_at(4, SWITCHED, lambda step, binding: None))
    resumed = rig.run(KMS)
    assert resumed.ok
    assert (resumed.moved, resumed.already_there, resumed.leftovers, resumed.scheduled) == (6, 4, 1, 7)
    for binding_id, secret_id in rig.first_ids.items():
        old = rig.store(SECRETS_MANAGER).describe(secret_id)
        assert old is not None, binding_id
        assert old.scheduled_for_deletion, binding_id


def test_a_binding_changed_between_its_copy_and_its_switch_is_moved_again(rig: Rig) -> None:
    seed(rig, 5)
    changed: list[str] = []

    def touch(step: str, binding: Binding) -> None:
        if step == COPIED and not changed:  # an audit check records a report meanwhile: version + 1
            changed.append(binding.binding_id)
            rig.container.bindings.save(binding, previous=binding)

    report = rig.run(KMS, on_step=touch)
    assert report.ok
    assert (report.moved, report.retried, report.reused) == (5, 1, 1)
    assert store_of(rig.binding(changed[0]).secret_id) == KMS
    assert rig.container.credentials.read(rig.binding(changed[0]).secret_id) == rig.originals[changed[0]]


def test_a_binding_unbound_during_its_move_leaves_no_live_copy(rig: Rig) -> None:
    seed(rig, 5)
    unbound: list[str] = []

    def unbind(step: str, binding: Binding) -> None:
        if step == COPIED and not unbound:
            unbound.append(binding.binding_id)
            rig.container.bindings.delete(binding)

    report = rig.run(KMS, on_step=unbind)
    assert report.ok
    assert (report.moved, report.gone) == (4, 1)
    copy = rig.store(KMS).describe(f"{PREFIX}{unbound[0]}")
    assert copy is not None
    assert copy.scheduled_for_deletion
