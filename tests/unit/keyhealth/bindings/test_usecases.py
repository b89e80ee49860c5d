"""The binding use cases (keyhealth.bindings.usecases) with in-memory fakes of every port.

The consistency rule under test: a binding is either fully present (secret and metadata agree)
or fully absent. Whatever a failed step half did is undone before the error reaches the caller,
and when the undo fails too, an ERROR log line says what ops must clean up.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from keyhealth.bindings.model import BindCommand, Binding, ListQuery, Outcome, RotateCommand, api_key_hash
from keyhealth.bindings.ports import Services
from keyhealth.bindings.usecases import (
    bind_key,
    list_bindings,
    load_binding,
    rotate_credentials,
    unbind,
    verify_binding,
)
from keyhealth.domain.credentials import Credentials, Secret
from keyhealth.domain.errors import (
    AlreadyBound,
    BindingNotFound,
    ConcurrentUpdate,
    ExchangeUnreachable,
    KeyUnusable,
    StorageUnavailable,
)
from keyhealth.domain.exchange import CheckResult
from keyhealth.domain.findings import make_finding
from keyhealth.domain.model import FindingCode, Report, Scope, Status
from keyhealth.exchanges.registry import Exchange, spec
from tests.support.clock import FakeClock
from tests.support.fakes import FakeAlerts, FakeBindings, FakeChecker, FakeSecrets

C = FindingCode
TENANT = "123456789012:role/platform"
OTHER_TENANT = "210987654321:role/other-platform"
EGRESS = ("203.0.113.10",)
START = 1_800_000_000.0
PREFIX = "keyhealth/test/"
OLD_KEY = Credentials(api_key="OLD0" * 16, api_secret=Secret("oldsecret" * 4))
NEW_KEY = Credentials(api_key="NEW0" * 16, api_secret=Secret("newsecret" * 4))


def result(exchange: str = Exchange.BINANCE, *codes: FindingCode, account_id: str | None = None) -> CheckResult:
    report = Report(
        checked_at=datetime.fromtimestamp(START, UTC),
        egress_ip=EGRESS[0],
        findings=tuple(make_finding(code, spec(exchange).ui, egress_ips=EGRESS) for code in codes),
    )
    return CheckResult(report=report, account_id=account_id)


@dataclass
class World:
    clock: FakeClock
    bindings: FakeBindings
    secrets: FakeSecrets
    alerts: FakeAlerts
    checkers: dict[str, FakeChecker]
    services: Services

    def answer(self, *results: CheckResult, exchange: str = Exchange.BINANCE) -> FakeChecker:
        """The exchange's next answers (the last one repeats)."""
        self.checkers[exchange].results = list(results)
        return self.checkers[exchange]

    def bound(self, credentials: Credentials = OLD_KEY, *, tenant: str = TENANT) -> Binding:
        """Given: a key bound through the use case, as a platform did it earlier."""
        outcome = bind_key(command(credentials), tenant, self.services)
        self.secrets.calls.clear()
        self.bindings.calls.clear()
        return outcome.binding

    def stored(self, binding: Binding) -> Binding | None:
        return self.bindings.items.get((binding.tenant, binding.binding_id))

    def stages(self, binding: Binding) -> dict[str, str]:
        return dict(self.secrets.secrets[binding.secret_id].stages)


def command(
    credentials: Credentials = OLD_KEY,
    *,
    exchange: str = Exchange.BINANCE,
    scopes: tuple[Scope, ...] = (Scope.SPOT,),
    trimmed_fields: tuple[str, ...] = (),
) -> BindCommand:
    return BindCommand(
        user_id="u-42",
        exchange=exchange,
        credentials=credentials,
        scopes=scopes,
        label="grid bot",
        trimmed_fields=trimmed_fields,
    )


@pytest.fixture
def world() -> World:
    clock = FakeClock(START)
    bindings, secrets, alerts = FakeBindings(), FakeSecrets(), FakeAlerts()
    checkers = {e.value: FakeChecker(e.value, result(e.value)) for e in Exchange}
    services = Services(
        checkers=checkers,  # type: ignore[arg-type]
        bindings=bindings,
        secrets=secrets,
        alerts=alerts,
        secret_prefix=PREFIX,
        egress_ips=EGRESS,
        now=clock.datetime,
        recovery_window_days=9,
    )
    return World(clock, bindings, secrets, alerts, checkers, services)


def errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.ERROR]


