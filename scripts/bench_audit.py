"""`make bench-audit`: audit N bindings (default 10,000) over the three exchange simulators
and print, per exchange, the checks per second achieved against the rate-limit bound.

Three processes, as in production three systems: the exchange simulators (with 50-150 ms
latency and their real per-IP limits), moto in server mode (AWS), and this one, which runs
the real dispatcher use case and worker Lambda handlers in threads, pulling batches of 10
from the per-exchange queues as Lambda's SQS event source does.

Scaling, to keep it short: every rate-limit window, the simulators' and the audit budget's
alike, is multiplied by --window-scale (0.2: Binance's minute becomes 12 s) and so is every
limit, so each exchange's requests per second stay the real ones while the run spans many
windows. The audit spends --share of them (AUDIT_BUDGET_SHARE; 0.05 by default here, per IP
divided by --egress-ips, so that the three bounds together, ~16.5 checks/s, stay within what
this 2-core machine's moto serves, ~23/s). Bindings are spread over the exchanges in proportion
to their bounds, so all three finish together.

The bound of an exchange is (its scarcest pool's budget) / (that pool's cost of one check);
the ratio is achieved / bound. The last line is a JSON object with every figure.

`--egress-ips N` (1 to 4) runs one worker per egress address (127.0.0.2, .3, ...), each with its own
queues, its own rate budget and an HTTP client bound to its address, as the deployed stack runs one
worker per NAT gateway: the simulators see N distinct peers, each with its own per-IP limits. The
share is per IP (default 0.15 / N, so that the aggregate stays what this machine serves). `--mode
rolling` dispatches 24 hourly ticks (the clock keyhealth reads jumps an hour per tick; budgets and
windows keep real time), each as soon as the queues run low, so the ticks' slots keep the workers
busy; the run ends when every tick's run has finished.
"""

from __future__ import annotations

import argparse
import collections
import functools
import gc
import hashlib
import itertools
import json
import multiprocessing
import os
import resource
import socket
import sys
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "layers" / "shared")]

EGRESS_IP = "127.0.0.2"
EGRESS_SOURCES = ("127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5")
PRODUCTION_SHARE = 0.5  # AUDIT_BUDGET_SHARE's default: the projection of a full pass uses it
LOOKAHEAD_SECONDS = 20.0  # rolling: the next tick is dispatched while this much work is still queued
REGION = "eu-west-1"
TABLE = "bench-bindings"
TENANT = "000000000000:role/bench"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def bench_key(exchange: str, index: int) -> tuple[str, str]:
    """The deterministic key and secret of bench binding `index` (both processes derive them)."""
    digest = hashlib.sha256(f"bench/{exchange}/{index}".encode()).hexdigest()
    secret = hashlib.sha256(f"bench-secret/{exchange}/{index}".encode()).hexdigest()
    if exchange == "bitget":
        return "bg_" + digest[:32], secret
    return digest, secret


# ------------------------------------------------------------------ simulator process
def run_simulators(
    counts: dict[str, int], scale: float, latency: tuple[float, float], pipe: Any, egress: tuple[str, ...]
) -> None:
    from simulators import binance, bingx, bitget
    from simulators.base import SimulatorServer

    sims = {
        "binance": binance.BinanceSimulator(
            latency=latency,
            window_scale=scale,
            limits={pool: max(1, int(limit * scale)) for pool, limit in binance.DEFAULT_LIMITS.items()},
        ),
        "bitget": bitget.BitgetSimulator(
            latency=latency, window_scale=scale, ip_requests_per_minute=max(1, int(6000 * scale))
        ),
        "bingx": bingx.BingXSimulator(
            latency=latency,
            window_scale=scale,
            account_group_limit=max(1, int(2000 * scale)),
            interface_limit=max(1, int(300 * scale)),
        ),
    }
    for i in range(counts["binance"]):
        key, secret = bench_key("binance", i)
        sims["binance"].add_key(key, uid=100_000 + i, secret=secret, ip_whitelist=egress, enable_futures=True)
    for i in range(counts["bitget"]):
        key, secret = bench_key("bitget", i)
        account = sims["bitget"].add_account()
        sims["bitget"].add_key(
            account,
            api_key=key,
            secret=secret,
            passphrase="BenchPass1",
            ips=egress,
            authorities=bitget.FULL_TRADE,
        )
    for i in range(counts["bingx"]):
        key, secret = bench_key("bingx", i)
        sims["bingx"].add_key(api_key=key, secret=secret, permissions=(1, 2, 3), ip_addresses=egress)
    servers = {name: SimulatorServer(sim).start() for name, sim in sims.items()}
    pipe.send({name: server.url for name, server in servers.items()})
    while True:
        command = pipe.recv()
        if command == "stats":
            pipe.send({name: dict(sim.stats) for name, sim in sims.items()})
        elif command == "stop":
            for server in servers.values():
                server.stop()
            pipe.send("stopped")
            return


