"""The audit use cases' world of in-memory fakes (tests/support/fakes.py): a fake clock, rate
budget, circuit, run store, bindings, secrets, alerts and one fake checker per exchange, with a
run "run-1" of 100 tasks started. The `world` fixture (conftest.py) builds one per test."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from keyhealth.audit.model import AuditTask
from keyhealth.audit.usecases import AuditDeps, BatchOutcome, audit_batch
from keyhealth.bindings.model import Binding
from keyhealth.bindings.ports import Services
from keyhealth.domain.credentials import Credentials, KeyType, Secret
from keyhealth.domain.exchange import CheckResult
from keyhealth.domain.findings import make_finding
from keyhealth.domain.model import FindingCode, Report, Scope, Status
from keyhealth.exchanges import binance
from keyhealth.exchanges.registry import RATE_PLANS as PLANS
from keyhealth.exchanges.registry import Exchange, spec
from tests.support.clock import FakeClock, RecordingSleep
from tests.support.fakes import FakeAlerts, FakeBindings, FakeBudget, FakeChecker, FakeCircuit, FakeRuns, FakeSecrets

C = FindingCode
TENANT = "123456789012:role/platform"
EGRESS = ("203.0.113.10",)
START = 1_700_000_000.0
SAPI = f"sapi:{binance.API_RESTRICTIONS_PATH}"
CREDENTIALS = Credentials(api_key="k" * 64, api_secret=Secret("s" * 64))


@dataclass
class World:
    clock: FakeClock
    budget: FakeBudget
    circuit: FakeCircuit
    runs: FakeRuns
    bindings: FakeBindings
    secrets: FakeSecrets
    alerts: FakeAlerts
    adapters: dict[Exchange, FakeChecker]
    deps: AuditDeps
    sleep: RecordingSleep
    tasks: list[tuple[str, AuditTask]] = field(default_factory=list)

    def answer(self, exchange: Exchange, *results: CheckResult) -> FakeChecker:
        self.adapters[exchange].results = list(results)
        return self.adapters[exchange]

    def bind(self, exchange: Exchange, binding_id: str, status: Status = Status.HEALTHY, **changes: Any) -> Binding:
        binding = make_binding(exchange, binding_id, status, self.clock.datetime(), **changes)
        self.secrets.add(binding.secret_id, CREDENTIALS)
        return self.bindings.add(binding)

    def task(self, binding: Binding | str, run_id: str = "run-1", exchange: Exchange = Exchange.BINANCE):
        binding_id = binding if isinstance(binding, str) else binding.binding_id
        exchange = exchange if isinstance(binding, str) else binding.exchange
        return AuditTask(run_id, exchange, TENANT, binding_id)

    def start(self, run_id: str, total: int) -> None:
        self.runs.start(run_id, self.clock.datetime())
        self.runs.dispatched(run_id, total)


def make_binding(exchange: Exchange, binding_id: str, status: Status, now: datetime, **changes: Any) -> Binding:
    binding = Binding(
        binding_id=binding_id,
        tenant=TENANT,
        user_id="u-42",
        exchange=exchange,
        label=None,
        key_type=KeyType.HMAC,
        api_key_masked="kkkk...kkkk",
        api_key_hash=binding_id.rjust(64, "0"),  # one key per binding
        scopes=(Scope.SPOT,),
        status=status,
        created_at=now - timedelta(days=30),
        updated_at=now - timedelta(days=1),
        secret_id=f"keyhealth/{binding_id}",
    )
    return replace(binding, **changes)


def result(
    exchange: Exchange, *codes: FindingCode, retry_after: float | None = None, requests: tuple[str, ...] = ()
) -> CheckResult:
    report = Report(
        checked_at=datetime.fromtimestamp(START, UTC),
        egress_ip=EGRESS[0],
        findings=tuple(make_finding(code, spec(exchange).ui, egress_ips=EGRESS) for code in codes),
    )
    return CheckResult(report=report, retry_after=retry_after, requests=requests)


def build_world() -> World:
    clock = FakeClock(START)
    budget, circuit, runs = FakeBudget(), FakeCircuit(clock), FakeRuns()
    bindings, secrets, alerts = FakeBindings(), FakeSecrets(), FakeAlerts()
    healthy_requests = {
        Exchange.BINANCE: (binance.API_RESTRICTIONS_PATH,),
        Exchange.BITGET: ("/api/v2/spot/account/info",),
        Exchange.BINGX: ("/openApi/v1/account/apiPermissions",),
    }
    adapters = {e: FakeChecker(e, result(e, requests=healthy_requests[e])) for e in Exchange}
    services = Services(
        checkers=adapters,  # type: ignore[arg-type]
        bindings=bindings,  # type: ignore[arg-type]
        secrets=secrets,  # type: ignore[arg-type]
        alerts=alerts,
        secret_prefix="keyhealth/",
        egress_ips=EGRESS,
        now=clock.datetime,
    )
    sleep = RecordingSleep(clock)
    deps = AuditDeps(
        services=services,
        budget=budget,
        circuit=circuit,
        runs=runs,
        plans=PLANS,
        clock=clock,
        sleep=sleep,
        jitter=lambda: 0.5,
    )
    world = World(clock, budget, circuit, runs, bindings, secrets, alerts, adapters, deps, sleep)
    world.start("run-1", 100)
    return world


def run_batch(world: World, *tasks: AuditTask, concurrency: int = 10) -> BatchOutcome:
    return audit_batch([(f"m-{i}", task) for i, task in enumerate(tasks)], world.deps, concurrency=concurrency)