# -------------------------------------------------------------------------------- bind
def test_bind_checks_the_key_then_stores_its_secret_and_its_binding(world):
    # When
    outcome = bind_key(command(), TENANT, world.services)

    # Then
    binding = outcome.binding
    assert world.checkers[Exchange.BINANCE].calls == [
        {"scopes": (Scope.SPOT,), "thorough": True, "identify_account": True}
    ]
    [secret_id] = world.secrets.secrets
    stored_secret = world.secrets.secrets[secret_id]
    assert stored_secret.name == f"{PREFIX}{binding.binding_id}"
    assert stored_secret.tags == {"keyhealth:tenant": TENANT, "keyhealth:binding_id": binding.binding_id}
    assert world.secrets.current(secret_id) == OLD_KEY
    assert world.stored(binding) == binding
    assert (binding.secret_id, binding.status, binding.tenant) == (secret_id, Status.HEALTHY, TENANT)
    assert binding.api_key_hash == api_key_hash(Exchange.BINANCE, OLD_KEY.api_key)
    assert binding.created_at == world.clock.datetime()
    assert outcome.report == binding.last_report
    assert world.alerts.published == []  # a new binding has no previous status to change from


def test_bind_refuses_a_key_the_tenant_bound_already_without_asking_the_exchange(world):
    # Given
    first = world.bound()

    # When
    with pytest.raises(AlreadyBound) as refused:
        bind_key(command(), TENANT, world.services)

    # Then
    assert refused.value.binding_id == first.binding_id
    assert world.checkers[Exchange.BINANCE].calls[1:] == []
    assert list(world.secrets.secrets) == [first.secret_id]


def test_another_tenant_can_bind_the_same_key(world):
    world.bound(tenant=OTHER_TENANT)
    outcome = bind_key(command(), TENANT, world.services)
    assert outcome.binding.tenant == TENANT
    assert len(world.secrets.secrets) == 2


@pytest.mark.parametrize(("code", "raised"), [(C.INVALID_API_KEY, KeyUnusable), (C.TIMEOUT, ExchangeUnreachable)])
def test_bind_of_a_key_that_fails_or_cannot_be_checked_stores_nothing(world, code, raised):
    # Given
    world.answer(result(Exchange.BINANCE, code))

    # When
    with pytest.raises(raised) as refused:
        bind_key(command(), TENANT, world.services)

    # Then
    assert refused.value.result.report.codes == [code.value]
    assert world.secrets.calls == []
    assert world.bindings.items == {}


def test_bind_adds_whitespace_trimmed_in_front_of_the_exchange_findings(world):
    # Given: the API layer trimmed the api key; the exchange reports a warning
    world.answer(result(Exchange.BINANCE, C.WITHDRAW_ENABLED))

    # When
    outcome = bind_key(command(trimmed_fields=("api_key",)), TENANT, world.services)

    # Then
    assert outcome.report.codes == ["whitespace_trimmed", "withdraw_enabled"]
    assert "api_key" in outcome.report.findings[0].message  # names the trimmed field
    assert outcome.binding.status is Status.DEGRADED  # trimming is information, not a problem
    assert world.stored(outcome.binding).last_report.codes == ["whitespace_trimmed", "withdraw_enabled"]


def test_a_failing_key_is_refused_even_with_only_trimmed_whitespace_to_add(world):
    world.answer(result(Exchange.BINANCE, C.INVALID_SECRET))
    with pytest.raises(KeyUnusable) as refused:
        bind_key(command(trimmed_fields=("api_secret",)), TENANT, world.services)
    assert refused.value.result.report.codes == ["whitespace_trimmed", "invalid_secret"]
    assert world.secrets.secrets == {}


def test_bind_when_the_duplicate_lookup_fails_asks_nothing_and_stores_nothing(world):
    world.bindings.fail("find_by_api_key")
    with pytest.raises(StorageUnavailable) as failed:
        bind_key(command(), TENANT, world.services)
    assert failed.value.step == "metadata_read"
    assert world.checkers[Exchange.BINANCE].calls == []
    assert world.secrets.calls == []


def test_bind_when_the_secret_cannot_be_created_stores_no_binding(world):
    world.secrets.fail("create")
    with pytest.raises(StorageUnavailable) as failed:
        bind_key(command(), TENANT, world.services)
    assert failed.value.step == "secret_create"
    assert world.bindings.items == {}
    assert world.secrets.calls == ["create"]  # nothing to compensate