def run_moto(port: int) -> None:
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # a log line per request costs moto's CPU
    _roll_back_only_the_items_a_transaction_touches()

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    threading.Event().wait()


def _roll_back_only_the_items_a_transaction_touches() -> None:
    """moto 5.2 keeps a rollback copy for TransactWriteItems by deep-copying the whole table once per *item* of
    the transaction (moto/dynamodb/models/__init__.py, transact_write_items): a record of 10 audit tasks (1 + 10
    markers + held alerts) copies the table 11 to 41 times, and with thousands of bindings the benchmark measured
    moto's copying (2 checks/s), not the audit. Here the rollback keeps a copy of the items the transaction
    touches instead, and puts them back when it is cancelled: the same all-or-nothing outcome. moto's own
    "copy" is then the table itself (its rollback reassigns it: a no-op). The benchmark's moto process only; the
    tests use moto as it is."""
    import copy

    from moto.dynamodb import models
    from moto.dynamodb.models.dynamo_type import DynamoType

    class _NoTableCopy:
        def __getattr__(self, name: str) -> Any:
            return getattr(copy, name)

        @staticmethod
        def deepcopy(value: Any, memo: Any = None) -> Any:
            return value if isinstance(value, models.Table) else copy.deepcopy(value, memo)

    original = models.DynamoDBBackend.transact_write_items

    def transact_write_items(self: Any, transact_items: Any) -> Any:
        touched = []
        for entry in transact_items:
            _, op = next(iter(entry.items()))
            table = self.tables.get(op.get("TableName"))
            if table is None:
                continue
            source = op.get("Key") or op.get("Item") or {}
            names = [table.hash_key_attr] + ([table.range_key_attr] if table.range_key_attr else [])
            if not all(name in source for name in names):
                continue
            hash_key = DynamoType(source[table.hash_key_attr])
            range_key = DynamoType(source[table.range_key_attr]) if table.range_key_attr else None
            touched.append((table, hash_key, range_key, copy.deepcopy(table.get_item(hash_key, range_key))))
        try:
            return original(self, transact_items)
        except Exception:
            for table, hash_key, range_key, before in reversed(touched):
                if before is None:
                    if table.get_item(hash_key, range_key) is not None:
                        table.delete_item(hash_key, range_key)
                elif range_key is not None:
                    table.items[hash_key][range_key] = before
                else:
                    table.items[hash_key] = before
            raise

    models.copy = _NoTableCopy()  # type: ignore[assignment]
    models.DynamoDBBackend.transact_write_items = transact_write_items  # type: ignore[method-assign]


