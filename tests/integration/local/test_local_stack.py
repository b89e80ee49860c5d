"""`make run` end to end: the local stack as a subprocess on free ports, driven by the CLI (as
subprocesses), by plain HTTP and by the README's own curl examples; alerts read from its
stdout; stopped with SIGINT, leaving no process behind.

The tests share one stack and run in file order: the last one stops it.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from keyhealth.audit.model import egress_for

ROOT = Path(__file__).resolve().parents[3]
READY_TIMEOUT = 40.0
PRINCIPAL_HEADER = "X-Keyhealth-Principal"
PLATFORM = "arn:aws:iam::333333333333:role/cli-tests"
OTHER_PLATFORM = "arn:aws:iam::444444444444:user/someone-else"


def free_port() -> int:
    """A port free now, below Linux's ephemeral range (32768-60999): a port the kernel hands out for
    binding to 0 is also one it hands to the suite's outgoing connections, and one of those took a
    probed port before the stack could listen on it (seen in `make test`)."""
    while True:
        port = random.randrange(20_000, 32_768)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_BASE_URL") and not k.startswith("KEYHEALTH_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "layers" / "shared")])
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


@dataclass
class LocalStack:
    process: subprocess.Popen[str]
    url: str
    lines: list[str] = field(default_factory=list)
    moto_url: str = ""

    def output(self) -> str:
        return "".join(self.lines)

    def wait_for_output(self, needle: str, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.output():
                return self.output()
            time.sleep(0.1)
        raise AssertionError(f"{needle!r} never printed; output ends with:\n{self.output()[-3000:]}")

    def cli(self, *args: str, stdin: str | None = None, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "keyhealth_cli", "--api-url", self.url, *args],
            cwd=ROOT,
            env=clean_env(**env),
            input=stdin or "",
            capture_output=True,
            text=True,
            timeout=60,
        )

    def demo_key(self, exchange: str, label: str) -> dict[str, Any]:
        keys = httpx.get(f"{self.url}/_local/demo-keys").json()["keys"]
        return next(k for k in keys if k["exchange"] == exchange and k["label"] == label)


@contextlib.contextmanager
def running_stack(*, wait_ready: bool = True, **extra: str) -> Iterator[LocalStack]:
    """`python -m local.stack` in its own process group, on free ports; killed on the way out."""
    port, moto_port = free_port(), free_port()
    env = clean_env(
        **extra,
        KEYHEALTH_PORT=str(port),
        KEYHEALTH_MOTO_PORT=str(moto_port),
        KEYHEALTH_BINANCE_PORT=str(free_port()),
        KEYHEALTH_BITGET_PORT=str(free_port()),
        KEYHEALTH_BINGX_PORT=str(free_port()),
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "local.stack"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: the finalizer can kill whatever it left
    )
    running = LocalStack(process, f"http://127.0.0.1:{port}", moto_url=f"http://127.0.0.1:{moto_port}")

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            running.lines.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while wait_ready:
            if process.poll() is not None:
                raise AssertionError(f"the stack exited with {process.returncode}:\n{running.output()}")
            try:
                if httpx.get(f"{running.url}/_local/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"the stack was not ready in {READY_TIMEOUT} s:\n{running.output()}")
            time.sleep(0.2)
        yield running
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError):  # a safety net for children (moto runs in-process)
            os.killpg(process.pid, signal.SIGKILL)
        reader.join(timeout=5)


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    with running_stack() as running:
        yield running


def test_the_start_screen_says_where_everything_is(stack):
    screen = stack.wait_for_output("Alerts (SNS messages")
    assert f"API          {stack.url}" in screen
    assert re.search(r"moto\s+http://127\.0\.0\.1:\d+", screen)
    for exchange in ("binance", "bitget", "bingx"):
        assert re.search(rf"{exchange}\s+http://127\.0\.0\.1:\d+", screen)
    healthy = stack.demo_key("binance", "healthy")
    assert healthy["api_key"] in screen  # demo secrets, to paste
    assert healthy["api_secret"] in screen
    assert "DemoPass2024" in screen  # Bitget's demo passphrase
    assert "make audit" in screen
    assert "curl" in screen


def test_the_readme_curl_examples_work_as_documented(stack):
    if not shutil.which("curl"):
        pytest.skip("curl is not installed")
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Run it locally", 1)[1].split("\n## ", 1)[0]
    block = next(b for b in re.findall(r"```sh\n(.*?)```", section, re.S) if "curl" in b and "API=" in b)
    script = block.replace("http://127.0.0.1:3000", stack.url)

    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], capture_output=True, text=True, timeout=60)

    assert done.returncode == 0, done.stderr
    answers = done.stdout.strip().splitlines()
    egress = json.loads(answers[0])
    assert (egress["egress_ips"], egress["planned"]) == (["127.0.0.2"], [])
    assert set(egress["canary"]) <= {"127.0.0.2"}  # the canary's results, once its first run is done
    bound = json.loads(answers[1])
    assert bound["binding"]["status"] == "healthy"
    assert json.loads(answers[2])["binding_id"] == bound["binding"]["binding_id"]
    assert [b["binding_id"] for b in json.loads(answers[3])["items"]] == [bound["binding"]["binding_id"]]
    assert json.loads(answers[4])["report"]["status"] == "healthy"
    rotated = json.loads(answers[5])
    assert rotated["binding"]["status"] == "degraded"
    assert [f["code"] for f in rotated["report"]["findings"]] == ["withdraw_enabled"]
    assert answers[6] == "204"
    # The rotation changed the status: the alert sink prints it as the email text.
    output = stack.wait_for_output("healthy -> degraded (withdraw_enabled)")
    assert "This key can withdraw funds" in output


def test_the_cli_binds_verifies_rotates_lists_and_unbinds(stack):
    healthy = stack.demo_key("binance", "healthy")
    degraded = stack.demo_key("binance", "withdraw-enabled")

    bound = stack.cli(
        "--principal", PLATFORM, "--json", "bind", "--user-id", "u-cli", "--exchange", "binance",
        "--scopes", "spot", "--label", "cli bot", "--api-key", healthy["api_key"],
        KEYHEALTH_API_SECRET=healthy["api_secret"],
    )  # fmt: skip
    assert bound.returncode == 0, bound.stderr
    assert healthy["api_secret"] not in bound.stdout + bound.stderr
    binding_id = json.loads(bound.stdout)["binding"]["binding_id"]

    verified = stack.cli("--principal", PLATFORM, "verify", binding_id)
    assert verified.returncode == 0, verified.stderr
    assert "status       healthy" in verified.stdout

    rotated = stack.cli(
        "--principal", PLATFORM, "rotate", binding_id, "--api-key", degraded["api_key"],
        "--api-secret-file", "-", stdin=degraded["api_secret"] + "\n",
    )  # fmt: skip
    assert rotated.returncode == 0, rotated.stderr  # degraded is usable: exit 0
    assert "withdraw_enabled" in rotated.stdout
    assert "Fix:" in rotated.stdout

    listed = stack.cli("--principal", PLATFORM, "list", "--user-id", "u-cli")
    assert listed.returncode == 0
    assert binding_id in listed.stdout
    assert "degraded" in listed.stdout
    assert stack.cli("--principal", OTHER_PLATFORM, "get", binding_id).returncode == 2  # another tenant: 404

    unbound = stack.cli("--principal", PLATFORM, "unbind", binding_id)
    assert (unbound.returncode, unbound.stdout.strip()) == (0, f"unbound {binding_id}")
    gone = stack.cli("--principal", PLATFORM, "get", binding_id)
    assert gone.returncode == 2
    assert gone.stderr.strip() == "keyhealth: error: 404 binding_not_found: no such binding"


def test_the_cli_sends_the_bitget_passphrase_and_reports_it_wrong(stack):
    key = stack.demo_key("bitget", "wrong-passphrase")

    refused = stack.cli(
        "--principal", PLATFORM, "bind", "--user-id", "u-cli", "--exchange", "bitget", "--scopes", "spot,futures",
        "--api-key", key["api_key"], KEYHEALTH_API_SECRET=key["api_secret"], KEYHEALTH_PASSPHRASE=key["passphrase"],
    )  # fmt: skip

    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "invalid_passphrase" in refused.stdout
    assert key["passphrase"] not in refused.stdout + refused.stderr


def test_the_cli_reports_a_failing_key_with_exit_1_and_its_remedy(stack):
    key = stack.demo_key("bingx", "egress IP not whitelisted")

    refused = stack.cli(
        "--principal", PLATFORM, "bind", "--user-id", "u-cli", "--exchange", "bingx", "--api-key", key["api_key"],
        "--api-secret-file", "-", stdin=key["api_secret"] + "\n",
    )  # fmt: skip

    assert refused.returncode == 1
    assert "422 " in refused.stdout
    assert "ip_not_whitelisted" in refused.stdout
    assert "Add 127.0.0.2" in refused.stdout


def test_the_cli_runs_an_audit_and_follows_it(stack):
    key = stack.demo_key("binance", "trading-expiring")
    body = {
        "user_id": "u-audit",
        "exchange": "binance",
        "api_key": key["api_key"],
        "api_secret": key["api_secret"],
        "scopes": key["scopes"],
    }
    answer = httpx.post(f"{stack.url}/v1/bindings", json=body, headers={"X-Keyhealth-Principal": PLATFORM})
    assert answer.status_code == 201, answer.text

    audited = stack.cli("--json", "audit", "--wait", "30")

    assert audited.returncode == 0, audited.stderr
    state = json.loads(audited.stdout)
    assert state["finished"]
    assert state["tasks_done"] == state["tasks_total"] >= 1
    assert state["summary"]["counts"]["total"] == state["tasks_total"]
    output = stack.wait_for_output(f"keyhealth: audit {state['run_id']}:")
    assert "trading rights lapse in" in output  # the reminder the audit raised for the expiring key
    human = stack.cli("audit", "--wait", "30")
    assert human.returncode == 0
    assert "checked in" in human.stdout


def test_plain_http_gets_the_api_gateway_behaviour(stack):
    who = {"X-Keyhealth-Principal": OTHER_PLATFORM}
    with httpx.Client(base_url=stack.url, headers=who) as client:
        bare, versioned = client.get("/egress-ips").json(), client.get("/v1/egress-ips").json()
        assert (bare["egress_ips"], bare["planned"]) == (versioned["egress_ips"], versioned["planned"])
        assert (bare["egress_ips"], bare["planned"]) == (["127.0.0.2"], [])
        assert client.get("/v1/bindings").json() == {"items": [], "next_cursor": None}  # nothing of other tenants
        missing = client.patch("/v1/bindings")
        assert (missing.status_code, missing.json()) == (403, {"message": "Missing Authentication Token"})
        bad = client.post("/v1/bindings", content=b"{", headers={"Content-Type": "application/json"})
        assert bad.status_code == 400
        assert "x-amzn-requestid" in bad.headers
        assert client.get("/_local/audit/no-such-run").status_code == 404


def test_bad_input_to_the_cli_is_one_line_and_exit_2(stack):
    for args in (
        ("bind", "--user-id", "u-1", "--exchange", "kraken"),
        ("list", "--limit", "500"),
        ("frobnicate",),
        ("--principal", PLATFORM, "bind", "--user-id", "not a valid id", "--exchange", "binance", "--api-key", "k"),
    ):
        done = stack.cli(*args, KEYHEALTH_API_SECRET="s" * 64)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert done.stderr.startswith("keyhealth: error: "), done.stderr
        assert done.stderr.count("\n") == 1, done.stderr
        assert "Traceback" not in done.stderr


def test_an_unreachable_api_is_one_line_and_exit_3():
    closed = free_port()

    done = subprocess.run(
        [sys.executable, "-m", "keyhealth_cli", "--api-url", f"http://127.0.0.1:{closed}", "list"],
        cwd=ROOT,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert done.returncode == 3
    assert done.stderr.startswith(f"keyhealth: error: cannot reach the API at http://127.0.0.1:{closed}")
    assert done.stderr.count("\n") == 1
    assert "Traceback" not in done.stderr


def test_the_bin_wrapper_runs_the_cli(stack):
    if not (ROOT / ".venv" / "bin" / "python").exists():
        pytest.skip("no .venv in the repository")
    done = subprocess.run(
        [str(ROOT / "bin" / "keyhealth"), "--api-url", stack.url, "egress-ips"],
        capture_output=True,
        text=True,
        timeout=30,
        env=clean_env(),
    )
    assert (done.returncode, done.stdout) == (0, "127.0.0.2\n")


def _raw_request(url: str, request: bytes) -> bytes:
    """One request written byte for byte (httpx would refuse to send these), and the answer."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        connection.sendall(request)
        chunks = []
        while chunk := connection.recv(65536):
            chunks.append(chunk)
            if b"\r\n\r\n" in b"".join(chunks) and b'"}' in chunk:
                break
        return b"".join(chunks)