def test_bind_whose_metadata_write_fails_deletes_the_secret_it_created(world):
    # Given
    world.bindings.fail("create")

    # When
    with pytest.raises(StorageUnavailable) as failed:
        bind_key(command(), TENANT, world.services)

    # Then: fully absent
    assert failed.value.step == "metadata_write"
    assert world.secrets.calls == ["create", "delete_now"]
    assert world.secrets.secrets == {}
    assert world.bindings.items == {}


def test_bind_that_lost_a_race_to_a_concurrent_bind_deletes_its_secret_and_names_the_winner(world):
    # Given: another request binds the same key between our duplicate lookup and our write
    winner = world.bound()
    del world.bindings.items[(TENANT, winner.binding_id)]
    world.bindings.before["create"] = lambda: world.bindings.add(winner)

    # When
    with pytest.raises(AlreadyBound) as refused:
        bind_key(command(), TENANT, world.services)

    # Then: ours is gone, theirs is untouched
    assert refused.value.binding_id == winner.binding_id
    assert world.secrets.calls == ["create", "delete_now"]
    assert list(world.secrets.secrets) == [winner.secret_id]
    assert list(world.bindings.items.values()) == [winner]


def test_bind_whose_write_and_compensating_delete_both_fail_logs_the_orphan_secret(world, caplog):
    # Given
    world.bindings.fail("create")
    world.secrets.fail("delete_now")

    # When
    with pytest.raises(StorageUnavailable) as failed:
        bind_key(command(), TENANT, world.services)

    # Then: the caller sees the storage failure; ops see which secret to remove
    assert failed.value.step == "metadata_write"
    [secret_id] = world.secrets.secrets
    [line] = errors(caplog)
    assert line.getMessage().startswith("orphan secret left after a failed bind")
    assert "OrphanSweeperFunction" in line.getMessage()  # it names the function that removes it
    assert line.secret_id == secret_id
    assert line.binding_id == secret_id.rsplit("/", 1)[-1]
    assert OLD_KEY.api_secret.reveal() not in caplog.text


def test_bind_reports_other_bindings_of_the_same_exchange_account(world):
    # Given: the same Binance account bound under another key
    world.answer(result(Exchange.BINANCE, account_id="uid-7"))
    sibling = world.bound(NEW_KEY)

    # When
    outcome = bind_key(command(), TENANT, world.services)

    # Then
    assert outcome.binding.account_id == "uid-7"
    assert outcome.same_account_bindings == (sibling.binding_id,)


def test_bind_succeeds_when_only_listing_the_same_account_fails(world, caplog):
    world.answer(result(Exchange.BINANCE, account_id="uid-7"))
    world.bindings.fail("bindings_of_account")

    outcome = bind_key(command(), TENANT, world.services)

    assert outcome.same_account_bindings == ()
    assert world.stored(outcome.binding) == outcome.binding
    assert "could not list bindings of the same account" in caplog.text
    assert errors(caplog) == []


# ------------------------------------------------------------------------------ rotate
def rotate(
    world: World, binding: Binding, credentials: Credentials = NEW_KEY, *, trimmed_fields: tuple[str, ...] = ()
) -> Outcome:
    return rotate_credentials(TENANT, binding.binding_id, RotateCommand(credentials, trimmed_fields), world.services)


def test_rotate_checks_the_staged_secret_promotes_it_and_updates_the_binding(world):
    # Given
    binding = world.bound()
    before = world.stages(binding)
    world.clock.now += 3600

    # When
    outcome = rotate(world, binding)

    # Then
    assert world.checkers[Exchange.BINANCE].checked[-1] == NEW_KEY  # what was read back from AWSPENDING
    assert world.secrets.current(binding.secret_id) == NEW_KEY
    stages = world.stages(binding)
    assert "AWSPENDING" not in stages  # the new current version needs no pending label
    assert stages["AWSPREVIOUS"] == before["AWSCURRENT"]
    saved = world.stored(binding)
    assert saved == outcome.binding
    assert saved.version == binding.version + 1
    assert saved.api_key_hash == api_key_hash(Exchange.BINANCE, NEW_KEY.api_key)
    assert saved.api_key_masked == NEW_KEY.masked_api_key
    assert saved.updated_at == world.clock.datetime()
    assert world.alerts.published == []  # healthy before and after


def test_rotate_checks_what_the_store_holds_not_what_was_sent(world):
    # Given: the staged version holds something else than the request (a store that lost a field)
    binding = world.bound()
    held = Credentials(api_key=NEW_KEY.api_key, api_secret=Secret("whatthestoreholds" * 2))

    def corrupt_the_pending_version() -> None:
        stored = world.secrets.secrets[binding.secret_id]
        stored.versions[stored.stages["AWSPENDING"]] = held

    world.secrets.before["read"] = corrupt_the_pending_version

    # When
    rotate(world, binding)

    # Then
    assert world.checkers[Exchange.BINANCE].checked[-1] == held