# ------------------------------------------------------------------- an SQS stand-in
class InMemorySqs:
    """The subset of SQS the audit uses, with its semantics: batches of up to 10, a visibility
    timeout on received messages, redelivery of what is not deleted, visibility changes.

    moto's SQS scans every message of a queue on each receive, so at 10,000 queued tasks its
    polling costs more CPU than the whole audit: the benchmark would measure moto, not the
    audit. The tests use moto's SQS; this stand-in is for the benchmark only.
    """

    VISIBILITY = 30.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._visible: dict[str, collections.deque] = {}
        self._in_flight: dict[str, dict[str, tuple[float, dict[str, str]]]] = {}
        self._ids = itertools.count()

    def create_queue(self, QueueName: str) -> dict[str, str]:  # noqa: N803 - boto3's names
        url = f"https://sqs.{REGION}.amazonaws.com/000000000000/{QueueName}"
        self._visible[url] = collections.deque()
        self._in_flight[url] = {}
        return {"QueueUrl": url}

    def get_queue_url(self, QueueName: str, **_: Any) -> dict[str, str]:  # noqa: N803
        return {"QueueUrl": f"https://sqs.{REGION}.amazonaws.com/000000000000/{QueueName}"}

    def send_message_batch(self, QueueUrl: str, Entries: list[dict[str, str]]) -> dict[str, Any]:  # noqa: N803
        with self._lock:
            for entry in Entries:
                self._visible[QueueUrl].append({"MessageId": str(next(self._ids)), "Body": entry["MessageBody"]})
        return {"Successful": [{"Id": e["Id"]} for e in Entries], "Failed": []}

    def receive_message(self, QueueUrl: str, MaxNumberOfMessages: int = 1, **_: Any) -> dict[str, Any]:  # noqa: N803
        now = time.monotonic()
        with self._lock:
            in_flight = self._in_flight[QueueUrl]
            for handle, (until, message) in list(in_flight.items()):
                if until <= now:  # not deleted in time: visible again
                    del in_flight[handle]
                    self._visible[QueueUrl].append(message)
            batch = []
            while self._visible[QueueUrl] and len(batch) < MaxNumberOfMessages:
                message = self._visible[QueueUrl].popleft()
                handle = f"{message['MessageId']}-{next(self._ids)}"
                in_flight[handle] = (now + self.VISIBILITY, message)
                batch.append({**message, "ReceiptHandle": handle})
        return {"Messages": batch} if batch else {}

    def delete_message_batch(self, QueueUrl: str, Entries: list[dict[str, str]]) -> dict[str, Any]:  # noqa: N803
        with self._lock:
            for entry in Entries:
                self._in_flight[QueueUrl].pop(entry["ReceiptHandle"], None)
        return {"Successful": [{"Id": e["Id"]} for e in Entries], "Failed": []}

    def change_message_visibility(self, QueueUrl: str, ReceiptHandle: str, VisibilityTimeout: int) -> None:  # noqa: N803
        with self._lock:
            if ReceiptHandle in self._in_flight[QueueUrl]:
                _, message = self._in_flight[QueueUrl][ReceiptHandle]
                self._in_flight[QueueUrl][ReceiptHandle] = (time.monotonic() + VisibilityTimeout, message)

    def pending(self, urls: Any = None) -> int:
        with self._lock:
            chosen = self._visible if urls is None else urls
            return sum(len(self._visible[u]) + len(self._in_flight[u]) for u in chosen)


