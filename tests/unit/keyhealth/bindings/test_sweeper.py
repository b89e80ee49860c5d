"""The orphan sweep (keyhealth.bindings.sweeper) with in-memory fakes of every port.

A secret under the prefix is kept when its binding points to it, when it is younger than an hour, when
it is already scheduled for deletion, or when it is not one bind made; every other one is an orphan and
is scheduled for deletion (with the recovery window). One warning alert says so; nothing is published
when there is nothing to say. A storage error on one secret is counted and the sweep goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from itertools import islice

import pytest

from keyhealth.bindings.model import BindCommand, Binding
from keyhealth.bindings.ports import Services, StoredCredential
from keyhealth.bindings.sweeper import ORPHAN_MIN_AGE, Verdict, sweep_orphans
from keyhealth.bindings.usecases import bind_key, unbind
from keyhealth.domain.credentials import Credentials, Secret
from keyhealth.domain.errors import StorageAdapterError, StorageUnavailable
from keyhealth.domain.exchange import CheckResult
from keyhealth.domain.ids import new_binding_id
from keyhealth.domain.model import Report, Scope
from keyhealth.exchanges.registry import Exchange
from keyhealth.notify.model import MAX_ORPHAN_IDS, OrphansRemoved, from_body
from tests.support.clock import FakeClock
from tests.support.fakes import FakeAlerts, FakeBindings, FakeChecker, FakeSecrets

TENANT = "123456789012:role/platform"
PREFIX = "keyhealth/test/"
START = 1_800_000_000.0
RECOVERY_DAYS = 9
EGRESS = ("203.0.113.10",)
HOUR = 3600.0


def key(n: int) -> Credentials:
    return Credentials(api_key=f"K{n:03d}" * 16, api_secret=Secret(f"secret-{n:03d}" * 4))


@dataclass
class World:
    clock: FakeClock
    bindings: FakeBindings
    secrets: FakeSecrets
    alerts: FakeAlerts
    services: Services

    def bound(self, n: int = 1) -> Binding:
        """A key bound through the use case: its secret and its binding agree."""
        command = BindCommand(user_id="u-42", exchange=Exchange.BINANCE, credentials=key(n), scopes=(Scope.SPOT,))
        return bind_key(command, TENANT, self.services).binding

    def orphan(self, n: int = 1, *, age: float = 2 * HOUR, tenant: str = TENANT) -> str:
        """A secret as bind creates it, `age` seconds old, with no binding: what a double fault leaves."""
        binding_id = new_binding_id(self.clock.now - age)
        return self.secrets.stored(
            f"{PREFIX}{binding_id}",
            key(n),
            tenant=tenant,
            binding_id=binding_id,
            created_at=datetime.fromtimestamp(self.clock.now - age, UTC),
        )

    def scheduled(self, secret_id: str) -> int | None:
        return self.secrets.secrets[secret_id].scheduled_deletion

    def sweep(self, **options):
        self.secrets.calls.clear()
        self.bindings.calls.clear()
        return sweep_orphans(self.services, **options)

    def messages(self) -> list[OrphansRemoved]:
        messages = [from_body(a.body) for a in self.alerts.published]
        assert all(isinstance(m, OrphansRemoved) for m in messages)
        return messages  # type: ignore[return-value]


@pytest.fixture
def world() -> World:
    clock = FakeClock(START)
    bindings, secrets, alerts = FakeBindings(), FakeSecrets(now=clock.datetime), FakeAlerts()
    report = Report(checked_at=clock.datetime(), egress_ip=EGRESS[0], findings=())
    checkers = {e.value: FakeChecker(e.value, CheckResult(report=report)) for e in Exchange}
    services = Services(
        checkers=checkers,  # type: ignore[arg-type]
        bindings=bindings,
        secrets=secrets,
        alerts=alerts,
        secret_prefix=PREFIX,
        egress_ips=EGRESS,
        now=clock.datetime,
        recovery_window_days=RECOVERY_DAYS,
    )
    return World(clock, bindings, secrets, alerts, services)


# --- nothing to remove --------------------------------------------------------------------------------------


def test_a_sweep_of_bound_secrets_removes_nothing_and_says_nothing(world):
    # Given two bindings, two hours old
    first, second = world.bound(1), world.bound(2)
    world.clock.skip(2 * HOUR)
    # When
    result = world.sweep()
    # Then
    assert result.counts() == {"checked": 2, "removed": 0, "failed": 0}
    assert result.kept == {"bound": 2}
    assert world.scheduled(first.secret_id) is None
    assert world.scheduled(second.secret_id) is None
    assert world.alerts.published == []
    assert world.secrets.reads == []  # no secret's value was read


def test_a_sweep_with_no_secrets_at_all_says_nothing(world):
    assert world.sweep().counts() == {"checked": 0, "removed": 0, "failed": 0}
    assert world.alerts.published == []


# --- what is removed, what is kept --------------------------------------------------------------------------


def test_an_orphan_older_than_an_hour_is_scheduled_for_deletion_and_alerted(world):
    # Given a binding and a secret no binding points to
    binding = world.bound()
    orphan = world.orphan()
    world.clock.skip(2 * HOUR)
    # When
    result = world.sweep()
    # Then: only the orphan is scheduled for deletion, with the recovery window (not deleted at once)
    orphan_id = world.secrets.secrets[orphan].tags["keyhealth:binding_id"]
    assert result.counts() == {"checked": 2, "removed": 1, "failed": 0}
    assert result.removed == (orphan_id,)
    assert world.scheduled(orphan) == RECOVERY_DAYS
    assert world.scheduled(binding.secret_id) is None
    assert "delete_now" not in world.secrets.calls
    # And one warning alert with the count and the binding id
    [alert] = world.alerts.published
    assert alert.attributes == {"type": "orphans_removed", "severity": "warning", "exchange": "all", "status": "sweep"}
    [message] = world.messages()
    assert (message.count, message.failed, message.checked) == (1, 0, 2)
    assert message.binding_ids == (orphan_id,)
    assert (message.secret_prefix, message.recovery_days, message.complete) == (PREFIX, RECOVERY_DAYS, True)
    assert message.swept_at == "2027-01-15T10:00:00Z"
    assert "1 stored credentials" in alert.subject
    assert world.secrets.reads == []


def test_a_secret_younger_than_an_hour_is_kept(world):
    # Given a secret with no binding yet, created 59 minutes ago (a bind may be between its two writes)
    young = world.orphan(age=ORPHAN_MIN_AGE.total_seconds() - 60)
    # When
    result = world.sweep()
    # Then
    assert result.counts() == {"checked": 1, "removed": 0, "failed": 0}
    assert result.kept == {Verdict.YOUNG.value: 1}
    assert world.scheduled(young) is None
    assert world.bindings.calls == []  # not even looked up
    assert world.alerts.published == []


def test_the_minimum_age_is_the_callers_to_choose(world):
    young = world.orphan(age=10 * 60)
    assert world.sweep(min_age=timedelta(minutes=5)).counts()["removed"] == 1
    assert world.scheduled(young) == RECOVERY_DAYS


def test_a_secret_scheduled_for_deletion_is_no_orphan(world):
    # Given a binding unbound two hours ago: its secret is scheduled for deletion, its item gone
    binding = world.bound()
    unbind(TENANT, binding.binding_id, world.services)
    world.clock.skip(2 * HOUR)
    # When
    result = world.sweep()
    # Then: left to Secrets Manager, untouched
    assert result.counts() == {"checked": 1, "removed": 0, "failed": 0}
    assert result.kept == {"scheduled": 1}
    assert world.secrets.calls == ["list_stored"]
    assert world.alerts.published == []


def test_a_secret_whose_binding_points_to_another_secret_is_removed(world):
    # Given a binding whose item names another secret than the one named after it
    binding = world.bound(1)
    other = world.secrets.stored(f"{PREFIX}elsewhere", key(2))  # not bind's: kept whatever happens
    world.bindings.add(replace(binding, secret_id=other))
    world.clock.skip(2 * HOUR)
    # When
    result = world.sweep()
    # Then: the secret named after the binding backs nothing, so it goes
    assert result.removed == (binding.binding_id,)
    assert world.scheduled(binding.secret_id) == RECOVERY_DAYS
    assert world.scheduled(other) is None
    assert result.kept == {"unrecognised": 1}


def test_a_binding_of_another_tenant_does_not_keep_a_secret(world):
    # Given a secret tagged with a tenant that has no binding of that id (a binding id is unique per tenant)
    binding = world.bound()
    world.secrets.secrets[binding.secret_id].tags["keyhealth:tenant"] = "999999999999:role/other"
    world.clock.skip(2 * HOUR)
    # When / Then
    assert world.sweep().removed == (binding.binding_id,)


@pytest.mark.parametrize(
    ("name", "tenant", "binding_id"),
    [
        ("{prefix}{id}", None, "{id}"),  # no tenant tag
        ("{prefix}{id}", TENANT, None),  # no binding id tag
        ("{prefix}{id}", TENANT, "bnd_not-a-binding-id"),  # a tag bind would never write
        ("{prefix}slack-webhook", TENANT, "{id}"),  # named otherwise than bind names secrets
        ("{prefix}{id}-copy", TENANT, "{id}"),
    ],
    ids=["no tenant", "no binding id", "invalid binding id", "another name", "a name that is not the id"],
)
def test_a_secret_not_made_by_bind_is_left_alone_and_logged(world, caplog, name, tenant, binding_id):
    # Given an old secret under the prefix that does not look like one bind made
    some_id = new_binding_id(START - 2 * HOUR)
    secret = world.secrets.stored(
        name.format(prefix=PREFIX, id=some_id),
        key(1),
        tenant=tenant,
        binding_id=binding_id.format(id=some_id) if binding_id else None,
        created_at=datetime.fromtimestamp(START - 2 * HOUR, UTC),
    )
    # When
    with caplog.at_level(logging.WARNING):
        result = world.sweep()
    # Then: nothing proves it is an orphan of ours
    assert result.kept == {"unrecognised": 1}
    assert world.scheduled(secret) is None
    assert world.alerts.published == []
    [line] = [r for r in caplog.records if r.getMessage() == "secret under the prefix not made by bind: left alone"]
    assert line.secret_name == name.format(prefix=PREFIX, id=some_id)


def test_a_secret_outside_the_prefix_is_not_even_listed(world):
    world.secrets.stored("keyhealth/other-stack/x", key(1), tenant=TENANT, binding_id=new_binding_id(START))
    assert world.sweep().checked == 0


def test_a_secret_without_a_creation_date_is_kept(world):
    orphan = world.orphan()
    world.secrets.secrets[orphan].created_at = None
    assert world.sweep().kept == {"young": 1}
    assert world.scheduled(orphan) is None


def test_an_orphan_an_unbind_scheduled_after_the_listing_is_not_counted(world):
    # Given an orphan candidate that is scheduled for deletion between the listing and the removal
    orphan = world.orphan()

    def unbound_meanwhile() -> None:
        world.secrets.secrets[orphan].scheduled_deletion = 7

    world.secrets.before["describe"] = unbound_meanwhile
    # When
    result = world.sweep()
    # Then: read again before removing, it is no orphan any more
    assert result.counts() == {"checked": 1, "removed": 0, "failed": 0}
    assert world.scheduled(orphan) == 7
    assert "schedule_deletion" not in world.secrets.calls
    assert world.alerts.published == []


def test_an_orphan_gone_meanwhile_is_not_counted(world):
    orphan = world.orphan()
    world.secrets.before["describe"] = lambda: world.secrets.secrets.pop(orphan)
    assert world.sweep().counts() == {"checked": 1, "removed": 0, "failed": 0}
    assert world.alerts.published == []


# --- storage errors -------------------------------------------------------------------------------------------


def fail_once() -> None:
    raise StorageAdapterError("fake:once", "ServiceUnavailable")


@pytest.mark.parametrize(
    ("fake", "operation"),
    [("bindings", "get"), ("secrets", "describe"), ("secrets", "schedule_deletion")],
)
def test_a_storage_error_on_one_secret_is_counted_and_the_sweep_goes_on(world, caplog, fake, operation):
    # Given three orphans, the first of which meets a storage error
    orphans = [world.orphan(n) for n in range(3)]
    ids = [world.secrets.secrets[o].tags["keyhealth:binding_id"] for o in orphans]
    getattr(world, fake).before[operation] = fail_once
    # When
    with caplog.at_level(logging.WARNING):
        result = world.sweep()
    # Then: the other two are removed, the first is counted as failed (the next sweep tries again)
    assert result.counts() == {"checked": 3, "removed": 2, "failed": 1}
    assert (result.removed, result.failed) == (tuple(ids[1:]), (ids[0],))
    assert world.scheduled(orphans[0]) is None
    assert [world.scheduled(o) for o in orphans[1:]] == [RECOVERY_DAYS, RECOVERY_DAYS]
    # And the one alert reports both
    [message] = world.messages()
    assert (message.count, message.failed) == (2, 1)
    assert (message.binding_ids, message.failed_binding_ids) == (tuple(ids[1:]), (ids[0],))
    [line] = [r for r in caplog.records if r.getMessage().startswith("orphan sweep could not")]
    assert (line.binding_id, line.operation, line.reason) == (ids[0], "fake:once", "ServiceUnavailable")


def test_failures_alone_are_alerted_too(world):
    # Given an orphan whose binding cannot be read at all
    world.orphan()
    world.bindings.fail("get")
    # When
    result = world.sweep()
    # Then: nothing removed, but ops hear that the sweep could not check it
    assert result.counts() == {"checked": 1, "removed": 0, "failed": 1}
    [message] = world.messages()
    assert (message.count, message.failed) == (0, 1)


def test_a_listing_that_fails_at_once_fails_the_sweep_without_an_alert(world):
    world.orphan()
    world.secrets.fail("list_stored")
    with pytest.raises(StorageUnavailable) as failed:
        world.sweep()
    assert failed.value.step == "secret_list"
    assert world.alerts.published == []  # nothing done: the function's error is the signal


def test_a_listing_that_fails_part_way_reports_what_was_done_then_fails(world):
    # Given two orphans, and a listing that breaks after the first
    first, second = world.orphan(1), world.orphan(2)
    listing = world.secrets.list_stored

    def breaks_after_one(prefix: str) -> Iterator[StoredCredential]:
        yield from islice(listing(prefix), 1)
        raise StorageAdapterError("fake:list_stored", "ThrottlingException")

    world.secrets.list_stored = breaks_after_one  # type: ignore[method-assign]
    # When
    with pytest.raises(StorageUnavailable) as failed:
        world.sweep()
    # Then: the first is removed and alerted, marked incomplete
    assert failed.value.step == "secret_list"
    assert world.scheduled(first) == RECOVERY_DAYS
    assert world.scheduled(second) is None
    [message] = world.messages()
    assert (message.count, message.checked, message.complete) == (1, 1, False)


def test_an_alert_that_cannot_be_published_fails_the_sweep_after_the_removals(world, caplog):
    orphan = world.orphan()
    world.alerts.fail("publish")
    with pytest.raises(StorageUnavailable) as failed:
        world.sweep()
    assert failed.value.step == "alert_publish"
    assert world.scheduled(orphan) == RECOVERY_DAYS  # done, and logged per secret
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == [
        "orphan secret scheduled for deletion",
        "orphan sweep alert not published",
    ]


def test_a_rerun_finds_nothing_more_to_do(world):
    world.orphan()
    assert world.sweep().counts()["removed"] == 1
    world.alerts.published.clear()
    assert world.sweep().counts() == {"checked": 1, "removed": 0, "failed": 0}
    assert world.alerts.published == []


# --- the alert ------------------------------------------------------------------------------------------------


def test_the_alert_lists_the_first_binding_ids_and_counts_them_all(world):
    orphans = [world.orphan(n) for n in range(MAX_ORPHAN_IDS + 5)]
    result = world.sweep()
    assert len(result.removed) == len(orphans)
    [message] = world.messages()
    assert message.count == MAX_ORPHAN_IDS + 5
    assert message.binding_ids == result.removed[:MAX_ORPHAN_IDS]


def test_no_credential_reaches_the_logs_or_the_alert(world, caplog):
    world.orphan(1)
    world.bound(2)
    world.clock.skip(2 * HOUR)
    with caplog.at_level(logging.DEBUG):
        world.sweep()
    [alert] = world.alerts.published
    for credentials in (key(1), key(2)):
        for text in (caplog.text, alert.text, alert.subject, str(alert.body)):
            assert credentials.api_secret.reveal() not in text
            assert credentials.api_key not in text


# --- the double fault it exists for ---------------------------------------------------------------------------


def test_the_secret_a_double_faulted_bind_leaves_is_named_by_its_log_line_and_removed_an_hour_later(world, caplog):
    # Given a bind whose binding write and compensating delete both fail
    world.bindings.fail("create")
    world.secrets.fail("delete_now")
    command = BindCommand(user_id="u-42", exchange=Exchange.BINANCE, credentials=key(1), scopes=(Scope.SPOT,))
    with caplog.at_level(logging.ERROR), pytest.raises(StorageUnavailable):
        bind_key(command, TENANT, world.services)
    world.bindings.heal()
    world.secrets.heal()
    [line] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert line.getMessage().startswith("orphan secret left after a failed bind")
    assert "OrphanSweeperFunction" in line.getMessage()  # it names the function that removes it
    # When the sweep runs within the hour, then after it
    assert world.sweep().counts()["removed"] == 0
    world.clock.skip(ORPHAN_MIN_AGE.total_seconds())
    result = world.sweep()
    # Then the secret the line named is scheduled for deletion
    assert result.removed == (line.binding_id,)
    assert world.scheduled(line.secret_id) == RECOVERY_DAYS