def test_the_gateway_answers_what_api_gateway_answers_and_logs_nothing_forged(stack):
    with httpx.Client(base_url=stack.url) as client:
        for method in ("TRACE", "OPTIONS", "PROPFIND"):
            answer = client.request(method, "/v1/bindings")
            assert answer.status_code == 403, (method, answer.text)
            assert answer.json() == {"message": "Missing Authentication Token"}
        long = client.get("/v1/bindings", headers={PRINCIPAL_HEADER: "arn:aws:iam::111111111111:user/" + "a" * 10_000})
        assert long.status_code == 403, long.text
        assert long.json()["error"]["code"] == "forbidden"
        forged = "arn:aws:iam::111111111111:user/x\x1b[2J [api] GET /v1/forged -> 200"
        client.get("/v1/egress-ips", headers={PRINCIPAL_HEADER: forged})
    answer = _raw_request(stack.url, b"POST /v1/bindings HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n{}")
    assert answer.startswith(b"HTTP/1.1 400"), answer
    assert b"invalid Content-Length" in answer
    output = stack.output()
    assert "Traceback" not in output
    assert "\x1b" not in output  # the escape reached the log only escaped
    assert "\\x1b[2J [api] GET /v1/forged" in output
    assert not any(line.startswith("[api] GET /v1/forged") for line in output.splitlines())


