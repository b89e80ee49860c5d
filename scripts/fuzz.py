"""`make fuzz`: schemathesis against the local stack, from docs/openapi.json, and a canary on the logs.

1. Starts `python -m local.stack` on free ports (its own process group) and waits for /_local/health.
2. Binds every usable demo key (GET /_local/demo-keys) for the fuzz tenant, so that operations on
   one binding can reach their 2xx paths; scripts/fuzz_hooks.py feeds those ids and the demo
   bodies to some generated cases (see there).
3. Runs `st run` on the document with the security scheme taken out (the local stack has no SigV4:
   the caller is the X-Keyhealth-Principal header the hooks set; auth checks would only say so),
   every check that means something here, a fixed seed, a number of examples per operation and a
   time budget.
4. Stops the stack (SIGINT, waits), counts the requests the stack served per operation and status,
   and fails on any schemathesis failure or error, on fewer requests than `--min-requests`, and if
   the stack printed a demo secret or passphrase (or a PEM key the hooks sent) after its start screen
   (which lists the demo keys on purpose).

The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
DOCUMENT = ROOT / "docs" / "openapi.json"
OUT = ROOT / "build" / "fuzz"
HOOKS = ROOT / "scripts" / "fuzz_hooks.py"
PRINCIPAL = "arn:aws:iam::555555555555:user/fuzz"
READY_TIMEOUT = 60.0
START_SCREEN_END = "Alerts (SNS messages, as email subscribers read them) and requests are printed below."
# Checks that say nothing against the local stack: it has no SigV4 (ignored_auth), and API Gateway
# answers a method a path does not have with 403 Missing Authentication Token, not 405
# (unsupported_method, allow_header_conformance). not_a_server_error and positive_data_acceptance
# are replaced by the hooks' keyhealth_* checks, which allow exactly what the document says.
EXCLUDED_CHECKS = (
    "ignored_auth",
    "unsupported_method",
    "allow_header_conformance",
    "not_a_server_error",
    "positive_data_acceptance",
)
_REQUEST_LINE = re.compile(r"^\[api\] (?P<method>[A-Z]+) (?P<path>\S+) -> (?P<status>\d{3}) ")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class LocalStack:
    """`python -m local.stack` as a child process in its own group; everything it prints is kept."""

    def __init__(self) -> None:
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.endswith("_BASE_URL") and not k.startswith("KEYHEALTH_")}
        env.update(
            PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "layers" / "shared")]),
            PYTHONUNBUFFERED="1",
            KEYHEALTH_PORT=str(self.port),
            KEYHEALTH_MOTO_PORT=str(free_port()),
            KEYHEALTH_BINANCE_PORT=str(free_port()),
            KEYHEALTH_BITGET_PORT=str(free_port()),
            KEYHEALTH_BINGX_PORT=str(free_port()),
        )
        self.process = subprocess.Popen(
            [sys.executable, "-m", "local.stack"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.url = f"http://127.0.0.1:{self.port}"

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            if self.process.poll() is not None:
                raise SystemExit(f"fuzz: the local stack exited with {self.process.returncode}:\n{''.join(self.lines)}")
            try:
                if httpx.get(f"{self.url}/_local/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"fuzz: the local stack was not ready in {READY_TIMEOUT:.0f} s")
            time.sleep(0.2)

    def stop(self) -> int | None:
        """SIGINT (Ctrl-C), then wait; whatever is left of its process group is killed."""
        code = None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                code = self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        else:
            code = self.process.returncode
        with contextlib.suppress(ProcessLookupError):  # a safety net for its children
            os.killpg(self.process.pid, signal.SIGKILL)
        self._reader.join(timeout=5)
        return code


def bind_demo_keys(client: httpx.Client, keys: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every usable demo key bound for the fuzz tenant: {binding_id, exchange, rotate_body}."""
    bound = []
    for key in keys:
        if key["expected_status"] == "failing":
            continue
        body = bind_body(key)
        for _attempt in range(5):
            answer = client.post("/v1/bindings", json=body)
            if answer.status_code != 503:
                break
            time.sleep(float(answer.headers.get("retry-after", "1")))  # Bitget: one check per second
        if answer.status_code != 201:
            raise SystemExit(f"fuzz: binding the demo key {key['exchange']} {key['label']!r} answered {answer.text}")
        bound.append(
            {
                "binding_id": answer.json()["binding"]["binding_id"],
                "exchange": key["exchange"],
                "rotate_body": {
                    k: v for k, v in body.items() if k in ("api_key", "api_secret", "passphrase", "key_type")
                },
            }
        )
    return bound