# ------------------------------------------------------------------------- the bench
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bindings", type=int, default=10_000)
    parser.add_argument("--share", type=float, default=None, help="AUDIT_BUDGET_SHARE, per IP (0.05 / N)")
    parser.add_argument("--egress-ips", type=int, default=1, choices=range(1, 5), help="workers, one per address")
    parser.add_argument("--mode", choices=("nightly", "rolling"), default="nightly")
    # 0.2: at the default shares every pool still gets whole units per window (BingX 300/10 s -> 60/2 s x 0.0167 = 1)
    parser.add_argument("--window-scale", type=float, default=0.2)
    parser.add_argument("--latency", type=float, nargs=2, default=(0.05, 0.15), metavar=("MIN", "MAX"))
    parser.add_argument(
        "--invocations", type=int, default=3, help="concurrent worker invocations per exchange, over all egress IPs"
    )
    args = parser.parse_args(argv)
    if args.share is None:  # the aggregate (~16.5 checks/s) within what moto serves here (~23/s, 2 cores)
        args.share = round(0.05 / args.egress_ips, 4)
    args.egress = EGRESS_SOURCES[: args.egress_ips]

    from keyhealth.exchanges.registry import RATE_PLANS as PLANS
    from keyhealth.exchanges.registry import Exchange

    # The bound is what the configured budget allows: whole units per (scaled) window, per IP; N IPs, N times it.
    per_ip_bounds = {e.value: PLANS[e].checks_per_second(args.share, args.window_scale) for e in Exchange}
    bounds = {name: bound * args.egress_ips for name, bound in per_ip_bounds.items()}
    total_bound = sum(bounds.values())
    counts = {name: round(args.bindings * bound / total_bound) for name, bound in bounds.items()}
    counts["binance"] += args.bindings - sum(counts.values())
    print(
        f"bench-audit: {args.bindings} bindings {counts}, share {args.share}, window scale {args.window_scale}, "
        f"latency {args.latency[0] * 1000:.0f}-{args.latency[1] * 1000:.0f} ms, {args.egress_ips} egress IP(s) "
        f"{', '.join(args.egress)}, {args.mode}",
        flush=True,
    )

    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    sim_process = ctx.Process(
        target=run_simulators, args=(counts, args.window_scale, tuple(args.latency), child, args.egress), daemon=True
    )
    sim_process.start()
    moto_port = _free_port()
    moto_process = ctx.Process(target=run_moto, args=(moto_port,), daemon=True)
    moto_process.start()
    urls = parent.recv()

    os.environ.update(
        {
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{moto_port}",
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_DEFAULT_REGION": REGION,
            "POWERTOOLS_LOG_LEVEL": "WARNING",
            "POWERTOOLS_METRICS_NAMESPACE": "keyhealth",
        }
    )
    try:
        figures = _bench(args, counts, urls, per_ip_bounds, parent, moto_port)
    finally:
        parent.send("stop")
        parent.recv()
        moto_process.terminate()
        sim_process.join(timeout=5)
        moto_process.join(timeout=5)
    print(json.dumps(figures))
    rows = [*figures["exchanges"].values(), *(r for e in figures["per_ip"].values() for r in e.values())]
    return (
        0
        if all(r["ratio"] >= 0.9 for r in rows) and all(e["throttled"] == 0 for e in figures["exchanges"].values())
        else 1
    )


def _wait_for(url: str, timeout: float = 20.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1.0)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer")


