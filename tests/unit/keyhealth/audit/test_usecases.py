"""The audit worker's use cases with in-memory fakes of every port: what a check does with
the rate budget, the circuit, the binding and the run, for each answer an exchange can give."""

from __future__ import annotations

from dataclasses import replace

from keyhealth.audit.ports import CircuitState
from keyhealth.audit.usecases import audit_one
from keyhealth.domain.model import Scope, Status
from keyhealth.exchanges import binance
from keyhealth.exchanges.registry import RATE_PLANS as PLANS
from keyhealth.exchanges.registry import Exchange
from tests.unit.keyhealth.audit.support import (
    EGRESS,
    SAPI,
    START,
    TENANT,
    C,
    result,
    run_batch,
)


# ------------------------------------------------------------------------ a normal check
def test_a_check_reserves_its_cost_asks_lightly_and_stores_the_report(world):
    binding = world.bind(Exchange.BINANCE, "bnd_1", Status.HEALTHY)
    adapter = world.answer(Exchange.BINANCE, result(Exchange.BINANCE, C.IP_NOT_WHITELISTED))

    outcome = run_batch(world, world.task(binding))

    assert (outcome.done, outcome.retry, outcome.finalized) == (1, {}, [])
    assert world.budget.acquired == [(Exchange.BINANCE, {SAPI: 1}, START + world.deps.max_wait_seconds)]
    assert adapter.calls == [{"scopes": (Scope.SPOT,), "thorough": False, "identify_account": False}]
    assert world.secrets.reads == ["keyhealth/bnd_1"]
    stored = world.bindings.get(TENANT, "bnd_1")
    assert (stored.status, stored.version) == (Status.FAILING, 2)
    assert world.runs.counters("run-1") == {
        "checked.binance": 1,
        "status.binance.failing": 1,
        "newly_failing.binance.ip_not_whitelisted": 1,
    }
    [alert] = world.runs.held_alerts["run-1"].values()
    assert (alert.binding_id, alert.kind, alert.newly_failing) == ("bnd_1", "binding_status_changed", True)
    assert world.alerts.published == []  # held until the run ends
    assert world.budget.settled == []  # the check cost what was reserved
    assert world.circuit.trips == []


def test_a_batch_records_each_run_once_with_the_sum_of_its_tasks(world):
    world.start("run-2", 100)
    first = world.bind(Exchange.BINANCE, "bnd_1")
    second = world.bind(Exchange.BITGET, "bnd_2")
    third = world.bind(Exchange.BINGX, "bnd_3")

    outcome = run_batch(world, world.task(first), world.task(second), world.task(third, run_id="run-2"))

    assert outcome.done == 3
    assert sorted((run_id, sorted(ids)) for run_id, ids in world.runs.records) == [
        ("run-1", ["bnd_1", "bnd_2"]),
        ("run-2", ["bnd_3"]),
    ]
    assert world.runs.load("run-1").tasks_done == 2
    assert world.runs.counters("run-1")["status.bitget.healthy"] == 1
    assert world.runs.counters("run-2") == {"checked.bingx": 1, "status.bingx.healthy": 1}


# -------------------------------------------------------------------------- throttling
def test_a_rate_limited_answer_trips_the_circuit_and_returns_the_task_for_later(world):
    binding = world.bind(Exchange.BINANCE, "bnd_1")
    world.answer(Exchange.BINANCE, result(Exchange.BINANCE, C.RATE_LIMITED))
    plan = PLANS[Exchange.BINANCE]

    outcome = run_batch(world, world.task(binding))

    assert outcome.done == 0
    assert outcome.retry["m-0"] >= plan.default_backoff_seconds
    assert world.circuit.trips == [(Exchange.BINANCE, plan.default_backoff_seconds, "rate_limited")]
    assert world.bindings.get(TENANT, "bnd_1") == binding  # not counted unknown: it is checked again later
    assert world.runs.records == []


def test_a_rate_limited_answer_with_retry_after_waits_that_long(world):
    binding = world.bind(Exchange.BINANCE, "bnd_1")
    world.answer(Exchange.BINANCE, result(Exchange.BINANCE, C.RATE_LIMITED, retry_after=42.0))

    outcome = run_batch(world, world.task(binding))

    assert outcome.retry["m-0"] == 42.0
    assert world.circuit.trips == [(Exchange.BINANCE, 42.0, "rate_limited")]


def test_a_short_retry_after_never_brings_the_task_back_before_the_default_backoff(world):
    binding = world.bind(Exchange.BINGX, "bnd_1")
    world.answer(Exchange.BINGX, result(Exchange.BINGX, C.RATE_LIMITED, retry_after=1.0))
    outcome = run_batch(world, world.task(binding))
    assert outcome.retry["m-0"] == PLANS[Exchange.BINGX].default_backoff_seconds