def test_rotate_to_a_key_bound_by_another_binding_stages_nothing(world):
    other = world.bound(NEW_KEY)
    binding = world.bound()

    with pytest.raises(AlreadyBound) as refused:
        rotate(world, binding)

    assert refused.value.binding_id == other.binding_id
    assert world.secrets.calls == []
    assert world.stored(binding) == binding


def test_rotate_to_the_same_key_is_allowed(world):
    binding = world.bound()
    outcome = rotate(world, binding, OLD_KEY)
    assert outcome.binding.api_key_hash == binding.api_key_hash
    assert "find_by_api_key" not in world.bindings.calls


@pytest.mark.parametrize(
    ("code", "raised"), [(C.INVALID_SECRET, KeyUnusable), (C.EXCHANGE_UNAVAILABLE, ExchangeUnreachable)]
)
def test_rotate_whose_check_fails_discards_the_pending_version_and_promotes_nothing(world, code, raised):
    # Given
    binding = world.bound()
    before = world.stages(binding)
    world.answer(result(Exchange.BINANCE, code))

    # When
    with pytest.raises(raised):
        rotate(world, binding)

    # Then: the old key is still the current one, and the binding is as it was
    assert "promote" not in world.secrets.calls
    assert world.secrets.calls[-1] == "discard_pending"
    assert world.stages(binding) == before
    assert world.secrets.current(binding.secret_id) == OLD_KEY
    assert world.stored(binding) == binding


def test_rotate_when_staging_fails_asks_nothing(world):
    binding = world.bound()
    world.secrets.fail("stage_pending")
    with pytest.raises(StorageUnavailable) as failed:
        rotate(world, binding)
    assert failed.value.step == "secret_stage"
    assert world.checkers[Exchange.BINANCE].checked == [OLD_KEY]  # only the bind's check
    assert world.stored(binding) == binding


@pytest.mark.parametrize("operation", ["current_version", "promote"])
def test_rotate_whose_promotion_fails_discards_the_pending_version(world, operation):
    # Given
    binding = world.bound()
    before = world.stages(binding)
    world.secrets.fail(operation)

    # When
    with pytest.raises(StorageUnavailable) as failed:
        rotate(world, binding)

    # Then
    assert failed.value.step == "secret_promote"
    assert world.secrets.calls[-1] == "discard_pending"
    assert world.stages(binding) == before
    assert world.secrets.current(binding.secret_id) == OLD_KEY
    assert world.stored(binding) == binding


def test_rotate_whose_metadata_write_fails_after_promotion_demotes_back_to_the_previous_version(world):
    # Given
    binding = world.bound()
    previous_version = world.stages(binding)["AWSCURRENT"]
    world.bindings.fail("save")

    # When
    with pytest.raises(StorageUnavailable) as failed:
        rotate(world, binding)

    # Then: fully as before the rotation
    assert failed.value.step == "metadata_write"
    assert world.secrets.calls[-2:] == ["promote", "demote"]
    assert world.stages(binding)["AWSCURRENT"] == previous_version
    assert world.secrets.current(binding.secret_id) == OLD_KEY
    assert world.stored(binding) == binding


def test_rotate_that_loses_a_race_to_another_update_demotes_and_says_so(world):
    binding = world.bound()
    world.bindings.conflicts_left = 1

    with pytest.raises(ConcurrentUpdate):
        rotate(world, binding)

    assert world.secrets.calls[-1] == "demote"
    assert world.secrets.current(binding.secret_id) == OLD_KEY


def test_rotate_whose_demotion_fails_too_logs_that_it_could_not_be_undone(world, caplog):
    # Given
    binding = world.bound()
    world.bindings.fail("save")
    world.secrets.fail("demote")

    # When
    with pytest.raises(StorageUnavailable) as failed:
        rotate(world, binding)

    # Then
    assert failed.value.step == "metadata_write"
    [line] = errors(caplog)
    assert line.getMessage() == "rotation could not be undone"
    assert line.binding_id == binding.binding_id
    assert NEW_KEY.api_secret.reveal() not in caplog.text


