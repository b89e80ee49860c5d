"""`make cost`: the measured cost model of both credential stores (GitHub issue 11).

For each store (`CREDENTIAL_STORE=secretsmanager`, then `kms`) this builds a whole stack on moto
in-process (tables, keys, topic and queues from template.yaml), starts the three exchange
simulators, binds N keys through the real bind handler (API Gateway events), verifies, rotates
and audits them (the real dispatcher and worker handlers, fed as Lambda's SQS event source feeds
them), then unbinds them. A botocore hook on every AWS client counts the AWS API calls of the
operation under measurement, by service and operation (setup, seeding and the script's own
reads are not counted), with the DynamoDB request units each call consumes (computed from the
sizes of the items it reads and writes, by DynamoDB's rules) and the bytes each call sends and
receives; the exchange transport counts the exchange requests and their bytes; the handlers' log
output is counted, never shown. Wall-clock latency per operation is measured on moto (median, p95).

From those figures and one table of list prices (`PRICES`, each with its source) the monthly cost
is modelled at 1,000 / 100,000 / 1,000,000 bindings, with the usage assumptions in `ASSUMPTIONS`:
line items per store, the credential store's part apart, and the ratio of the kms store's
credential-store cost to Secrets Manager's at 1M. The last line printed is one JSON object with
every figure. The exit status is 1 when that ratio is above 1% (the issue's acceptance bound).

`--write-docs` also saves the run's JSON to docs/cost.json and renders docs/cost.md from it
(`render_markdown` is a pure function of the snapshot: tests/unit/test_cost_docs.py checks that
the page is what the snapshot renders to).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import logging
import math
import os
import statistics
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "layers" / "shared")]

DOCS_MD = ROOT / "docs" / "cost.md"
DOCS_JSON = ROOT / "docs" / "cost.json"

REGION = "eu-west-1"
EGRESS_IP = "127.0.0.2"  # the simulators see this loopback alias as our peer (the NAT's Elastic IP)
TABLE = "cost-bindings"
IDEMPOTENCY_TABLE = "cost-idempotency"
CREDENTIALS_TABLE = "cost-credentials"
STACK_NAME = "keyhealth-cost"
SECRET_PREFIX = "keyhealth/cost/"
PRINCIPAL = "arn:aws:sts::111111111111:assumed-role/platform-backend/cost"
STORES = ("secretsmanager", "kms")
SIZES = (1_000, 100_000, 1_000_000)
OPERATIONS = ("bind", "verify", "rotate", "unbind", "dispatch", "check")
EXCHANGES = ("binance", "bitget", "bingx")
MAX_RATIO = 0.01  # the acceptance bound: kms credential-store cost <= 1% of Secrets Manager's at 1M

# --------------------------------------------------------------------------- prices
PRICES_AS_OF = "2026-12-02"
PRICES_NOTE = (
    f"List prices for {REGION} (EU Ireland) as published on the AWS pricing pages, recorded {PRICES_AS_OF}; "
    "not verified live from the machine that ran this (it has no internet access). Free tiers are left out."
)


@dataclass(frozen=True)
class Price:
    usd: float
    unit: str
    source: str


PRICES: dict[str, Price] = {
    "secretsmanager_secret_month": Price(
        0.40, "per secret per month", "https://aws.amazon.com/secrets-manager/pricing/"
    ),
    "secretsmanager_api": Price(0.05 / 10_000, "per API call", "https://aws.amazon.com/secrets-manager/pricing/"),
    "kms_key_month": Price(1.00, "per customer managed key per month", "https://aws.amazon.com/kms/pricing/"),
    "kms_request": Price(0.03 / 10_000, "per request (symmetric)", "https://aws.amazon.com/kms/pricing/"),
    "dynamodb_write_unit": Price(
        0.705 / 1_000_000, "per write request unit (on-demand)", "https://aws.amazon.com/dynamodb/pricing/on-demand/"
    ),
    "dynamodb_read_unit": Price(
        0.141 / 1_000_000, "per read request unit (on-demand)", "https://aws.amazon.com/dynamodb/pricing/on-demand/"
    ),
    "dynamodb_storage_gb_month": Price(
        0.283, "per GB-month (Standard table class)", "https://aws.amazon.com/dynamodb/pricing/on-demand/"
    ),
    "dynamodb_pitr_gb_month": Price(
        0.224, "per GB-month (continuous backups)", "https://aws.amazon.com/dynamodb/pricing/on-demand/"
    ),
    "lambda_gb_second": Price(0.0000133334, "per GB-second (arm64)", "https://aws.amazon.com/lambda/pricing/"),
    "lambda_request": Price(0.20 / 1_000_000, "per invocation", "https://aws.amazon.com/lambda/pricing/"),
    "api_gateway_request": Price(
        3.50 / 1_000_000, "per REST API request (first 333M)", "https://aws.amazon.com/api-gateway/pricing/"
    ),
    "sqs_request": Price(0.40 / 1_000_000, "per standard queue request", "https://aws.amazon.com/sqs/pricing/"),
    "sns_publish": Price(0.50 / 1_000_000, "per publish", "https://aws.amazon.com/sns/pricing/"),
    "nat_gateway_hour": Price(0.048, "per NAT gateway hour", "https://aws.amazon.com/vpc/pricing/"),
    "nat_gateway_gb": Price(0.048, "per GB processed by a NAT gateway", "https://aws.amazon.com/vpc/pricing/"),
    "public_ipv4_hour": Price(
        0.005, "per public IPv4 address (Elastic IP) hour", "https://aws.amazon.com/vpc/pricing/"
    ),
    "data_transfer_out_gb": Price(
        0.09, "per GB out to the internet (first 10 TB)", "https://aws.amazon.com/ec2/pricing/on-demand/"
    ),
    "cloudwatch_logs_gb": Price(0.57, "per GB of logs ingested", "https://aws.amazon.com/cloudwatch/pricing/"),
    "cloudwatch_metric_month": Price(0.30, "per custom metric per month", "https://aws.amazon.com/cloudwatch/pricing/"),
    "cloudwatch_alarm_month": Price(
        0.10, "per standard-resolution alarm per month", "https://aws.amazon.com/cloudwatch/pricing/"
    ),
    "cloudwatch_dashboard_month": Price(3.00, "per dashboard per month", "https://aws.amazon.com/cloudwatch/pricing/"),
    "xray_trace": Price(5.00 / 1_000_000, "per trace recorded", "https://aws.amazon.com/xray/pricing/"),
}

#: What a binding does in a month besides being stored, and what the model cannot measure on moto.
ASSUMPTIONS: dict[str, float] = {
    "audits_per_month": 30,  # one audit a night
    "binds_per_binding_month": 1 / 12,  # bindings live a year on average: 1/12 of them are bound and
    "unbinds_per_binding_month": 1 / 12,  # unbound each month (the population stays the same)
    "verifies_per_binding_month": 4,  # a platform re-checks a key on a user's action, about weekly
    "rotations_per_binding_month": 0.25,  # a key is rotated about once a quarter
    "exchange_rtt_seconds": 0.15,  # one exchange request's round trip (moto and the simulators answer at once)
    "worker_concurrency": 10,  # checks in flight per worker invocation (AUDIT_CONCURRENCY): their waits overlap
    "wire_overhead_bytes_per_request": 600,  # TCP/IP and TLS framing per request and answer, not seen in HTTP
    "lambda_platform_log_bytes_per_invocation": 350,  # Lambda's START, END and REPORT lines
    "nat_gateways": 1,  # EgressIpCount=1 (one NAT gateway per egress IP)
    "custom_metrics": 35,  # KeyChecks by exchange and outcome, and the audit's run metrics
    "hours_per_month": 730,
    "xray_reservoir_traces_per_month": 2_592_000,  # the default sampling rule: 1 trace a second, then 5%
    "xray_sampled_fraction": 0.05,
    "sqs_idle_requests_per_queue_month": 648_000,  # Lambda's SQS pollers: ~5 long polls (20 s) at a time, all month
}

# --------------------------------------------------------------------- measuring


def dynamodb_size(value: dict[str, Any]) -> int:
    """The size DynamoDB charges for one attribute value (its rules for item size)."""
    ((kind, data),) = value.items()
    if kind == "S":
        return len(data.encode("utf-8"))
    if kind == "N":
        digits = data.lstrip("-").replace(".", "").lstrip("0") or "0"
        return (len(digits) + 1) // 2 + 1
    if kind == "B":
        return len(data)
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "SS":
        return sum(len(x.encode("utf-8")) for x in data)
    if kind == "NS":
        return sum(dynamodb_size({"N": x}) for x in data)
    if kind == "BS":
        return sum(len(x) for x in data)
    if kind == "M":
        return 3 + sum(len(k.encode("utf-8")) + dynamodb_size(v) for k, v in data.items())
    if kind == "L":
        return 3 + sum(1 + dynamodb_size(v) for v in data)
    raise ValueError(f"unknown DynamoDB type {kind}")


def item_size(item: dict[str, Any] | None) -> int:
    if not item:
        return 0
    return sum(len(name.encode("utf-8")) + dynamodb_size(value) for name, value in item.items())


@dataclass
class TableShape:
    keys: tuple[str, ...]
    #: index name -> (its key attributes, the projected attributes or None for ALL)
    indexes: dict[str, tuple[tuple[str, ...], tuple[str, ...] | None]]


def table_shape(dynamodb: Any, name: str) -> TableShape:
    table = dynamodb.describe_table(TableName=name)["Table"]
    keys = tuple(k["AttributeName"] for k in table["KeySchema"])
    indexes: dict[str, tuple[tuple[str, ...], tuple[str, ...] | None]] = {}
    for index in table.get("GlobalSecondaryIndexes") or []:
        index_keys = tuple(k["AttributeName"] for k in index["KeySchema"])
        projection = index.get("Projection") or {}
        kind = projection.get("ProjectionType", "ALL")
        projected: tuple[str, ...] | None
        if kind == "ALL":
            projected = None
        elif kind == "KEYS_ONLY":
            projected = ()
        else:
            projected = tuple(projection.get("NonKeyAttributes") or ())
        indexes[index["IndexName"]] = (index_keys, projected)
    return TableShape(keys, indexes)


def index_entry(shape: TableShape, index: str, item: dict[str, Any] | None) -> dict[str, Any] | None:
    """The entry `item` has in `index` (None: it is not in the index)."""
    if not item:
        return None
    index_keys, projected = shape.indexes[index]
    if not all(k in item for k in index_keys):
        return None
    if projected is None:
        return dict(item)
    names = set(shape.keys) | set(index_keys) | set(projected)
    return {k: v for k, v in item.items() if k in names}


ITEM_OVERHEAD = 100  # bytes DynamoDB adds to each item and each index entry for storage


def stored_bytes(shape: TableShape, item: dict[str, Any]) -> int:
    """What one item costs in storage: itself and its index entries, each with DynamoDB's overhead."""
    total = item_size(item) + ITEM_OVERHEAD
    for index in shape.indexes:
        entry = index_entry(shape, index, item)
        if entry is not None:
            total += item_size(entry) + ITEM_OVERHEAD
    return total