def test_repeated_throttling_backs_off_longer_each_time_up_to_the_maximum(world):
    plan = PLANS[Exchange.BITGET]
    binding = world.bind(Exchange.BITGET, "bnd_1")
    world.answer(Exchange.BITGET, result(Exchange.BITGET, C.RATE_LIMITED))
    for _ in range(10):
        run_batch(world, world.task(binding))
        world.clock.now += 1000  # past every back-off: the circuit lets the next check through
    seconds = [s for _, s, _ in world.circuit.trips]
    assert seconds[:4] == [2.0, 4.0, 8.0, 16.0]
    assert max(seconds) == plan.max_backoff_seconds


def test_an_answer_after_throttling_closes_the_circuit(world):
    binding = world.bind(Exchange.BITGET, "bnd_1")
    world.circuit.states[Exchange.BITGET] = CircuitState(open_until=START - 1, code="rate_limited", strikes=3)
    outcome = run_batch(world, world.task(binding))
    assert outcome.done == 1
    assert world.circuit.closed == [Exchange.BITGET]


def test_an_open_rate_limited_circuit_requeues_without_asking_the_exchange(world):
    binding = world.bind(Exchange.BINANCE, "bnd_1")
    world.circuit.states[Exchange.BINANCE] = CircuitState(open_until=START + 30, code="rate_limited", strikes=1)

    outcome = run_batch(world, world.task(binding))

    assert outcome.retry == {"m-0": 30.0}
    assert world.adapters[Exchange.BINANCE].calls == []
    assert world.budget.acquired == []
    assert world.bindings.get(TENANT, "bnd_1") == binding
    assert world.runs.records == []


def test_a_long_rate_limited_circuit_records_unknown_rather_than_waiting(world):
    binding = world.bind(Exchange.BINANCE, "bnd_1")
    long = world.deps.requeue_limit_seconds + 1
    world.circuit.states[Exchange.BINANCE] = CircuitState(open_until=START + long, code="rate_limited", strikes=5)

    outcome = run_batch(world, world.task(binding))

    assert (outcome.done, outcome.retry) == (1, {})
    assert world.adapters[Exchange.BINANCE].calls == []
    assert world.bindings.get(TENANT, "bnd_1").last_report.codes == ["rate_limited"]


def test_an_open_egress_blocked_circuit_records_unknown_without_asking_the_exchange(world):
    binding = world.bind(Exchange.BINGX, "bnd_1", Status.DEGRADED, unknown_streak=1)
    world.circuit.states[Exchange.BINGX] = CircuitState(open_until=START + 60, code="egress_blocked", strikes=1)

    outcome = run_batch(world, world.task(binding))

    assert (outcome.done, outcome.retry) == (1, {})
    assert world.adapters[Exchange.BINGX].calls == []
    assert world.budget.acquired == []
    assert world.secrets.reads == []
    stored = world.bindings.get(TENANT, "bnd_1")
    assert (stored.status, stored.unknown_streak) == (Status.DEGRADED, 2)
    assert stored.last_report.status is Status.UNKNOWN
    assert stored.last_report.codes == ["egress_blocked"]
    assert stored.last_report.egress_ip == EGRESS[0]
    assert world.runs.counters("run-1")["transient.bingx.egress_blocked"] == 1


def test_an_egress_block_without_retry_after_opens_the_circuit_for_the_longest_backoff(world):
    binding = world.bind(Exchange.BITGET, "bnd_1")
    world.answer(Exchange.BITGET, result(Exchange.BITGET, C.EGRESS_BLOCKED))

    outcome = run_batch(world, world.task(binding))

    assert world.circuit.trips == [(Exchange.BITGET, PLANS[Exchange.BITGET].max_backoff_seconds, "egress_blocked")]
    assert outcome.done == 1  # recorded unknown: a block does not clear by waiting a little
    assert world.bindings.get(TENANT, "bnd_1").unknown_streak == 1


def test_a_refused_budget_requeues_without_asking_the_exchange(world):
    binding = world.bind(Exchange.BITGET, "bnd_1")
    world.budget.grant = False

    outcome = run_batch(world, world.task(binding))

    assert outcome.done == 0
    assert outcome.retry["m-0"] > 0
    assert world.adapters[Exchange.BITGET].calls == []
    assert world.bindings.get(TENANT, "bnd_1") == binding
    assert world.runs.records == []


# ---------------------------------------------------------------------- extra weight
def test_a_clock_resync_settles_the_weight_beyond_the_reservation(world):
    binding = world.bind(Exchange.BINANCE, "bnd_1")
    resync = (binance.API_RESTRICTIONS_PATH, binance.SERVER_TIME_PATH, binance.API_RESTRICTIONS_PATH)
    world.answer(Exchange.BINANCE, result(Exchange.BINANCE, requests=resync))

    run_batch(world, world.task(binding))

    assert world.budget.settled == [(Exchange.BINANCE, {SAPI: 1, "api": 1})]