def test_rotate_that_changes_the_status_alerts_and_is_undone_if_the_alert_fails(world):
    # Given: the new key works but has withdrawals enabled (healthy -> degraded)
    binding = world.bound()
    world.answer(result(Exchange.BINANCE, C.WITHDRAW_ENABLED))
    world.alerts.fail("publish")

    # When
    with pytest.raises(StorageUnavailable) as failed:
        rotate(world, binding)

    # Then
    assert failed.value.step == "alert_publish"
    assert world.secrets.calls[-1] == "demote"
    assert world.secrets.current(binding.secret_id) == OLD_KEY
    assert world.stored(binding) == binding


def test_rotate_that_changes_the_status_publishes_one_alert(world):
    binding = world.bound()
    world.answer(result(Exchange.BINANCE, C.WITHDRAW_ENABLED))

    outcome = rotate(world, binding)

    assert outcome.binding.status is Status.DEGRADED
    [alert] = world.alerts.published
    assert (alert.body["type"], alert.body["binding_id"]) == ("binding_status_changed", binding.binding_id)
    assert (alert.body["previous_status"], alert.body["status"]) == ("healthy", "degraded")


def test_rotate_keeps_its_result_when_only_the_pending_label_cannot_be_removed(world, caplog):
    binding = world.bound()
    world.secrets.fail("discard_pending")

    outcome = rotate(world, binding)

    assert world.secrets.current(binding.secret_id) == NEW_KEY
    assert world.stored(binding) == outcome.binding
    assert "pending secret version left labelled" in caplog.text
    assert errors(caplog) == []


def test_rotate_adds_whitespace_trimmed_in_front(world):
    binding = world.bound()
    outcome = rotate(world, binding, trimmed_fields=("api_key",))
    assert outcome.report.codes == ["whitespace_trimmed"]
    assert outcome.binding.status is Status.HEALTHY


# ------------------------------------------------------------------------------ unbind
def test_unbind_schedules_the_secret_for_deletion_and_deletes_the_binding(world):
    binding = world.bound()

    unbind(TENANT, binding.binding_id, world.services)

    assert world.secrets.secrets[binding.secret_id].scheduled_deletion == 9  # the recovery window
    assert world.stored(binding) is None
    with pytest.raises(BindingNotFound):
        load_binding(TENANT, binding.binding_id, world.services)


def test_unbind_when_scheduling_the_deletion_fails_keeps_the_binding(world):
    binding = world.bound()
    world.secrets.fail("schedule_deletion")

    with pytest.raises(StorageUnavailable) as failed:
        unbind(TENANT, binding.binding_id, world.services)

    assert failed.value.step == "secret_delete"
    assert "delete" not in world.bindings.calls
    assert world.stored(binding) == binding


def test_unbind_whose_metadata_delete_fails_restores_the_secret(world):
    # Given
    binding = world.bound()
    world.bindings.fail("delete")

    # When
    with pytest.raises(StorageUnavailable) as failed:
        unbind(TENANT, binding.binding_id, world.services)

    # Then: fully present, so a retry is safe
    assert failed.value.step == "metadata_delete"
    assert world.secrets.calls == ["schedule_deletion", "restore"]
    assert world.secrets.secrets[binding.secret_id].scheduled_deletion is None
    assert world.stored(binding) == binding


def test_unbind_whose_restore_fails_too_logs_the_half_done_unbind(world, caplog):
    # Given
    binding = world.bound()
    world.bindings.fail("delete")
    world.secrets.fail("restore")

    # When
    with pytest.raises(StorageUnavailable) as failed:
        unbind(TENANT, binding.binding_id, world.services)

    # Then
    assert failed.value.step == "metadata_delete"
    [line] = errors(caplog)
    assert line.getMessage() == "unbind half done: secret scheduled, metadata kept"
    assert line.binding_id == binding.binding_id


def test_unbind_of_an_unknown_binding_touches_no_secret(world):
    with pytest.raises(BindingNotFound):
        unbind(TENANT, "bnd_01NOSUCHBINDING", world.services)
    assert world.secrets.calls == []


# ------------------------------------------------------------------------------ verify
def test_verify_without_a_status_change_stores_the_report_and_alerts_nobody(world):
    binding = world.bound()
    world.clock.now += 60

    outcome = verify_binding(TENANT, binding.binding_id, world.services)

    assert world.checkers[Exchange.BINANCE].calls[-1] == {
        "scopes": (Scope.SPOT,),
        "thorough": True,
        "identify_account": False,
    }
    assert world.checkers[Exchange.BINANCE].checked[-1] == OLD_KEY
    assert world.stored(binding) == outcome.binding
    assert (outcome.binding.version, outcome.binding.updated_at) == (2, world.clock.datetime())
    assert world.alerts.published == []