def _bench(args, counts, urls, bounds, sims_pipe, moto_port) -> dict[str, Any]:
    import boto3

    from functions.audit_worker import app as worker
    from keyhealth import wiring
    from keyhealth.adapters.dynamodb_bindings import SHARDS, shard_of, to_item
    from keyhealth.adapters.http_transport import HttpxTransport, new_http_client
    from keyhealth.audit.usecases import TICK_RUN_PREFIX, dispatch_audit, dispatch_tick
    from keyhealth.bindings.model import Binding
    from keyhealth.config import Settings
    from keyhealth.domain.credentials import Credentials, KeyType, Secret
    from keyhealth.domain.ids import new_binding_id
    from keyhealth.domain.model import Scope, Status, utc_now
    from keyhealth.exchanges.registry import NAMES, Exchange
    from keyhealth.exchanges.registry import RATE_PLANS as PLANS
    from local.sqs_event_source import deliver_batch
    from local.template import create_table

    _wait_for(f"http://127.0.0.1:{moto_port}/moto-api/")
    session = boto3.session.Session(region_name=REGION)
    pool_size = 64
    from botocore.config import Config

    config = Config(max_pool_connections=pool_size, retries={"mode": "standard", "max_attempts": 5})
    dynamodb, sns, secretsmanager = (session.client(s, config=config) for s in ("dynamodb", "sns", "secretsmanager"))
    sqs = InMemorySqs()
    create_table(dynamodb, "BindingsTable", TABLE)
    egress = args.egress
    queues = {
        (e, ip): sqs.create_queue(QueueName=f"bench-audit-{e.value}-{n}")["QueueUrl"]
        for e in Exchange
        for n, ip in enumerate(egress)
    }
    topic = sns.create_topic(Name="bench-alerts")["TopicArn"]

    base_env = {
        "TABLE_NAME": TABLE,
        "SECRET_PREFIX": "keyhealth/bench/",
        "ALERT_TOPIC_ARN": topic,
        "EGRESS_IPS": ",".join(egress),
        "BINANCE_BASE_URL": urls["binance"],
        "BINANCE_FUTURES_BASE_URL": urls["binance"],
        "BITGET_BASE_URL": urls["bitget"],
        "BINGX_BASE_URL": urls["bingx"],
        "AUDIT_BUDGET_SHARE": str(args.share),
        "AUDIT_WINDOW_SCALE": str(args.window_scale),
        "AUDIT_MAX_WAIT_SECONDS": "20",
        "AUDIT_MODE": args.mode,
        "AUDIT_TICK_MINUTES": "60",
        "AUDIT_INCIDENT_WINDOW_MINUTES": "60",
        **{f"AUDIT_QUEUE_URL_{e.name}": ",".join(queues[e, ip] for ip in egress) for e in Exchange},
    }
    checks: dict[tuple[str, str], list[float]] = defaultdict(list)  # (exchange, egress IP) -> when each check ended
    lock = threading.Lock()
    virtual = [0.0]  # rolling: seconds the clock keyhealth reads runs ahead of real time (an hour per tick)

    class Timed:
        """Records when each check finished, per exchange and egress IP (the figure the bench is about)."""

        def __init__(self, checker: Any, egress_ip: str) -> None:
            self._checker = checker
            self._egress_ip = egress_ip
            self.spec = checker.spec

        def check(self, *a: Any, **kw: Any) -> Any:
            result = self._checker.check(*a, **kw)
            with lock:
                checks[self.spec.name, self._egress_ip].append(time.monotonic())
            return result

    class BenchEnvironment(wiring.Environment):
        """Budgets, circuits and windows keep real time; the time keyhealth stamps and slots by may run ahead."""

        def now(self) -> datetime:
            return datetime.fromtimestamp(self.clock() + virtual[0], UTC).replace(microsecond=0)

    class BenchContainer(wiring.Container):
        """The real composition, with every checker timed."""

        @functools.cached_property
        def checkers(self) -> Any:
            ip = self.settings.audit_egress_ip or egress[0]
            return {name: Timed(checker, ip) for name, checker in super().checkers.items()}

    aws = {"dynamodb": dynamodb, "sns": sns, "secretsmanager": secretsmanager, "sqs": sqs}

    def composition(egress_ip: str = "") -> BenchContainer:
        """The dispatcher's (no egress IP of its own) or one worker's, leaving from `egress_ip`."""
        settings = Settings.from_env({**base_env, "AUDIT_EGRESS_IP": egress_ip})
        source = egress_ip or egress[0]
        return BenchContainer(
            BenchEnvironment(
                settings=settings,
                aws_client=aws.__getitem__,
                exchange_transport=HttpxTransport(new_http_client(source_address=source, max_connections=256)),
            )
        )

    container = composition()
    workers = {ip: composition(ip) for ip in egress}
    wiring.use(container)  # the dispatcher's; each worker thread runs on its own IP's (wiring.scoped)
    deps = container.audit
    services = deps.services

    # -- seed the bindings (secrets and items) straight into moto: binding through the API
    # would check every key live, which is not what this measures.
    started = time.monotonic()
    now = utc_now().replace(microsecond=0)
    secrets = services.secrets

    seed_lock = threading.Lock()

    def seed(exchange: str, index: int) -> dict[str, Any]:
        key, secret = bench_key(exchange, index)
        binding_id = new_binding_id()
        credentials = Credentials(
            key, Secret(secret), Secret("BenchPass1") if exchange == "bitget" else None, KeyType.HMAC
        )
        with seed_lock:  # moto's Secrets Manager is not safe for concurrent CreateSecret
            arn = secrets.create(f"keyhealth/bench/{binding_id}", credentials, tags={}, token=binding_id[4:] + "0" * 6)
        binding = Binding(
            binding_id=binding_id,
            tenant=TENANT,
            user_id=f"user-{index}",
            exchange=exchange,
            label=None,
            key_type=KeyType.HMAC,
            api_key_masked=credentials.masked_api_key,
            api_key_hash=binding_id,
            scopes=(Scope.SPOT, Scope.FUTURES),
            status=Status.HEALTHY,
            created_at=now,
            updated_at=now,
            secret_id=arn,
        )
        return to_item(binding)

    jobs = [(exchange, i) for exchange, n in counts.items() for i in range(n)]
    with ThreadPoolExecutor(16) as pool:
        items = list(pool.map(lambda job: seed(*job), jobs))
    seeded: dict[tuple[str, int], list[tuple[str, str]]] = defaultdict(list)
    for item in items:
        binding_id = item["binding_id"]["S"]
        seeded[item["exchange"]["S"], shard_of(binding_id)].append((TENANT, binding_id))

    class SeededSource:
        """Rolling: the ByExchange index as the bench seeded it, read from memory. moto answers a GSI Query by
        scanning the whole table, so 48 partition reads per tick (24 ticks, a table growing with every run's
        markers) would measure moto; DynamoDB answers it from the index (docs/audit.md: ~130 Query calls a
        tick at 1,000,000 bindings). The ticks' claims, runs, tasks and finalisation are the real ones."""

        shards = SHARDS

        def iter_exchange(self, exchange: str, shard: int) -> Any:
            return iter(sorted(seeded.get((exchange, shard), []), key=lambda pair: pair[1]))

    for start in range(0, len(items), 25):
        dynamodb.batch_write_item(
            RequestItems={TABLE: [{"PutRequest": {"Item": i}} for i in items[start : start + 25]]}
        )
    print(f"seeded {len(items)} bindings and secrets in {time.monotonic() - started:.0f} s", flush=True)
    del items, jobs  # the seeding's own data must not hide or inflate the worker's memory figure
    gc.collect()

    spread = container.settings.audit_spread_ips
    run_ids: list[str] = []
    ticks_left = 24 if args.mode == "rolling" else 0
    if args.mode == "rolling":
        rolling = deps.rolling
        assert rolling is not None
        start = services.now()  # the day's ticks follow: each dispatches one hourly slot
        assert rolling.ticks.claim(f"{TICK_RUN_PREFIX}start", None, now=start, lease_seconds=0.0)
        rolling.ticks.advance(f"{TICK_RUN_PREFIX}start", start)
    else:
        run_id = "bench-" + datetime.now(UTC).strftime("%H%M%S")
        started = time.monotonic()
        state = dispatch_audit(
            run_id,
            container.bindings,
            container.task_queue,
            deps.runs,
            services.now,
            exchanges=NAMES,
            egress_ips=spread,
        )
        run_ids.append(run_id)
        print(f"dispatched {state.tasks_total} tasks in {time.monotonic() - started:.1f} s", flush=True)

    def next_tick() -> None:
        """Rolling: the clock keyhealth reads moves an hour on and the dispatcher runs that tick."""
        nonlocal ticks_left
        virtual[0] += 3600.0
        ticks_left -= 1
        run_id = f"{TICK_RUN_PREFIX}{24 - ticks_left:02d}"
        outcome = dispatch_tick(run_id, SeededSource(), container.task_queue, deps, exchanges=NAMES, egress_ips=spread)
        if outcome.state is not None:
            run_ids.append(run_id)

    def running_low() -> bool:
        """Some exchange has less than LOOKAHEAD_SECONDS of work queued (its bound over every IP): time for the
        next tick. A tick's dispatch reads the whole index (seconds on moto), so the next one starts well ahead."""
        return any(
            sqs.pending([queues[e, ip] for ip in egress]) < LOOKAHEAD_SECONDS * bounds[e.value] * len(egress)
            for e in Exchange
        )

    stop = threading.Event()
    memory: list[tuple[int, float]] = []

    def invocation_loop(exchange: Exchange, egress_ip: str) -> None:
        url = queues[exchange, egress_ip]
        arn = f"arn:aws:sqs:{REGION}:000000000000:bench-audit-{exchange.value}-{egress.index(egress_ip)}"
        with wiring.scoped(workers[egress_ip]):  # this IP's worker: its budget, circuit and source address
            while not stop.is_set():
                # Short polls and a client-side pause: moto's long polling spins inside its server, and
                # nine idle pollers would take the CPU the audit's own AWS calls need.
                messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
                if not messages:
                    stop.wait(0.25)
                    continue
                deliver_batch(
                    sqs, url, arn, messages, lambda event: worker.lambda_handler(event, _Context()), region=REGION
                )

    # As many pollers per exchange as with one IP, spread over the IPs (at least one each): moto serves the
    # audit's DynamoDB calls from one process, and more concurrent transactions only make it retry.
    per_ip = max(1, -(-args.invocations // len(egress)))
    threads = [
        threading.Thread(target=invocation_loop, args=(exchange, ip), daemon=True)
        for exchange in Exchange
        for ip in egress
        for _ in range(per_ip)
    ]
    audit_started = time.monotonic()
    for thread in threads:
        thread.start()
    total = sum(counts.values())
    next_report = audit_started + 10
    while True:
        if ticks_left and running_low():
            next_tick()
        time.sleep(0.5)
        states = [deps.runs.load(r) for r in run_ids]
        finished = not ticks_left and all(s is not None and s.finished for s in states)
        done = sum(len(v) for v in checks.values())
        if time.monotonic() >= next_report:
            rss = current_rss_mib()
            memory.append((done, rss))
            print(
                f"  {time.monotonic() - audit_started:5.0f} s: {done}/{total} checked, worker RSS {rss:.0f} MiB",
                flush=True,
            )
            next_report += 10
        if finished:
            break
        if time.monotonic() - audit_started > 3600:
            raise RuntimeError("the audit did not finish within an hour")
    stop.set()
    for thread in threads:
        thread.join(timeout=5)
    elapsed = time.monotonic() - audit_started
    memory.append((sum(len(v) for v in checks.values()), current_rss_mib()))

    sims_pipe.send("stats")
    stats = sims_pipe.recv()
    summary_counts: collections.Counter[str] = collections.Counter()
    for run_id in run_ids:  # one run, or one per tick
        item = dynamodb.get_item(TableName=TABLE, Key={"pk": {"S": f"RUN#{run_id}"}, "sk": {"S": "RUN"}})["Item"]
        summary_counts.update(json.loads(item["summary"]["S"])["counts"])
    # The budget is per window, aligned on the epoch as the exchanges' are: a run that starts
    # mid-window gets that window's whole budget. The rate is therefore measured over the whole
    # windows between the first and the last check (the partial ones at both ends are left out).
    epoch_offset = time.time() - time.monotonic()
    window_of = {}
    for exchange in Exchange:
        plan = PLANS[exchange]
        scarcest = min(
            plan.audit_check_cost().items(),
            key=lambda item: plan.pool(item[0]).limit / plan.pool(item[0]).window_seconds / item[1],
        )[0]
        window_of[exchange.value] = plan.pool(scarcest).window_seconds * args.window_scale
    figures: dict[str, Any] = {
        "bindings": total,
        "mode": args.mode,
        "ticks": len(run_ids) if args.mode == "rolling" else None,
        "egress_ips": list(egress),
        "share_per_ip": args.share,
        "window_scale": args.window_scale,
        "latency_ms": [args.latency[0] * 1000, args.latency[1] * 1000],
        "elapsed_seconds": round(elapsed, 1),
        "summary_counts": dict(summary_counts),
        "exchanges": {},
        "per_ip": {},
        "full_pass_hours_1m": {},
        "worker_rss_mib": [[n, round(m, 1)] for n, m in memory],
    }
    print()
    head = ("exchange", "egress", "checks", "checks/s", "bound/s", "ratio", "429", "418")
    print("{:<9} {:<10} {:>7} {:>9} {:>8} {:>6} {:>5} {:>5}".format(*head))
    for exchange in Exchange:
        name, window = exchange.value, window_of[exchange.value]
        per_ip: dict[str, dict[str, Any]] = {}
        for ip in egress:
            times = sorted(checks[name, ip])
            rate = whole_window_rate(times, window, epoch_offset)
            per_ip[ip] = {
                "checks": len(times),
                "checks_per_second": round(rate, 2),
                "bound_per_second": round(bounds[name], 2),
                "ratio": round(rate / bounds[name], 3),
            }
            print(f"{name:<9} {ip:<10} {len(times):>7} {rate:>9.2f} {bounds[name]:>8.2f} {rate / bounds[name]:>6.3f}")
        times = sorted(t for ip in egress for t in checks[name, ip])
        # The aggregate is the sum of the IPs' rates, each over its own whole windows: the bindings are split
        # over the IPs by a hash, so one IP's queue may run dry a little before another's, and a rate over the
        # union of their windows would count that tail (reported as `over_the_run`, for information).
        over_the_run = whole_window_rate(times, window, epoch_offset)
        rate = sum(r["checks_per_second"] for r in per_ip.values())
        bound = bounds[name] * len(egress)
        sim_stats = stats[name]
        too_many, banned = sim_stats.get("http_429", 0), sim_stats.get("http_418", 0)
        row = {
            "checks": len(times),
            "checks_per_second": round(rate, 2),
            "bound_per_second": round(bound, 2),
            "ratio": round(rate / bound, 3),
            "over_the_run_per_second": round(over_the_run, 2),
            "http_429": too_many,
            "http_418": banned,
            "throttled": too_many + banned,
        }
        figures["exchanges"][name] = row
        figures["per_ip"][name] = per_ip
        # The windows are scaled, the requests per second are real: at the production share each IP checks
        # (measured per-IP rate) x (0.5 / this share) keys a second.
        per_ip_rate = sum(r["checks_per_second"] for r in per_ip.values()) / len(per_ip) * PRODUCTION_SHARE / args.share
        figures["full_pass_hours_1m"][name] = round(1_000_000 / (per_ip_rate * len(egress)) / 3600, 2)
        print(
            f"{name:<9} {'all':<10} {row['checks']:>7} {row['checks_per_second']:>9.2f} "
            f"{row['bound_per_second']:>8.2f} {row['ratio']:>6.3f} {too_many:>5} {banned:>5}"
        )
    first, last = memory[0], memory[-1]
    print(f"\nworker process RSS: {first[1]:.0f} MiB after {first[0]} checks, {last[1]:.0f} MiB after {last[0]}")
    print(f"summary: {dict(summary_counts)}")
    print(
        f"a full pass over 1,000,000 bindings per exchange, {len(egress)} IP(s) at share {PRODUCTION_SHARE}: "
        + ", ".join(f"{n} {h} h" for n, h in figures["full_pass_hours_1m"].items())
    )
    return figures


def current_rss_mib() -> float:
    """The process's resident memory now (not its lifetime peak), from /proc."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 2**20


def whole_window_rate(times: list[float], window: float, epoch_offset: float) -> float:
    """Checks per second over the whole (epoch-aligned) windows between the first and last check."""
    if len(times) < 2:
        return 0.0
    first = (int((times[0] + epoch_offset) // window) + 1) * window - epoch_offset
    last = int((times[-1] + epoch_offset) // window) * window - epoch_offset
    if last - first < window:  # shorter than two windows: fall back to the whole span
        return (len(times) - 1) / (times[-1] - times[0])
    inside = sum(1 for t in times if first <= t < last)
    return inside / (last - first)


class _Context:
    function_name = "bench-audit-worker"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:eu-west-1:000000000000:function:bench-audit-worker"
    aws_request_id = "bench"

    @staticmethod
    def get_remaining_time_in_millis() -> int:
        return 120_000


if __name__ == "__main__":
    sys.exit(main())