@pytest.mark.parametrize("moment", ["while starting", "when idle"])
def test_sigterm_stops_the_stack_within_seconds(moment):
    with running_stack(wait_ready=moment == "when idle") as running:
        if moment == "while starting":
            # Printed once the signal handlers are in place and before anything is started.
            running.wait_for_output("Starting keyhealth local stack", timeout=READY_TIMEOUT)
        running.process.send_signal(signal.SIGTERM)
        assert running.process.wait(timeout=10) == 0, running.output()
        assert "Traceback" not in running.output()
        with pytest.raises(ProcessLookupError):
            os.killpg(running.process.pid, 0)


def test_ctrl_c_stops_the_stack_and_leaves_nothing_behind(stack):
    stack.process.send_signal(signal.SIGINT)

    assert stack.process.wait(timeout=15) == 0
    stack.wait_for_output("Stopped.")
    with pytest.raises(ProcessLookupError):
        os.killpg(stack.process.pid, 0)  # no process of its group is left (no orphan moto_server)
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{stack.url}/_local/health", timeout=1)


def test_the_local_stack_runs_on_the_kms_store_and_secrets_manager_stays_empty():
    """`CREDENTIAL_STORE=kms make run` (GitHub issue 11): bind, verify and unbind through the CLI; the
    credentials are an item of the credentials table, encrypted; Secrets Manager holds no secret."""
    import boto3

    with running_stack(CREDENTIAL_STORE="kms") as kms_stack:
        healthy = kms_stack.demo_key("binance", "healthy")
        bound = kms_stack.cli(
            "--principal", PLATFORM, "--json", "bind", "--user-id", "u-kms", "--exchange", "binance",
            "--scopes", "spot", "--api-key", healthy["api_key"],
            KEYHEALTH_API_SECRET=healthy["api_secret"],
        )  # fmt: skip
        assert bound.returncode == 0, bound.stderr + kms_stack.output()
        binding_id = json.loads(bound.stdout)["binding"]["binding_id"]
        verified = kms_stack.cli("--principal", PLATFORM, "verify", binding_id)
        assert verified.returncode == 0, verified.stderr
        assert "status       healthy" in verified.stdout

        session = boto3.session.Session(
            aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
        )
        secrets = session.client("secretsmanager", endpoint_url=kms_stack.moto_url)
        assert secrets.list_secrets(IncludePlannedDeletion=True)["SecretList"] == []
        dynamodb = session.client("dynamodb", endpoint_url=kms_stack.moto_url)
        [table] = [name for name in dynamodb.list_tables()["TableNames"] if name.endswith("credentials")]
        [item] = dynamodb.scan(TableName=table)["Items"]
        assert item["binding_id"]["S"] == binding_id
        assert healthy["api_secret"] not in json.dumps(item, default=str)
        assert kms_stack.cli("--principal", PLATFORM, "unbind", binding_id).returncode == 0