def test_a_bitget_unified_account_settles_its_second_request(world):
    binding = world.bind(Exchange.BITGET, "bnd_1")
    world.answer(
        Exchange.BITGET, result(Exchange.BITGET, requests=("/api/v2/spot/account/info", "/api/v3/account/info"))
    )
    run_batch(world, world.task(binding))
    assert world.budget.settled == [(Exchange.BITGET, {"ip_requests": 1})]


def test_a_check_that_spent_less_than_reserved_settles_nothing(world):
    binding = world.bind(Exchange.BINANCE, "bnd_1")
    world.answer(Exchange.BINANCE, result(Exchange.BINANCE, C.TIMEOUT, requests=()))
    run_batch(world, world.task(binding))
    assert world.budget.settled == []


# ------------------------------------------------------------------- bindings and runs
def test_audit_one_returns_the_assessment_it_stored(world):
    binding = world.bind(Exchange.BITGET, "bnd_1", Status.DEGRADED)

    assessment = audit_one(world.task(binding), world.deps)

    assert assessment.binding.status is Status.HEALTHY
    assert world.bindings.get(TENANT, "bnd_1") == replace(assessment.binding, version=2)
    assert [h.kind for h in assessment.held] == ["binding_status_changed"]
    assert audit_one(world.task("bnd_gone", exchange=Exchange.BITGET), world.deps) is None


def test_a_deleted_binding_counts_as_done_without_an_assessment(world):
    outcome = run_batch(world, world.task("bnd_gone"))

    assert (outcome.done, outcome.retry) == (1, {})
    assert world.runs.records == [("run-1", ["bnd_gone"])]
    assert world.runs.load("run-1").tasks_done == 1
    assert world.runs.counters("run-1") == {}
    assert world.runs.held_alerts["run-1"] == {}
    assert world.adapters[Exchange.BINANCE].calls == []
    assert world.budget.acquired == []


def test_a_binding_changed_meanwhile_is_read_again_and_assessed_from_its_new_state(world):
    binding = world.bind(Exchange.BINANCE, "bnd_1", Status.HEALTHY)
    world.bindings.conflicts_left = 1
    world.answer(Exchange.BINANCE, result(Exchange.BINANCE, C.INVALID_API_KEY))

    outcome = run_batch(world, world.task(binding))

    assert outcome.done == 1
    stored = world.bindings.get(TENANT, "bnd_1")
    assert (stored.status, stored.version) == (Status.FAILING, 3)
    assert len(world.runs.held_alerts["run-1"]) == 1


def test_a_storage_failure_returns_the_task_for_retry(world):
    binding = world.bind(Exchange.BINANCE, "bnd_1")
    world.bindings.fail("save")
    outcome = run_batch(world, world.task(binding))
    assert (outcome.done, list(outcome.retry)) == (0, ["m-0"])
    assert world.runs.records == []


def test_the_last_batch_of_a_complete_run_finalizes_it_exactly_once(world):
    world.start("run-2", 3)
    bindings = [world.bind(Exchange.BITGET, f"bnd_{i}") for i in range(3)]
    world.answer(Exchange.BITGET, result(Exchange.BITGET, C.INVALID_PASSPHRASE))

    first = run_batch(world, *(world.task(b, run_id="run-2") for b in bindings[:2]))
    assert first.finalized == []
    assert world.alerts.published == []

    last = run_batch(world, world.task(bindings[2], run_id="run-2"))
    [summary] = last.finalized
    assert summary["run_id"] == "run-2"
    assert summary["counts"]["failing"] == 3
    assert summary["newly_failing_count"] == 3
    assert [i["code"] for i in summary["incidents"]] == ["invalid_passphrase"]  # 3 of 3: folded
    assert world.alerts.types() == ["incident", "audit_summary"]
    assert world.runs.finished["run-2"] == summary

    redelivered = run_batch(world, world.task(bindings[2], run_id="run-2"))
    assert redelivered.finalized == []
    assert world.alerts.types() == ["incident", "audit_summary"]


def test_a_run_with_a_task_still_waiting_is_not_finalized(world):
    world.start("run-2", 2)
    first, second = world.bind(Exchange.BINANCE, "bnd_1"), world.bind(Exchange.BITGET, "bnd_2")
    world.budget.grant = False
    outcome = run_batch(world, world.task(first, run_id="run-2"))
    assert list(outcome.retry) == ["m-0"]
    world.budget.grant = True
    outcome = run_batch(world, world.task(second, run_id="run-2"))
    assert outcome.finalized == []
    assert world.runs.load("run-2").tasks_done == 1