def read_units(size: int, consistent: bool) -> float:
    return max(1, math.ceil(size / 4096)) * (1.0 if consistent else 0.5)


def write_units(size: int) -> int:
    return max(1, math.ceil(size / 1024))


class Meter:
    """What the operation under measurement costs: AWS calls, request units, bytes, exchange requests, logs.

    Counting is on only inside `measuring(label)`; the hooks and the exchange transport report here.
    """

    def __init__(self) -> None:
        self.label: str | None = None
        self.lock = threading.RLock()
        self.calls: Counter[tuple[str, str, str]] = Counter()  # (label, service, operation)
        self.units: defaultdict[tuple[str, str, str], float] = defaultdict(float)  # (label, table, "read" | "write")
        self.table_calls: Counter[tuple[str, str]] = Counter()  # (label, table)
        self.aws_bytes: Counter[tuple[str, str]] = Counter()  # (label, service)
        self.exchange_requests: Counter[str] = Counter()
        self.exchange_bytes_out: Counter[str] = Counter()
        self.exchange_bytes_in: Counter[str] = Counter()
        self.log_bytes: Counter[str] = Counter()
        self.invocations: Counter[str] = Counter()
        self.latency_ms: dict[str, list[float]] = defaultdict(list)

    @contextlib.contextmanager
    def measuring(self, label: str, *, invocation: bool = True) -> Iterator[None]:
        previous = self.label
        self.label = label
        started = time.perf_counter()
        try:
            yield
        finally:
            elapsed = (time.perf_counter() - started) * 1000
            self.label = previous
            if invocation:
                self.invocations[label] += 1
                self.latency_ms[label].append(elapsed)