def test_the_local_stack_runs_a_worker_per_egress_source_and_shows_a_key_lacking_one():
    """`KEYHEALTH_EGRESS_SOURCES=127.0.0.2,127.0.0.3 make run` (GitHub issue 12): both addresses are egress IPs;
    a Bitget key that whitelisted only the first is refused with `ip_whitelist_incomplete` naming the second;
    the audit checks the bound keys from both addresses, each worker with its own queues."""
    with running_stack(KEYHEALTH_EGRESS_SOURCES="127.0.0.2,127.0.0.3") as two:
        ips = httpx.get(f"{two.url}/v1/egress-ips", headers={"X-Keyhealth-Principal": PLATFORM}).json()
        assert (ips["egress_ips"], ips["planned"]) == (["127.0.0.2", "127.0.0.3"], [])
        partial = two.demo_key("bitget", "one-egress-ip-of-several")
        assert partial["expected_codes"] == ["ip_whitelist_incomplete"]
        refused = two.cli(
            "--principal", PLATFORM, "--json", "bind", "--user-id", "u-ips", "--exchange", "bitget",
            "--scopes", "spot,futures", "--api-key", partial["api_key"],
            KEYHEALTH_API_SECRET=partial["api_secret"], KEYHEALTH_PASSPHRASE=partial["passphrase"],
        )  # fmt: skip
        assert refused.returncode == 1, refused.stderr + refused.stdout
        [finding] = json.loads(refused.stdout)["report"]["findings"]
        assert finding["code"] == "ip_whitelist_incomplete"
        assert "127.0.0.3" in finding["message"]
        bound = []
        for exchange, label in (("binance", "healthy"), ("bitget", "healthy"), ("bingx", "healthy spot and futures")):
            key = two.demo_key(exchange, label)
            body = {"user_id": "u-ips", "exchange": exchange, "api_key": key["api_key"], "scopes": key["scopes"]}
            body |= {"api_secret": key["api_secret"]} | ({"passphrase": key["passphrase"]} if key["passphrase"] else {})
            answer = httpx.post(f"{two.url}/v1/bindings", json=body, headers={"X-Keyhealth-Principal": PLATFORM})
            assert answer.status_code == 201, answer.text
            bound.append(answer.json()["binding"]["binding_id"])
        audited = two.cli("--json", "audit", "--wait", "60")
        assert audited.returncode == 0, audited.stderr + two.output()[-2000:]
        day = int(time.time() // 86_400)
        for binding_id in bound:
            got = httpx.get(f"{two.url}/v1/bindings/{binding_id}", headers={"X-Keyhealth-Principal": PLATFORM}).json()
            # checked by the worker of the IP the dispatcher named for it today, which reports its own address
            assert got["last_report"]["egress_ip"] == egress_for(binding_id, ("127.0.0.2", "127.0.0.3"), day)
            assert got["status"] == "healthy"


def test_the_doctor_passes_every_check_on_the_local_stack_and_names_a_failing_one():
    """`keyhealth doctor` (GitHub issue 12) against the local stack: the outputs, the API, a confirmed alert
    subscription (the local alert sink's) and the canary, which the stack runs at start from every source."""
    with running_stack(KEYHEALTH_EGRESS_SOURCES="127.0.0.2,127.0.0.3") as healthy:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # the canary's first run, at start
            canary = httpx.get(f"{healthy.url}/v1/egress-ips", headers={PRINCIPAL_HEADER: PLATFORM}).json()["canary"]
            if len(canary) == 2 and all(len(results) == 3 for results in canary.values()):
                break
            time.sleep(0.2)
        checked = healthy.cli("--principal", PLATFORM, "doctor")
        assert checked.returncode == 0, checked.stdout + checked.stderr
        lines = checked.stdout.splitlines()
        assert [line.split()[:2] for line in lines] == [
            ["PASS", "outputs"],
            ["PASS", "api"],
            ["PASS", "alerts"],
            ["PASS", "canary"],
        ]
        assert "every exchange answers every egress IP (2)" in lines[3]
        as_json = json.loads(healthy.cli("--principal", PLATFORM, "--json", "doctor").stdout)
        assert as_json["ok"] is True
    with running_stack(KEYHEALTH_CANARY_SECONDS="0") as silent:  # the canary never runs
        checked = silent.cli("--principal", PLATFORM, "doctor")
        assert checked.returncode == 1
        failing = [line for line in checked.stdout.splitlines() if line.startswith("FAIL")]
        assert [line.split()[1] for line in failing] == ["canary"]
        assert "no result for binance from 127.0.0.2" in checked.stdout
        assert "fix: the canary has not run from this IP" in checked.stdout