def test_verify_that_changes_the_status_publishes_one_alert_before_the_write(world):
    # Given
    binding = world.bound()
    world.answer(result(Exchange.BINANCE, C.IP_NOT_WHITELISTED))
    seen_at_save: list[int] = []
    world.bindings.before["save"] = lambda: seen_at_save.append(len(world.alerts.published))

    # When
    outcome = verify_binding(TENANT, binding.binding_id, world.services)

    # Then
    assert seen_at_save == [1]
    [alert] = world.alerts.published
    assert alert.body["type"] == "binding_status_changed"
    assert (alert.body["previous_status"], alert.body["status"]) == ("healthy", "failing")
    assert alert.attributes["severity"] == "critical"
    assert world.stored(binding).status is Status.FAILING
    assert outcome.report.codes == ["ip_not_whitelisted"]


def test_verify_whose_alert_fails_writes_nothing(world):
    # Given
    binding = world.bound()
    world.answer(result(Exchange.BINANCE, C.IP_NOT_WHITELISTED))
    world.alerts.fail("publish")

    # When
    with pytest.raises(StorageUnavailable) as failed:
        verify_binding(TENANT, binding.binding_id, world.services)

    # Then: the next verify detects the change again, so no alert is lost
    assert failed.value.step == "alert_publish"
    assert "save" not in world.bindings.calls
    assert world.stored(binding) == binding


def test_verify_whose_write_fails_after_the_alert_keeps_the_alert(world):
    binding = world.bound()
    world.answer(result(Exchange.BINANCE, C.IP_NOT_WHITELISTED))
    world.bindings.fail("save")

    with pytest.raises(StorageUnavailable) as failed:
        verify_binding(TENANT, binding.binding_id, world.services)

    assert failed.value.step == "metadata_write"
    assert len(world.alerts.published) == 1  # at worst repeated by a retry, never missed
    assert world.stored(binding) == binding


def test_verify_that_could_not_ask_the_exchange_keeps_the_status(world):
    binding = world.bound()
    world.answer(result(Exchange.BINANCE, C.TIMEOUT))

    outcome = verify_binding(TENANT, binding.binding_id, world.services)

    assert outcome.report.status is Status.UNKNOWN
    assert (outcome.binding.status, outcome.binding.unknown_streak) == (Status.HEALTHY, 1)
    assert world.alerts.published == []


def test_verify_records_the_exchange_account(world):
    binding = world.bound()
    world.answer(result(Exchange.BINANCE, account_id="uid-9"))
    outcome = verify_binding(TENANT, binding.binding_id, world.services)
    assert world.stored(binding).account_id == outcome.binding.account_id == "uid-9"


def test_verify_when_the_secret_cannot_be_read_asks_nothing(world):
    binding = world.bound()
    world.secrets.fail("read")

    with pytest.raises(StorageUnavailable) as failed:
        verify_binding(TENANT, binding.binding_id, world.services)

    assert failed.value.step == "secret_read"
    assert len(world.checkers[Exchange.BINANCE].calls) == 1  # the bind's check only


# ------------------------------------------------------------------------ load and list
def test_a_binding_is_found_only_by_its_own_tenant(world):
    binding = world.bound()
    assert load_binding(TENANT, binding.binding_id, world.services) == binding
    with pytest.raises(BindingNotFound):
        load_binding(OTHER_TENANT, binding.binding_id, world.services)


def test_a_failed_read_is_storage_unavailable(world):
    binding = world.bound()
    world.bindings.fail("get", "list")

    with pytest.raises(StorageUnavailable) as load_failed:
        load_binding(TENANT, binding.binding_id, world.services)
    with pytest.raises(StorageUnavailable) as list_failed:
        list_bindings(TENANT, ListQuery(), world.services)

    assert load_failed.value.step == list_failed.value.step == "metadata_read"


def test_list_returns_the_tenants_bindings_newest_first(world):
    first = world.bound()
    world.clock.now += 1
    second = world.bound(NEW_KEY)
    world.bound(tenant=OTHER_TENANT)

    page = list_bindings(TENANT, ListQuery(limit=1), world.services)
    rest = list_bindings(TENANT, ListQuery(limit=1, cursor=page.next_cursor), world.services)

    assert [b.binding_id for b in page.items] == [second.binding_id]
    assert ([b.binding_id for b in rest.items], rest.next_cursor) == ([first.binding_id], None)