class MeteredDynamoDB:
    """The DynamoDB side of the hooks: request units from item sizes, read with an unhooked client."""

    def __init__(self, meter: Meter, peek: Any, shapes: dict[str, TableShape]) -> None:
        self.meter = meter
        self.peek = peek
        self.shapes = shapes

    def _key(self, table: str, item: dict[str, Any]) -> dict[str, Any]:
        return {k: item[k] for k in self.shapes[table].keys if k in item}

    def _current(self, table: str, key: dict[str, Any]) -> dict[str, Any] | None:
        if table not in self.shapes:
            return None
        answer = self.peek.get_item(TableName=table, Key=key, ConsistentRead=True)
        item: dict[str, Any] | None = answer.get("Item")
        return item

    def _write(self, label: str, table: str, before: dict[str, Any] | None, after: dict[str, Any] | None, times: int):
        units = write_units(max(item_size(before), item_size(after)))
        shape = self.shapes.get(table)
        if shape is not None:  # every index the write touches is written too
            for index in shape.indexes:
                old, new = index_entry(shape, index, before), index_entry(shape, index, after)
                if old is None and new is None:
                    continue
                moved = old is not None and new is not None and any(old[k] != new[k] for k in shape.indexes[index][0])
                units += write_units(max(item_size(old), item_size(new))) * (2 if moved else 1)
        self.meter.units[(label, table, "write")] += units * times
        self.meter.table_calls[(label, table)] += 1

    def before(self, label: str, operation: str, params: dict[str, Any], context: dict[str, Any]) -> None:
        """Record each written item's image before the call (writes are charged on the larger image)."""
        images: list[tuple[str, dict[str, Any], dict[str, Any] | None, dict[str, Any] | None, int]] = []
        if operation in ("PutItem", "UpdateItem", "DeleteItem"):
            table = params["TableName"]
            key = params["Key"] if "Key" in params else self._key(table, params["Item"])
            images.append((table, key, self._current(table, key), params.get("Item"), 1))
        elif operation == "TransactWriteItems":
            for entry in params["TransactItems"]:
                ((_, request),) = entry.items()
                table = request["TableName"]
                key = request["Key"] if "Key" in request else self._key(table, request["Item"])
                images.append((table, key, self._current(table, key), request.get("Item"), 2))
        elif operation == "BatchWriteItem":
            for table, requests in params["RequestItems"].items():
                for request in requests:
                    if "PutRequest" in request:
                        item = request["PutRequest"]["Item"]
                        images.append(
                            (table, self._key(table, item), self._current(table, self._key(table, item)), item, 1)
                        )
                    else:
                        key = request["DeleteRequest"]["Key"]
                        images.append((table, key, self._current(table, key), None, 1))
        context["cost_images"] = images

    def after(
        self, label: str, operation: str, params: dict[str, Any], parsed: dict[str, Any], context: dict[str, Any]
    ) -> None:
        meter = self.meter
        failed = "Error" in parsed
        for table, key, before, put, times in context.pop("cost_images", []):
            if failed:  # a refused write is charged on the item as it is
                after: dict[str, Any] | None = before
            elif operation in ("DeleteItem",) or (operation == "BatchWriteItem" and put is None):
                after = None
            elif put is not None:
                after = put
            else:
                after = self._current(table, key)
            if operation == "TransactWriteItems" and failed:
                times = 2
            self._write(label, table, before, after, times)
        if operation == "GetItem":
            table = params["TableName"]
            full = self._current(table, params["Key"])  # charged on the whole item, whatever is projected
            meter.units[(label, table, "read")] += read_units(item_size(full), bool(params.get("ConsistentRead")))
            meter.table_calls[(label, table)] += 1
        elif operation in ("Query", "Scan"):
            table = params["TableName"]
            items = parsed.get("Items") or []
            size = sum(item_size(i) for i in items)
            count, scanned = parsed.get("Count", len(items)), parsed.get("ScannedCount", len(items))
            if count and scanned > count:  # filtered out: read all the same
                size = size * scanned // count
            meter.units[(label, table, "read")] += read_units(size, bool(params.get("ConsistentRead")))
            meter.table_calls[(label, table)] += 1
        elif operation == "BatchGetItem":
            for table, items in (parsed.get("Responses") or {}).items():
                consistent = bool(params["RequestItems"][table].get("ConsistentRead"))
                for item in items:
                    meter.units[(label, table, "read")] += read_units(item_size(item), consistent)
                meter.table_calls[(label, table)] += 1
        elif operation == "TransactGetItems":
            for entry in params["TransactItems"]:
                request = entry["Get"]
                full = self._current(request["TableName"], request["Key"])
                meter.units[(label, request["TableName"], "read")] += 2 * read_units(item_size(full), True)
                meter.table_calls[(label, request["TableName"])] += 1


def hook(client: Any, service: str, meter: Meter, dynamodb: MeteredDynamoDB | None = None) -> Any:
    """Register the counting hooks on `client` (before-call, before-send, after-call); returns it."""

    def before_call(model: Any, context: dict[str, Any], **_: Any) -> None:
        label = meter.label
        context["cost_label"] = label
        if label is None:
            return
        with meter.lock:
            meter.calls[(label, service, model.name)] += 1
        if dynamodb is not None:
            dynamodb.before(label, model.name, context.get("cost_params") or {}, context)

    def before_send(request: Any, **_: Any) -> None:
        label = request.context.get("cost_label")
        if label is None:
            return
        body = request.body or b""
        size = len(body if isinstance(body, bytes) else str(body).encode("utf-8"))
        size += (
            len(request.method) + len(request.url) + sum(len(k) + len(str(v)) + 4 for k, v in request.headers.items())
        )
        with meter.lock:
            meter.aws_bytes[(label, service)] += size

    def after_call(http_response: Any, parsed: dict[str, Any], model: Any, context: dict[str, Any], **_: Any) -> None:
        label = context.get("cost_label")
        if label is None:
            return
        size = len(getattr(http_response, "content", b"") or b"")
        size += sum(len(k) + len(str(v)) + 4 for k, v in (getattr(http_response, "headers", {}) or {}).items())
        with meter.lock:
            meter.aws_bytes[(label, service)] += size
        if dynamodb is not None:
            params = context.get("cost_params") or {}
            with meter.lock:
                dynamodb.after(label, model.name, params, parsed, context)

    def keep_params(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        """The call's API parameters (before-call sees the serialised request only)."""
        context["cost_params"] = params

    events = client.meta.events
    events.register("before-call.*.*", before_call)
    events.register("before-parameter-build.*.*", keep_params)
    events.register_first("before-send.*.*", before_send)  # ahead of moto, which answers there
    events.register("after-call.*.*", after_call)
    return client


class MeteredTransport:
    """The exchange transport, counting requests and bytes for the operation under measurement."""

    def __init__(self, inner: Any, meter: Meter, overhead: int) -> None:
        self._inner = inner
        self._meter = meter
        self._overhead = overhead

    def send(self, request: Any) -> Any:
        response = self._inner.send(request)
        label = self._meter.label
        if label is not None:
            out = len(request.method) + len(request.url) + len(request.body or b"")
            out += sum(len(k) + len(v) + 4 for k, v in request.headers.items()) + self._overhead
            back = len(response.content) + sum(len(k) + len(v) + 4 for k, v in response.headers.items())
            with self._meter.lock:
                self._meter.exchange_requests[label] += 1
                self._meter.exchange_bytes_out[label] += out
                self._meter.exchange_bytes_in[label] += back + self._overhead
        return response


class LogSink(io.TextIOBase):
    """Where the handlers' logs and metrics go while measuring: counted by operation, never shown."""

    def __init__(self, meter: Meter) -> None:
        self._meter = meter

    def write(self, text: str) -> int:
        label = self._meter.label
        if label is not None:
            with self._meter.lock:
                self._meter.log_bytes[label] += len(text.encode("utf-8"))
        return len(text)

    def writable(self) -> bool:
        return True


@contextlib.contextmanager
def captured_logs(meter: Meter) -> Iterator[None]:
    """Send stdout, stderr and every stream handler to a LogSink (what Lambda would ship to CloudWatch)."""
    sink = LogSink(meter)
    swapped: list[tuple[logging.StreamHandler[Any], Any]] = []
    loggers = [
        logging.getLogger(),
        *(lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)),
    ]
    for lg in loggers:
        for handler in lg.handlers:
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
                swapped.append((handler, handler.setStream(sink)))
    try:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            yield
    finally:
        for handler, stream in swapped:
            handler.setStream(stream)


# ---------------------------------------------------------------------- the stack


def bench_key(exchange: str, index: int, generation: int) -> tuple[str, str]:
    digest = hashlib.sha256(f"cost/{exchange}/{index}/{generation}".encode()).hexdigest()
    secret = hashlib.sha256(f"cost-secret/{exchange}/{index}/{generation}".encode()).hexdigest()
    return ("bg_" + digest[:32] if exchange == "bitget" else digest), secret


BITGET_PASSPHRASE = "CostPass1"  # a simulator key's passphrase, made up here