def bind_body(key: dict[str, Any]) -> dict[str, Any]:
    body = {
        "user_id": "u-fuzz",
        "exchange": key["exchange"],
        "api_key": key["api_key"],
        "api_secret": key["api_secret"],
        "key_type": key["key_type"],
        "scopes": key["scopes"],
        "label": f"demo {key['label']}",
    }
    if key.get("passphrase") is not None:
        body["passphrase"] = key["passphrase"]
    return body


def pem_keys() -> dict[str, list[str]]:
    """Fixed private keys for the document's PEM formats (generating RSA keys per example is slow)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    def pkcs8(key: Any) -> str:
        return key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()

    return {
        "ed25519": [pkcs8(ed25519.Ed25519PrivateKey.generate()) for _ in range(3)],
        "rsa": [pkcs8(rsa.generate_private_key(public_exponent=65537, key_size=2048)) for _ in range(2)],
    }


def fuzz_document() -> Path:
    """docs/openapi.json without its SigV4 scheme: locally the caller is a header, not a signature."""
    document = json.loads(DOCUMENT.read_text())
    document.pop("security", None)
    document.get("components", {}).pop("securitySchemes", None)
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / "openapi.json"
    path.write_text(json.dumps(document, indent=1))
    return path


def secrets_of(keys: list[dict[str, Any]], pems: dict[str, list[str]]) -> set[str]:
    """The canary values: each demo secret and passphrase, and each base64 line of a PEM key."""
    values: set[str] = set()
    pem_texts = [pem for typed in pems.values() for pem in typed]
    for text in [k.get("api_secret") for k in keys] + [k.get("passphrase") for k in keys] + pem_texts:
        if not text:
            continue
        if "-----BEGIN" in text:
            values.update(line for line in text.splitlines() if len(line) >= 16 and not line.startswith("-----"))
        else:
            values.add(text)
    return values


def template_of(path: str, templates: list[str]) -> str | None:
    path = path.removeprefix("/v1")
    for template in templates:
        pattern = "^" + re.sub(r"\\\{[a-z_]+\\\}", "[^/]+", re.escape(template)) + "$"
        if re.match(pattern, path):
            return template
    return None


def count_requests(lines: list[str], document: dict[str, Any]) -> dict[str, Counter[str]]:
    templates = sorted(document["paths"], key=len, reverse=True)
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for line in lines:
        found = _REQUEST_LINE.match(line)
        if not found:
            continue
        template = template_of(found["path"], templates)
        if template and found["method"].lower() in document["paths"][template]:
            operation = f"{found['method']} {template}"
        else:  # the coverage phase's probes: API Gateway (and the local one) answer 403
            operation = "(a method or path the API does not have)"
        counts[operation][found["status"]] += 1
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--max-examples", type=int, default=300, help="examples per operation and phase")
    parser.add_argument(
        "--max-time", type=int, default=0, help="schemathesis' own time budget (it then repeats until spent); 0: none"
    )
    parser.add_argument("--seed", type=int, default=20261201)
    parser.add_argument("--workers", default="2")
    parser.add_argument(
        "--phases", default="coverage,fuzzing,stateful", help="schemathesis phases (the document has no examples)"
    )
    parser.add_argument(
        "--timeout", type=int, default=300, help="the time budget: schemathesis is stopped and the run fails after it"
    )
    parser.add_argument("--min-requests", type=int, default=2000, help="fail with fewer requests than this")
    args = parser.parse_args()

    started = time.monotonic()
    stack = LocalStack()
    result: dict[str, Any] = {"fuzz": "failed"}
    try:
        stack.wait_ready()
        with httpx.Client(base_url=stack.url, headers={"X-Keyhealth-Principal": PRINCIPAL}, timeout=30) as client:
            keys = client.get("/_local/demo-keys").json()["keys"]
            bound = bind_demo_keys(client, keys)
        usable = [bind_body(k) for k in keys if k["expected_status"] != "failing"]
        pems = pem_keys()
        state = {"principal": PRINCIPAL, "demo_binds": usable, "bound": bound, "pem_keys": pems}
        report_dir = OUT / "report"
        report_dir.mkdir(parents=True, exist_ok=True)
        for old in report_dir.glob("*"):
            old.unlink()
        command = [
            str(Path(sys.executable).with_name("st")),
            "run",
            str(fuzz_document()),
            "--url",
            f"{stack.url}/v1",
            "--checks",
            "all",
            "--exclude-checks",
            ",".join(EXCLUDED_CHECKS),
            "--phases",
            args.phases,
            "--max-examples",
            str(args.max_examples),
            "--seed",
            str(args.seed),
            "--workers",
            args.workers,
            "--report",
            "json",
            "--report-dir",
            str(report_dir),
            "--no-color",
        ]
        if args.max_time:
            command[command.index("--seed") : command.index("--seed")] = ["--max-time", str(args.max_time)]
        env = {**os.environ, "SCHEMATHESIS_HOOKS": str(HOOKS), "KEYHEALTH_FUZZ_STATE": json.dumps(state)}
        first_line = len(stack.lines)
        fuzz_started = time.monotonic()
        print(f"fuzz: {' '.join(command[1:])}", flush=True)
        try:
            done = subprocess.run(command, cwd=ROOT, env=env, text=True, check=False, timeout=args.timeout)
            st_code = done.returncode
        except subprocess.TimeoutExpired:
            st_code = None  # subprocess.run killed it
        fuzz_seconds = time.monotonic() - fuzz_started
    finally:
        stack_code = stack.stop()

    output = "".join(stack.lines)
    (OUT / "stack.log").write_text(output)  # for a failure's story (demo secrets only in its start screen)
    after_start = output.split(START_SCREEN_END, 1)[1] if START_SCREEN_END in output else output
    leaks = sorted(s for s in secrets_of(keys, pems) if s in after_start)
    document = json.loads(DOCUMENT.read_text())
    counts = count_requests(stack.lines[first_line:], document)
    reports = sorted(report_dir.glob("*.json"))
    report = json.loads(reports[-1].read_text()) if reports else {}
    failures = report.get("test_cases", {}).get("unique_failures", 0)
    errors = len(report.get("errors", []))
    requests = sum(sum(c.values()) for c in counts.values())

    print("\nfuzz: requests the stack served, per operation and status")
    for operation in sorted(counts):
        statuses = ", ".join(f"{s}: {n}" for s, n in sorted(counts[operation].items()))
        print(f"  {operation:<42} {sum(counts[operation].values()):>6}   {statuses}")
    print(f"  {'total':<42} {requests:>6}")
    traceback_lines = output.count("Traceback")
    problems = []
    if st_code is None:
        problems.append(f"schemathesis did not finish within {args.timeout} s")
    elif st_code != 0:
        problems.append(f"schemathesis exited with {st_code}")
    if failures or errors:
        problems.append(f"{failures} failure(s), {errors} error(s)")
    if requests < args.min_requests:
        problems.append(f"only {requests} requests (at least {args.min_requests} wanted)")
    if leaks:
        problems.append(f"the stack printed {len(leaks)} demo secret(s) or passphrase(s)")
    if traceback_lines:
        problems.append(f"the stack printed {traceback_lines} traceback(s)")
    if stack_code != 0:
        problems.append(f"the stack exited with {stack_code}")
    print(f"fuzz: {'; '.join(problems) if problems else 'passed'}")
    result = {
        "fuzz": "failed" if problems else "passed",
        "requests": requests,
        "per_operation": {op: sum(c.values()) for op, c in sorted(counts.items())},
        "statuses": {op: dict(sorted(c.items())) for op, c in sorted(counts.items())},
        "test_cases": report.get("test_cases", {}).get("generated", 0),
        "failures": failures,
        "errors": errors,
        "canary_leaks": len(leaks),
        "phases": {name: phase["status"] for name, phase in report.get("phases", {}).items()},
        "seed": args.seed,
        "max_examples": args.max_examples,
        "fuzz_seconds": round(fuzz_seconds, 1),
        "total_seconds": round(time.monotonic() - started, 1),
    }
    print(json.dumps(result))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
