"""`make bench-audit`: audit N bindings (default 10,000) over the three exchange simulators
and print, per exchange, the checks per second achieved against the rate-limit bound.

Three processes, as in production three systems: the exchange simulators (with 50-150 ms
latency and their real per-IP limits), moto in server mode (AWS), and this one, which runs
the real dispatcher use case and worker Lambda handlers in threads, pulling batches of 10
from the per-exchange queues as Lambda's SQS event source does.

Scaling, to keep it short: every rate-limit window, the simulators' and the audit budget's
alike, is multiplied by --window-scale (0.1: Binance's minute becomes 6 s) and so is every
limit, so each exchange's requests per second stay the real ones while the run spans many
windows. The audit spends --share of them (AUDIT_BUDGET_SHARE; 0.15 by default here so that
the three bounds together stay within what this 2-core machine's moto can serve). Bindings
are spread over the exchanges in proportion to their bounds, so all three finish together.

The bound of an exchange is (its scarcest pool's budget) / (that pool's cost of one check);
the ratio is achieved / bound. The last line is a JSON object with every figure.
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
def run_simulators(counts: dict[str, int], scale: float, latency: tuple[float, float], pipe: Any) -> None:
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
        sims["binance"].add_key(key, uid=100_000 + i, secret=secret, ip_whitelist=(EGRESS_IP,), enable_futures=True)
    for i in range(counts["bitget"]):
        key, secret = bench_key("bitget", i)
        account = sims["bitget"].add_account()
        sims["bitget"].add_key(
            account,
            api_key=key,
            secret=secret,
            passphrase="BenchPass1",
            ips=(EGRESS_IP,),
            authorities=bitget.FULL_TRADE,
        )
    for i in range(counts["bingx"]):
        key, secret = bench_key("bingx", i)
        sims["bingx"].add_key(api_key=key, secret=secret, permissions=(1, 2, 3), ip_addresses=(EGRESS_IP,))
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

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    threading.Event().wait()


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

    def pending(self) -> int:
        with self._lock:
            return sum(len(q) for q in self._visible.values()) + sum(len(q) for q in self._in_flight.values())


# ------------------------------------------------------------------------- the bench
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bindings", type=int, default=10_000)
    parser.add_argument("--share", type=float, default=0.15, help="AUDIT_BUDGET_SHARE")
    parser.add_argument("--window-scale", type=float, default=0.1)
    parser.add_argument("--latency", type=float, nargs=2, default=(0.05, 0.15), metavar=("MIN", "MAX"))
    parser.add_argument("--invocations", type=int, default=3, help="concurrent worker invocations per exchange")
    args = parser.parse_args(argv)

    from keyhealth.exchanges.registry import RATE_PLANS as PLANS
    from keyhealth.exchanges.registry import Exchange

    # The bound is what the configured budget allows: whole units per (scaled) window.
    bounds = {e.value: PLANS[e].checks_per_second(args.share, args.window_scale) for e in Exchange}
    total_bound = sum(bounds.values())
    counts = {name: round(args.bindings * bound / total_bound) for name, bound in bounds.items()}
    counts["binance"] += args.bindings - sum(counts.values())
    print(
        f"bench-audit: {args.bindings} bindings {counts}, share {args.share}, window scale {args.window_scale}, "
        f"latency {args.latency[0] * 1000:.0f}-{args.latency[1] * 1000:.0f} ms",
        flush=True,
    )

    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    sim_process = ctx.Process(
        target=run_simulators, args=(counts, args.window_scale, tuple(args.latency), child), daemon=True
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
        figures = _bench(args, counts, urls, bounds, parent, moto_port)
    finally:
        parent.send("stop")
        parent.recv()
        moto_process.terminate()
        sim_process.join(timeout=5)
        moto_process.join(timeout=5)
    print(json.dumps(figures))
    return 0 if all(e["ratio"] >= 0.9 and e["throttled"] == 0 for e in figures["exchanges"].values()) else 1


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
    from keyhealth.adapters.dynamodb_bindings import to_item
    from keyhealth.adapters.http_transport import HttpxTransport, new_http_client
    from keyhealth.audit.usecases import dispatch_audit
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
    queues = {e: sqs.create_queue(QueueName=f"bench-audit-{e.value}")["QueueUrl"] for e in Exchange}
    topic = sns.create_topic(Name="bench-alerts")["TopicArn"]

    settings = Settings.from_env(
        {
            "TABLE_NAME": TABLE,
            "SECRET_PREFIX": "keyhealth/bench/",
            "ALERT_TOPIC_ARN": topic,
            "EGRESS_IPS": EGRESS_IP,
            "BINANCE_BASE_URL": urls["binance"],
            "BINANCE_FUTURES_BASE_URL": urls["binance"],
            "BITGET_BASE_URL": urls["bitget"],
            "BINGX_BASE_URL": urls["bingx"],
            "AUDIT_BUDGET_SHARE": str(args.share),
            "AUDIT_WINDOW_SCALE": str(args.window_scale),
            "AUDIT_MAX_WAIT_SECONDS": "20",
            **{f"AUDIT_QUEUE_URL_{e.name}": url for e, url in queues.items()},
        }
    )
    checks: dict[str, list[float]] = defaultdict(list)
    lock = threading.Lock()

    class Timed:
        """Records when each check finished, per exchange (the figure the bench is about)."""

        def __init__(self, checker: Any) -> None:
            self._checker = checker
            self.spec = checker.spec

        def check(self, *a: Any, **kw: Any) -> Any:
            result = self._checker.check(*a, **kw)
            with lock:
                checks[self.spec.name].append(time.monotonic())
            return result

    class BenchContainer(wiring.Container):
        """The real composition, with every checker timed."""

        @functools.cached_property
        def checkers(self) -> Any:
            return {name: Timed(checker) for name, checker in super().checkers.items()}

    aws = {"dynamodb": dynamodb, "sns": sns, "secretsmanager": secretsmanager, "sqs": sqs}
    container = BenchContainer(
        wiring.Environment(
            settings=settings,
            aws_client=aws.__getitem__,
            exchange_transport=HttpxTransport(new_http_client(source_address=EGRESS_IP, max_connections=256)),
        )
    )
    wiring.use(container)  # the worker handler runs on the bench's composition
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
    for start in range(0, len(items), 25):
        dynamodb.batch_write_item(
            RequestItems={TABLE: [{"PutRequest": {"Item": i}} for i in items[start : start + 25]]}
        )
    print(f"seeded {len(items)} bindings and secrets in {time.monotonic() - started:.0f} s", flush=True)
    del items, jobs  # the seeding's own data must not hide or inflate the worker's memory figure
    gc.collect()

    run_id = "bench-" + datetime.now(UTC).strftime("%H%M%S")
    started = time.monotonic()
    state = dispatch_audit(run_id, container.bindings, container.task_queue, deps.runs, services.now, exchanges=NAMES)
    print(f"dispatched {state.tasks_total} tasks in {time.monotonic() - started:.1f} s", flush=True)

    stop = threading.Event()
    memory: list[tuple[int, float]] = []

    def invocation_loop(exchange: Exchange) -> None:
        url = queues[exchange]
        arn = f"arn:aws:sqs:{REGION}:000000000000:bench-audit-{exchange.value}"
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

    threads = [
        threading.Thread(target=invocation_loop, args=(exchange,), daemon=True)
        for exchange in Exchange
        for _ in range(args.invocations)
    ]
    audit_started = time.monotonic()
    for thread in threads:
        thread.start()
    total = sum(counts.values())
    next_report = audit_started + 10
    while True:
        time.sleep(0.5)
        run = deps.runs.load(run_id)
        done = sum(len(v) for v in checks.values())
        if time.monotonic() >= next_report:
            rss = current_rss_mib()
            memory.append((done, rss))
            print(
                f"  {time.monotonic() - audit_started:5.0f} s: {done}/{total} checked, worker RSS {rss:.0f} MiB",
                flush=True,
            )
            next_report += 10
        if run and run.finished:
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
    summary = json.loads(
        dynamodb.get_item(TableName=TABLE, Key={"pk": {"S": f"RUN#{run_id}"}, "sk": {"S": "RUN"}})["Item"]["summary"][
            "S"
        ]
    )
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
        "share": args.share,
        "window_scale": args.window_scale,
        "latency_ms": [args.latency[0] * 1000, args.latency[1] * 1000],
        "elapsed_seconds": round(elapsed, 1),
        "summary_counts": summary["counts"],
        "exchanges": {},
        "worker_rss_mib": [[n, round(m, 1)] for n, m in memory],
    }
    print()
    print(f"{'exchange':<9} {'checks':>7} {'checks/s':>9} {'bound/s':>8} {'ratio':>6} {'429':>5} {'418':>5}")
    for exchange in Exchange:
        times = sorted(checks[exchange.value])
        rate = whole_window_rate(times, window_of[exchange.value], epoch_offset)
        sim_stats = stats[exchange.value]
        too_many = sim_stats.get("http_429", 0)
        banned = sim_stats.get("http_418", 0)
        row = {
            "checks": len(times),
            "checks_per_second": round(rate, 2),
            "bound_per_second": round(bounds[exchange.value], 2),
            "ratio": round(rate / bounds[exchange.value], 3),
            "http_429": too_many,
            "http_418": banned,
            "throttled": too_many + banned,
        }
        figures["exchanges"][exchange.value] = row
        print(
            f"{exchange.value:<9} {row['checks']:>7} {row['checks_per_second']:>9.2f} {row['bound_per_second']:>8.2f} "
            f"{row['ratio']:>6.3f} {too_many:>5} {banned:>5}"
        )
    first, last = memory[0], memory[-1]
    print(f"\nworker process RSS: {first[1]:.0f} MiB after {first[0]} checks, {last[1]:.0f} MiB after {last[0]}")
    print(f"summary: {summary['counts']}")
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