def start_simulators(n: int, stack: contextlib.ExitStack) -> dict[str, str]:
    """Fresh simulators with two keys per binding (the bound one and its rotation); their URLs."""
    from simulators import binance, bingx, bitget
    from simulators.base import SimulatorServer

    sims: dict[str, Any] = {
        "binance": binance.BinanceSimulator(),
        "bitget": bitget.BitgetSimulator(),
        "bingx": bingx.BingXSimulator(),
    }
    for i in range(n):
        exchange = EXCHANGES[i % 3]
        sim = sims[exchange]
        account = sim.add_account() if exchange == "bitget" else None
        for generation in (0, 1):
            key, secret = bench_key(exchange, i, generation)
            if exchange == "binance":
                sim.add_key(key, uid=200_000 + i, secret=secret, ip_whitelist=(EGRESS_IP,), enable_futures=True)
            elif exchange == "bitget":
                sim.add_key(
                    account,
                    api_key=key,
                    secret=secret,
                    passphrase=BITGET_PASSPHRASE,
                    ips=(EGRESS_IP,),
                    authorities=bitget.FULL_TRADE,
                )
            else:
                sim.add_key(
                    uid=300_000 + i, api_key=key, secret=secret, permissions=(1, 2, 3), ip_addresses=(EGRESS_IP,)
                )
    return {name: stack.enter_context(SimulatorServer(sim)).url for name, sim in sims.items()}


def api_event(method: str, path: str, resource: str, body: Any = None, binding_id: str | None = None) -> dict[str, Any]:
    """An API Gateway REST proxy event (AWS_IAM auth), as the deployed API sends it. A bind and a
    rotation carry an Idempotency-Key, as a platform backend sends them."""
    headers = {"Content-Type": "application/json", "Host": "api.example.test"}
    if body is not None:
        headers["Idempotency-Key"] = str(uuid.uuid4())
    return {
        "resource": resource,
        "path": path,
        "httpMethod": method,
        "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": {"binding_id": binding_id} if binding_id else None,
        "stageVariables": None,
        "requestContext": {
            "resourcePath": resource,
            "httpMethod": method,
            "path": f"/v1{path}",
            "stage": "v1",
            "requestId": str(uuid.uuid4()),
            "accountId": "123456789012",
            "apiId": "costapi",
            "identity": {
                "userArn": PRINCIPAL,
                "caller": "AROAEXAMPLE:cost",
                "accountId": PRINCIPAL.split(":")[4],
                "user": "AROAEXAMPLE",
                "sourceIp": "198.51.100.7",
                "userAgent": "platform-backend/1.0",
            },
            "requestTimeEpoch": int(time.time() * 1000),
        },
        "body": None if body is None else json.dumps(body),
        "isBase64Encoded": False,
    }


class LambdaContext:
    function_name = "keyhealth-cost"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:eu-west-1:123456789012:function:keyhealth-cost"
    aws_request_id = "cost-run"

    @staticmethod
    def get_remaining_time_in_millis() -> int:
        return 29_000


def credentials_body(exchange: str, index: int, generation: int) -> dict[str, Any]:
    key, secret = bench_key(exchange, index, generation)
    body: dict[str, Any] = {"api_key": key, "api_secret": secret, "key_type": "hmac"}
    if exchange == "bitget":
        body["passphrase"] = BITGET_PASSPHRASE
    return body


def queue_namer(exchange: str) -> Any:
    def name_of(logical_id: str) -> str:
        return f"cost-{exchange}-{logical_id}"

    return name_of


def measure_store(store: str, n: int) -> dict[str, Any]:
    """Run every operation over `n` bindings on a fresh moto stack with `store`; the measured figures."""
    import boto3
    from moto import mock_aws

    from functions.audit_dispatcher import app as dispatcher
    from functions.audit_worker import app as worker
    from functions.bind import app as bind_function
    from functions.unbind import app as unbind_function
    from functions.verify import app as verify_function
    from keyhealth import wiring
    from keyhealth.adapters.http_transport import HttpxTransport, new_http_client
    from keyhealth.config import Settings
    from local.sqs_event_source import deliver_batch
    from local.template import create_key, create_queue, create_table, create_topic

    meter = Meter()
    overhead = int(ASSUMPTIONS["wire_overhead_bytes_per_request"])
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SECURITY_TOKEN", "AWS_SESSION_TOKEN"):
        os.environ[name] = "testing"
    os.environ["AWS_DEFAULT_REGION"] = REGION
    os.environ.pop("AWS_ENDPOINT_URL", None)
    with contextlib.ExitStack() as stack, mock_aws():
        urls = start_simulators(n, stack)
        session = boto3.session.Session(region_name=REGION)
        peek = session.client("dynamodb")  # the script's own reads: never counted
        create_table(peek, "BindingsTable", TABLE)
        create_table(peek, "IdempotencyTable", IDEMPOTENCY_TABLE)
        create_table(peek, "CredentialsTable", CREDENTIALS_TABLE)
        raw_kms = session.client("kms")
        secrets_key = create_key(raw_kms, "SecretsKey")
        credentials_key = create_key(raw_kms, "CredentialsKey")
        topic = create_topic(session.client("sns"), "AlertTopic", "cost-alerts")
        raw_sqs = session.client("sqs")
        arns: dict[str, str] = {}
        queues = {
            exchange: create_queue(raw_sqs, logical, name_of=queue_namer(exchange), queues=arns)
            for exchange, logical in (
                ("binance", "AuditQueueBinance"),
                ("bitget", "AuditQueueBitget"),
                ("bingx", "AuditQueueBingx"),
            )
        }
        shapes = {t: table_shape(peek, t) for t in (TABLE, IDEMPOTENCY_TABLE, CREDENTIALS_TABLE)}
        metered = MeteredDynamoDB(meter, peek, shapes)
        clients = {
            "dynamodb": hook(session.client("dynamodb"), "dynamodb", meter, metered),
            "secretsmanager": hook(session.client("secretsmanager"), "secretsmanager", meter),
            "kms": hook(session.client("kms"), "kms", meter),
            "sns": hook(session.client("sns"), "sns", meter),
            "sqs": hook(session.client("sqs"), "sqs", meter),
        }
        env = {
            "TABLE_NAME": TABLE,
            "IDEMPOTENCY_TABLE_NAME": IDEMPOTENCY_TABLE,
            "SECRET_PREFIX": SECRET_PREFIX,
            "ALERT_TOPIC_ARN": topic,
            "EGRESS_IPS": EGRESS_IP,
            "SECRETS_KMS_KEY_ID": secrets_key,
            "CREDENTIAL_STORE": store,
            "CREDENTIALS_TABLE_NAME": CREDENTIALS_TABLE,
            "CREDENTIALS_KMS_KEY_ID": credentials_key,
            "STACK_NAME": STACK_NAME,
            "BINANCE_BASE_URL": urls["binance"],
            "BINANCE_FUTURES_BASE_URL": urls["binance"],
            "BITGET_BASE_URL": urls["bitget"],
            "BINGX_BASE_URL": urls["bingx"],
            **{f"AUDIT_QUEUE_URL_{e.upper()}": url for e, url in queues.items()},
        }
        http = new_http_client(source_address=EGRESS_IP, connect_timeout=3.0, read_timeout=5.0)
        stack.callback(http.close)
        container = wiring.Container(
            wiring.Environment(
                settings=Settings.from_env(env),
                aws_client=clients.__getitem__,
                exchange_transport=MeteredTransport(HttpxTransport(http), meter, overhead),
            )
        )
        wiring.use(container)
        stack.callback(wiring.use, None)
        stack.enter_context(captured_logs(meter))

        def invoke(label: str, function: Any, event: dict[str, Any], expected: int) -> dict[str, Any]:
            with meter.measuring(label):
                answer = function.lambda_handler(event, LambdaContext())
            if answer["statusCode"] != expected:
                status, text = answer["statusCode"], (answer.get("body") or "")[:1000]
                raise RuntimeError(f"{label} answered {status}, not {expected} ({store} store): {text}")
            return json.loads(answer["body"]) if answer.get("body") else {}

        # Bitget answers 429 to a second request for one account within a second (its per-UID limit):
        # each binding is left a second between the operations on it (outside what is measured).
        touched: dict[int, float] = {}

        def pace(i: int) -> None:
            wait = touched.get(i, 0.0) + 1.05 - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            touched[i] = time.monotonic()

        bindings: list[str] = []
        for i in range(n):
            pace(i)
            exchange = EXCHANGES[i % 3]
            body = {"user_id": f"u-{i}", "exchange": exchange, "label": "bot", "scopes": ["spot", "futures"]}
            body.update(credentials_body(exchange, i, 0))
            answer = invoke("bind", bind_function, api_event("POST", "/bindings", "/bindings", body), 201)
            bindings.append(answer["binding"]["binding_id"])
        for i, binding_id in enumerate(bindings):
            pace(i)
            path = f"/bindings/{binding_id}/verify"
            invoke(
                "verify",
                verify_function,
                api_event("POST", path, "/bindings/{binding_id}/verify", binding_id=binding_id),
                200,
            )
        for i, binding_id in enumerate(bindings):
            path = f"/bindings/{binding_id}/credentials"
            event = api_event(
                "PUT", path, "/bindings/{binding_id}/credentials", credentials_body(EXCHANGES[i % 3], i, 1), binding_id
            )
            pace(i)
            invoke("rotate", bind_function, event, 200)

        # The audit: the dispatcher, then every queued task through the worker in batches of 10, as
        # Lambda's SQS event source delivers them (its receives that return messages and its deletes
        # are SQS requests of the account, so they are counted: through the hooked client).
        run_id = f"cost-{store}"
        time.sleep(max(0.0, max(touched.values()) + 1.05 - time.monotonic()))
        with meter.measuring("dispatch"):
            dispatcher.lambda_handler({"run_id": run_id}, LambdaContext())
        sqs = clients["sqs"]
        deadline = time.monotonic() + 120
        while True:
            delivered = 0
            for exchange, url in queues.items():
                messages = raw_sqs.receive_message(
                    QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=30, AttributeNames=["All"]
                ).get("Messages", [])
                if not messages:
                    continue
                delivered += len(messages)
                arn = f"arn:aws:sqs:{REGION}:123456789012:cost-{exchange}"
                with meter.measuring("check"):
                    meter.calls[("check", "sqs", "ReceiveMessage")] += 1  # the event source's receive
                    deliver_batch(
                        sqs, url, arn, messages, lambda e: worker.lambda_handler(e, LambdaContext()), region=REGION
                    )
            run = container.audit.runs.load(run_id)
            if run is not None and run.finished:
                break
            if not delivered:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the audit did not finish ({store} store)")
                time.sleep(0.2)
        summary = json.loads(
            peek.get_item(TableName=TABLE, Key={"pk": {"S": f"RUN#{run_id}"}, "sk": {"S": "RUN"}})["Item"]["summary"][
                "S"
            ]
        )

        # Storage, as it stands with every binding bound, verified, rotated and audited once.
        storage = measure_storage(peek, shapes, session.client("secretsmanager"), n)

        for binding_id in bindings:
            path = f"/bindings/{binding_id}"
            invoke(
                "unbind",
                unbind_function,
                api_event("DELETE", path, "/bindings/{binding_id}", binding_id=binding_id),
                204,
            )

    return figures_of(meter, n, storage, summary)


def measure_storage(dynamodb: Any, shapes: dict[str, TableShape], secretsmanager: Any, n: int) -> dict[str, Any]:
    """Bytes stored per binding: binding items, audit run items (kept RUN_TTL_DAYS), credentials."""
    kinds: Counter[str] = Counter()
    for table in (TABLE, CREDENTIALS_TABLE):
        kwargs: dict[str, Any] = {"TableName": table}
        while True:
            page = dynamodb.scan(**kwargs)
            for item in page.get("Items", []):
                if table == CREDENTIALS_TABLE:
                    kind = "credentials"
                elif item["pk"]["S"].startswith("RUN#"):
                    kind = "audit_run"
                else:
                    kind = "bindings"
                kinds[kind] += stored_bytes(shapes[table], item)
                if kind == "bindings" and "ByExchange" in shapes[table].indexes:
                    entry = index_entry(shapes[table], "ByExchange", item)
                    kinds["dispatch_read"] += item_size(entry) if entry else 0
            if "LastEvaluatedKey" not in page:
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    secrets = 0
    kwargs = {"MaxResults": 100}
    while True:
        page = secretsmanager.list_secrets(**kwargs)
        secrets += sum(1 for s in page.get("SecretList", []) if str(s.get("Name", "")).startswith(SECRET_PREFIX))
        if not page.get("NextToken"):
            break
        kwargs["NextToken"] = page["NextToken"]
    return {
        "binding_bytes_per_binding": round(kinds["bindings"] / n, 1),
        "audit_run_bytes_per_binding": round(kinds["audit_run"] / n, 1),
        "credential_bytes_per_binding": round(kinds["credentials"] / n, 1),
        "secrets_per_binding": round(secrets / n, 3),
        "dispatch_read_bytes_per_binding": round(kinds["dispatch_read"] / n, 1),
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    rank = max(0, math.ceil(q * len(ordered)) - 1)
    return ordered[rank]


def figures_of(meter: Meter, n: int, storage: dict[str, Any], summary: dict[str, Any]) -> dict[str, Any]:
    """The measured figures of one store, per operation; per binding for the audit's checks."""
    operations: dict[str, Any] = {}
    for label in OPERATIONS:
        invocations = meter.invocations[label]
        # bind, verify, rotate and unbind: per call; the dispatcher: per run; the checks: per binding
        per = {"dispatch": 1, "check": n}.get(label, invocations) or 1
        calls = {f"{s}:{o}": round(c / per, 3) for (lb, s, o), c in sorted(meter.calls.items()) if lb == label}
        latencies = meter.latency_ms[label]
        operations[label] = {
            "per": {"dispatch": "run", "check": "binding"}.get(label, "call"),
            "invocations": invocations,
            "invocations_per": round(invocations / per, 4),
            "aws_calls": round(sum(c for (lb, _, _), c in meter.calls.items() if lb == label) / per, 3),
            "calls": calls,
            "dynamodb_units": {
                f"{table}:{kind}": round(u / per, 3)
                for (lb, table, kind), u in sorted(meter.units.items())
                if lb == label
            },
            "aws_bytes": {s: round(b / per, 1) for (lb, s), b in sorted(meter.aws_bytes.items()) if lb == label},
            "exchange_requests": round(meter.exchange_requests[label] / per, 3),
            "exchange_bytes_out": round(meter.exchange_bytes_out[label] / per, 1),
            "exchange_bytes_in": round(meter.exchange_bytes_in[label] / per, 1),
            "log_bytes": round(meter.log_bytes[label] / per, 1),
            "latency_ms": {
                "median": round(statistics.median(latencies), 2) if latencies else 0.0,
                "p95": round(percentile(latencies, 0.95), 2),
                "per_invocation_mean": round(statistics.fmean(latencies), 2) if latencies else 0.0,
            },
        }
    return {"operations": operations, "storage": storage, "audit_summary_counts": summary.get("counts", {})}


# ------------------------------------------------------------------------ the model


def template_facts() -> dict[str, Any]:
    from local.template import resources_of_type, template

    return {
        "lambda_memory_gb": int(template()["Globals"]["Function"]["MemorySize"]) / 1024,
        "alarms": len(resources_of_type("AWS::CloudWatch::Alarm")),
        "dashboards": len(resources_of_type("AWS::CloudWatch::Dashboard")),
        "audit_queues": 3,
        "run_ttl_days": 30,
    }


TABLE_NAMES = {TABLE: "bindings", IDEMPOTENCY_TABLE: "idempotency", CREDENTIALS_TABLE: "credentials"}


class _Month:
    """One store's usage in a month at one size, from the measured figures per operation."""

    def __init__(
        self, ops: dict[str, Any], storage: dict[str, Any], size: int, per_month: dict[str, float], audits: float
    ) -> None:
        self.ops, self.storage, self.size, self.per_month, self.audits = ops, storage, size, per_month, audits

    def count(self, op: str) -> float:
        """How many times `op` happens in a month (the dispatcher: once per audit)."""
        return self.audits if op == "dispatch" else self.per_month[op] * self.size

    def scaled(self, op: str, name: str, measured: float) -> float:
        """The dispatcher's calls per run at this size: one SendMessageBatch per 10 tasks, and its Query
        pages read every binding's ByExchange entry; the rest of what it does is per run."""
        if op != "dispatch":
            return measured
        if name == "sqs:SendMessageBatch":
            return max(measured, self.size / 10)
        if name == f"{TABLE}:read":
            entries = int(self.storage["dispatch_read_bytes_per_binding"] * self.size)
            return max(measured, read_units(entries, False))
        return measured

    def calls_of(self, service: str, *, only: tuple[str, ...] = ()) -> float:
        total = 0.0
        for op, figures in self.ops.items():
            for name, c in figures["calls"].items():
                svc, operation = name.split(":")
                if svc == service and (not only or operation in only):
                    total += self.scaled(op, name, c) * self.count(op)
        return total

    def units(self, kind: str, tables: tuple[str, ...]) -> float:
        total = 0.0
        for op, figures in self.ops.items():
            for name, u in figures["dynamodb_units"].items():
                table, unit_kind = name.rsplit(":", 1)
                if unit_kind == kind and TABLE_NAMES.get(table) in tables:
                    total += self.scaled(op, name, u) * self.count(op)
        return total


def model(snapshot: dict[str, Any]) -> dict[str, Any]:
    """Monthly cost per store and size from the snapshot's measured figures, prices, assumptions, facts."""
    p = {name: price["usd"] for name, price in snapshot["prices"].items()}
    a = snapshot["assumptions"]
    facts = snapshot["template"]
    gb = 1024**3
    result: dict[str, Any] = {}
    for store, measured in snapshot["measured"].items():
        ops = measured["operations"]
        storage = measured["storage"]
        per_month = {  # how often each operation happens per binding per month (dispatch: per run)
            "bind": a["binds_per_binding_month"],
            "verify": a["verifies_per_binding_month"],
            "rotate": a["rotations_per_binding_month"],
            "unbind": a["unbinds_per_binding_month"],
            "check": a["audits_per_month"],
        }
        by_size: dict[str, Any] = {}
        for size in snapshot["sizes"]:
            m = _Month(ops, storage, size, per_month, a["audits_per_month"])
            count, calls_of, units = m.count, m.calls_of, m.units

            lines: dict[str, float] = {}
            store_lines: dict[str, float] = {}
            # -- the credential store
            if store == "secretsmanager":
                secrets = storage["secrets_per_binding"] * size
                store_lines["Secrets Manager secrets"] = secrets * p["secretsmanager_secret_month"]
                store_lines["Secrets Manager API calls"] = calls_of("secretsmanager") * p["secretsmanager_api"]
                # Secrets Manager asks KMS (the stack's key) for a data key per version written and a
                # decrypt per value read: requests of the account, not visible on moto
                behind = calls_of("secretsmanager", only=("CreateSecret", "PutSecretValue", "GetSecretValue"))
                store_lines["KMS requests behind Secrets Manager"] = behind * p["kms_request"]
                lines["CredentialsKey (deployed, unused)"] = p["kms_key_month"]
            else:
                store_lines["CredentialsKey"] = p["kms_key_month"]
                store_lines["KMS requests"] = calls_of("kms") * p["kms_request"]
                store_lines["CredentialsTable requests"] = (
                    units("write", ("credentials",)) * p["dynamodb_write_unit"]
                    + units("read", ("credentials",)) * p["dynamodb_read_unit"]
                )
                credential_gb = storage["credential_bytes_per_binding"] * size / gb
                store_lines["CredentialsTable storage and PITR"] = credential_gb * (
                    p["dynamodb_storage_gb_month"] + p["dynamodb_pitr_gb_month"]
                )
            # -- everything else
            hours = a["hours_per_month"]
            lines["NAT gateway hours"] = a["nat_gateways"] * hours * p["nat_gateway_hour"]
            lines["Elastic IP hours"] = a["nat_gateways"] * hours * p["public_ipv4_hour"]
            lines["SecretsKey"] = p["kms_key_month"]
            lines["CloudWatch alarms, dashboard, metrics"] = (
                facts["alarms"] * p["cloudwatch_alarm_month"]
                + facts["dashboards"] * p["cloudwatch_dashboard_month"]
                + a["custom_metrics"] * p["cloudwatch_metric_month"]
            )
            lines["DynamoDB requests (bindings, runs, idempotency)"] = (
                units("write", ("bindings", "idempotency")) * p["dynamodb_write_unit"]
                + units("read", ("bindings", "idempotency")) * p["dynamodb_read_unit"]
            )
            table_gb = (
                (storage["binding_bytes_per_binding"] + storage["audit_run_bytes_per_binding"] * facts["run_ttl_days"])
                * size
                / gb
            )
            lines["DynamoDB storage and PITR (bindings, runs)"] = table_gb * (
                p["dynamodb_storage_gb_month"] + p["dynamodb_pitr_gb_month"]
            )
            invocations = sum(ops[op]["invocations_per"] * count(op) for op in ops)
            gb_seconds = 0.0
            for op in ops:
                per_invocation = ops[op]["latency_ms"]["per_invocation_mean"] / 1000
                inv = ops[op]["invocations_per"]
                waits = ops[op]["exchange_requests"] * a["exchange_rtt_seconds"]
                if op == "check":
                    waits /= a["worker_concurrency"]
                seconds = per_invocation * inv + waits  # per occurrence of op
                gb_seconds += seconds * facts["lambda_memory_gb"] * count(op)
            lines["Lambda"] = gb_seconds * p["lambda_gb_second"] + invocations * p["lambda_request"]
            api_requests = sum(count(op) for op in ("bind", "verify", "rotate", "unbind"))
            lines["API Gateway"] = api_requests * p["api_gateway_request"]
            sqs_requests = calls_of("sqs") + facts["audit_queues"] * a["sqs_idle_requests_per_queue_month"]
            lines["SQS"] = sqs_requests * p["sqs_request"]
            lines["SNS"] = calls_of("sns", only=("Publish", "PublishBatch")) * p["sns_publish"]
            # Through the NAT: the exchanges, and every AWS API but DynamoDB (a gateway endpoint).
            nat_bytes = sum(
                (ops[op]["exchange_bytes_out"] + ops[op]["exchange_bytes_in"]) * count(op)
                + sum(b for service, b in ops[op]["aws_bytes"].items() if service != "dynamodb") * count(op)
                for op in ops
            )
            aws_requests_via_nat = sum(
                c * count(op) for op in ops for name, c in ops[op]["calls"].items() if not name.startswith("dynamodb:")
            )
            nat_bytes += aws_requests_via_nat * 2 * a["wire_overhead_bytes_per_request"]
            lines["NAT data processed"] = nat_bytes / gb * p["nat_gateway_gb"]
            out_bytes = sum(ops[op]["exchange_bytes_out"] * count(op) for op in ops)
            lines["Data transfer out (to the exchanges)"] = out_bytes / gb * p["data_transfer_out_gb"]
            log_bytes = sum(
                (ops[op]["log_bytes"] + ops[op]["invocations_per"] * a["lambda_platform_log_bytes_per_invocation"])
                * count(op)
                for op in ops
            )
            lines["CloudWatch Logs ingestion"] = log_bytes / gb * p["cloudwatch_logs_gb"]
            reservoir = a["xray_reservoir_traces_per_month"]
            traces = min(invocations, reservoir) + a["xray_sampled_fraction"] * max(0.0, invocations - reservoir)
            lines["X-Ray traces"] = traces * p["xray_trace"]
            credential_store = sum(store_lines.values())
            by_size[str(size)] = {
                "credential_store_lines": {k: round(v, 4) for k, v in store_lines.items()},
                "other_lines": {k: round(v, 4) for k, v in lines.items()},
                "credential_store": round(credential_store, 4),
                "total": round(credential_store + sum(lines.values()), 4),
                "usage": {
                    "invocations": round(invocations),
                    "api_requests": round(api_requests),
                    "nat_gb": round(nat_bytes / gb, 4),
                    "log_gb": round(log_bytes / gb, 4),
                },
            }
        result[store] = by_size
    largest = str(max(snapshot["sizes"]))
    ratio = result["kms"][largest]["credential_store"] / result["secretsmanager"][largest]["credential_store"]
    return {"monthly": result, "ratio_at_largest": round(ratio, 8), "largest": int(largest)}


def snapshot_of(measured: dict[str, Any], n: int, elapsed: float) -> dict[str, Any]:
    snapshot: dict[str, Any] = {
        "generated_by": "make cost (scripts/cost.py --write-docs)",
        "bindings_measured": n,
        "elapsed_seconds": round(elapsed, 1),
        "region": REGION,
        "prices_as_of": PRICES_AS_OF,
        "prices_note": PRICES_NOTE,
        "prices": {
            name: {"usd": price.usd, "unit": price.unit, "source": price.source} for name, price in PRICES.items()
        },
        "assumptions": dict(ASSUMPTIONS),
        "template": template_facts(),
        "sizes": list(SIZES),
        "measured": measured,
    }
    snapshot.update(model(snapshot))
    return snapshot


# ------------------------------------------------------------------------ rendering


def money(value: float) -> str:
    if value >= 100:
        return f"${value:,.0f}"
    if value >= 1:
        return f"${value:,.2f}"
    if value >= 0.01:
        return f"${value:.2f}"
    return f"${value:.4f}"


def _calls_text(calls: dict[str, float]) -> str:
    return ", ".join(f"{name} {c:g}" for name, c in calls.items())


def speed_rows(snapshot: dict[str, Any]) -> list[list[str]]:
    """store x operation: AWS calls, exchange requests, median and p95 latency on moto."""
    rows = []
    for op in OPERATIONS:
        for store in STORES:
            figures = snapshot["measured"][store]["operations"][op]
            rows.append(
                [
                    op,
                    store,
                    f"per {figures['per']}",
                    f"{figures['aws_calls']:g}",
                    f"{figures['exchange_requests']:g}",
                    f"{figures['latency_ms']['median']:.1f}",
                    f"{figures['latency_ms']['p95']:.1f}",
                ]
            )
    return rows


SPEED_HEADER = ["operation", "store", "counted", "AWS calls", "exchange requests", "median ms", "p95 ms"]


def cost_rows(snapshot: dict[str, Any], store: str) -> tuple[list[str], list[list[str]]]:
    monthly = snapshot["monthly"][store]
    sizes = [str(s) for s in snapshot["sizes"]]
    first = monthly[sizes[0]]
    rows = []
    for name in first["credential_store_lines"]:
        rows.append([f"credential store: {name}", *(money(monthly[s]["credential_store_lines"][name]) for s in sizes)])
    rows.append(["**credential store**", *(f"**{money(monthly[s]['credential_store'])}**" for s in sizes)])
    for name in first["other_lines"]:
        rows.append([name, *(money(monthly[s]["other_lines"][name]) for s in sizes)])
    rows.append(["**total**", *(f"**{money(monthly[s]['total'])}**" for s in sizes)])
    return ["item", *(f"{int(s):,} bindings" for s in sizes)], rows


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    return out


def plain(header: list[str], rows: list[list[str]]) -> list[str]:
    cells = [header, *[[c.replace("**", "") for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return [
        "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
        for row in cells
    ]


def per_check(snapshot: dict[str, Any], store: str) -> dict[str, float]:
    """What the AWS requests of one audit check cost (the measured calls per binding of `check`)."""
    p = {name: price["usd"] for name, price in snapshot["prices"].items()}
    figures = snapshot["measured"][store]["operations"]["check"]
    calls = figures["calls"]

    def of(service: str, *names: str) -> float:
        return sum(c for name, c in calls.items() if name.split(":")[0] == service and (not names or name in names))

    units = figures["dynamodb_units"]
    reads = sum(u for name, u in units.items() if name.endswith(":read"))
    writes = sum(u for name, u in units.items() if name.endswith(":write"))
    lines = {
        "Secrets Manager": of("secretsmanager") * p["secretsmanager_api"],
        "KMS (the store's own, or behind Secrets Manager)": (
            of("kms") + of("secretsmanager", "secretsmanager:GetSecretValue")
        )
        * p["kms_request"],
        "DynamoDB request units": writes * p["dynamodb_write_unit"] + reads * p["dynamodb_read_unit"],
        "SQS and SNS": of("sqs") * p["sqs_request"] + of("sns") * p["sns_publish"],
    }
    lines["total"] = sum(lines.values())
    return lines


def render_text(snapshot: dict[str, Any]) -> str:
    lines = [f"measured on moto over {snapshot['bindings_measured']} bindings per store", ""]
    lines += plain(SPEED_HEADER, speed_rows(snapshot))
    for store in STORES:
        lines += ["", f"{store} store: calls per operation"]
        for op in OPERATIONS:
            figures = snapshot["measured"][store]["operations"][op]
            lines.append(f"  {op} (per {figures['per']}): {_calls_text(figures['calls'])}")
        lines += ["", f"{store} store: monthly cost ({snapshot['prices_note']})"]
        lines += plain(*cost_rows(snapshot, store))
    lines += [
        "",
        f"kms / secretsmanager credential-store cost at {snapshot['largest']:,} bindings: "
        f"{snapshot['ratio_at_largest']:.6f} (at most {MAX_RATIO})",
    ]
    return "\n".join(lines)


def render_markdown(snapshot: dict[str, Any]) -> str:
    """docs/cost.md, from a snapshot (docs/cost.json) alone: the same snapshot renders the same page."""
    n = snapshot["bindings_measured"]
    a = snapshot["assumptions"]
    largest = snapshot["largest"]
    sm = snapshot["monthly"]["secretsmanager"][str(largest)]
    kms = snapshot["monthly"]["kms"][str(largest)]
    ops = {store: snapshot["measured"][store]["operations"] for store in STORES}
    storage = {store: snapshot["measured"][store]["storage"] for store in STORES}
    out = [
        "# What it costs per month",
        "",
        "<!-- Generated by `make cost` (scripts/cost.py --write-docs) from docs/cost.json: do not edit by hand. -->",
        "",
        f"Every figure below comes from one run of `make cost`: it builds the whole stack on moto in-process for each "
        f"credential store (`CredentialStore=secretsmanager`, then `kms`), binds {n} keys on the exchange simulators "
        f"through the real handlers, verifies, rotates, audits (dispatcher and worker) and unbinds them, and counts "
        f"every AWS API call of each operation with a botocore hook on each client, the DynamoDB request units from "
        f"the sizes of the items read and written, the bytes sent and received, the exchange requests and the log "
        f"output. The run's figures are in [cost.json](cost.json); this page is rendered from them.",
        "",
        f"**At {largest:,} bindings the kms store's credential-store cost is "
        f"{money(kms['credential_store'])} a month, {snapshot['ratio_at_largest'] * 100:.3f}% of Secrets Manager's "
        f"{money(sm['credential_store'])}** (the acceptance bound is 1%). The whole bill: "
        f"{money(kms['total'])} against {money(sm['total'])}.",
        "",
        "## Calls and latency per operation",
        "",
        "Per call for the API operations, per audit run for the dispatcher, per binding for the audit's checks "
        "(the worker, and the SQS event source's receives and deletes). Latency is wall-clock on moto in-process "
        "with simulators that answer at once: it compares the stores, it is not the latency in AWS.",
        "",
        *table(SPEED_HEADER, speed_rows(snapshot)),
        "",
        "| operation | secretsmanager store | kms store |",
        "|---|---|---|",
        *(
            f"| {op} | {_calls_text(ops['secretsmanager'][op]['calls'])} | {_calls_text(ops['kms'][op]['calls'])} |"
            for op in OPERATIONS
        ),
        "",
        "Stored per binding (measured, with DynamoDB's 100 bytes per item and index entry): "
        + "; ".join(
            f"{store}: binding items {storage[store]['binding_bytes_per_binding']:,.0f} B, audit run items "
            f"{storage[store]['audit_run_bytes_per_binding']:,.0f} B per run (kept "
            f"{snapshot['template']['run_ttl_days']} days), credentials item "
            f"{storage[store]['credential_bytes_per_binding']:,.0f} B, "
            f"secrets {storage[store]['secrets_per_binding']:g}"
            for store in STORES
        )
        + ".",
        "",
        "## Per check",
        "",
        "The AWS requests of one audit check (the measured calls per binding of the audit's checks), at the prices "
        "below; Lambda, NAT and logs are in the monthly tables.",
        "",
        "| item | " + " | ".join(f"{store} store" for store in STORES) + " |",
        "|---|" + "---|" * len(STORES),
        *(
            f"| {name} | " + " | ".join(f"${per_check(snapshot, store)[name]:.7f}" for store in STORES) + " |"
            for name in per_check(snapshot, STORES[0])
        ),
        "",
        "## Per month",
        "",
        f"Usage per binding per month: {a['audits_per_month']:g} audits, {a['verifies_per_binding_month']:g} verifies, "
        f"{a['rotations_per_binding_month']:g} rotations, {a['binds_per_binding_month']:.3f} binds and as many "
        f"unbinds (a binding lives a year on average). Lambda time is the measured time on moto plus "
        f"{a['exchange_rtt_seconds']:g} s per exchange request (overlapped {a['worker_concurrency']:g} at a time in "
        f"the worker), at {snapshot['template']['lambda_memory_gb']:g} GB. DynamoDB goes through the free gateway "
        f"endpoint; the exchange traffic and every other AWS API go through the NAT "
        f"({a['wire_overhead_bytes_per_request']:g} bytes of TCP and TLS framing per request and answer added to "
        f"what was measured). Secrets Manager's own KMS "
        f"requests (a data key per version written, a decrypt per value read) are modelled, not seen on moto. "
        f"SQS includes Lambda's idle long polls ({a['sqs_idle_requests_per_queue_month']:,.0f} requests per queue a "
        f"month); X-Ray the default sampling (1 trace a second, then {a['xray_sampled_fraction']:.0%}), "
        f"an upper bound. "
        f"Fixed: {a['nat_gateways']:g} NAT gateway and its Elastic IP ({a['hours_per_month']:g} h), both KMS keys "
        f"(always deployed), {snapshot['template']['alarms']} alarms, {snapshot['template']['dashboards']} dashboard, "
        f"~{a['custom_metrics']:g} custom metrics.",
        "",
    ]
    for store in STORES:
        out += [f"### `CredentialStore={store}`", "", *table(*cost_rows(snapshot, store)), ""]
    out += [
        "With `EgressIpCount` above 1 add a NAT gateway and Elastic IP per extra IP; with "
        "`AwsInterfaceEndpoints=true` the interface endpoints (arithmetic in "
        "[deploy.md](deploy.md#the-egress-addresses-users-whitelist)). SNS email "
        "deliveries are $2 per 100,000 beyond the first 1,000. The audit's run at 1M bindings is described in "
        "[audit.md](audit.md#1000000-bindings-on-paper).",
        "",
        "## Prices",
        "",
        snapshot["prices_note"],
        "",
        "| price | USD | unit | source |",
        "|---|---|---|---|",
        *(
            f"| {name} | {price['usd']:.10g} | {price['unit']} | {price['source']} |"
            for name, price in snapshot["prices"].items()
        ),
        "",
        f"Run: {n} bindings per store, {snapshot['elapsed_seconds']:g} s.",
        "",
    ]
    return "\n".join(out)


# ------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--bindings",
        type=int,
        default=60,
        help="bindings per store, spread over the 3 exchanges (60: full batches of 10)",
    )
    parser.add_argument("--write-docs", action="store_true", help="write docs/cost.json and docs/cost.md")
    parser.add_argument("--render-docs", action="store_true", help="render docs/cost.md from docs/cost.json only")
    args = parser.parse_args(argv)
    if args.render_docs:
        DOCS_MD.write_text(render_markdown(json.loads(DOCS_JSON.read_text())))
        return 0
    if args.bindings < 3:
        parser.error("--bindings must be at least 3 (one per exchange)")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    started = time.monotonic()
    measured = {}
    for store in STORES:
        print(f"measuring the {store} store over {args.bindings} bindings ...", file=sys.stderr, flush=True)
        measured[store] = measure_store(store, args.bindings)
    snapshot = snapshot_of(measured, args.bindings, time.monotonic() - started)
    print(render_text(snapshot))
    if args.write_docs:
        DOCS_JSON.write_text(json.dumps(snapshot, indent=1, sort_keys=False) + "\n")
        DOCS_MD.write_text(render_markdown(snapshot))
        print(f"wrote {DOCS_JSON.relative_to(ROOT)} and {DOCS_MD.relative_to(ROOT)}", file=sys.stderr)
    print(json.dumps(snapshot, separators=(",", ":")))
    return 0 if snapshot["ratio_at_largest"] <= MAX_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
