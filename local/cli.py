"""keyhealth: the command line for platform engineers and ops, against the local or a deployed stack.

    keyhealth bind --user-id u-42 --exchange binance --scopes spot,futures --label "grid bot"
    keyhealth verify bnd_...      keyhealth rotate bnd_...      keyhealth unbind bnd_...
    keyhealth get bnd_...         keyhealth list [--user-id u-42]   keyhealth egress-ips
    keyhealth audit               (local stack only: run the scheduled audit now and follow it)

Where: --api-url or KEYHEALTH_API_URL (default http://127.0.0.1:3000, the local stack). A deployed
stack's URL (the ApiUrl output) is called with SigV4 signatures made from your AWS credentials
(service execute-api); a loopback URL, or --local, is called unsigned and sends --principal (an IAM
ARN) as X-Keyhealth-Principal.

Secrets (bind, rotate): from KEYHEALTH_API_SECRET / KEYHEALTH_PASSPHRASE, from --api-secret-file
PATH (- for stdin; for PEM private keys), or a hidden prompt. --api-secret and --passphrase work
too but leave the secret in your shell history and the process list. The api key comes from
--api-key, KEYHEALTH_API_KEY or a prompt.

Exit codes: 0 healthy or degraded (a usable key), or success for commands without a status;
1 failing (a 422 on bind or rotate, or a failing report); 2 usage or bad input (400, 404, 409, a
refused signature); 3 unknown or transient (the exchange or the API could not answer, 5xx,
the API unreachable, an audit that did not finish in time).
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import textwrap
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NoReturn
from urllib.parse import urlsplit

import httpx

PRINCIPAL_HEADER = "X-Keyhealth-Principal"
EXCHANGES = ("binance", "bitget", "bingx")
KEY_TYPES = ("hmac", "ed25519", "rsa")
STATUSES = ("healthy", "degraded", "failing", "unknown")
LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")

OK, FAILING, USAGE, UNKNOWN = 0, 1, 2, 3
EXIT_OF_STATUS = {"healthy": OK, "degraded": OK, "failing": FAILING, "unknown": UNKNOWN}


class CliError(Exception):
    """Ends the command with one line on stderr and an exit code."""

    def __init__(self, message: str, code: int = USAGE) -> None:
        super().__init__(message)
        self.code = code


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """One line, not argparse's usage block."""
        raise CliError(f"{message} (see: {self.prog} --help)")


@dataclass
class Answer:
    status: int
    body: Any
    headers: httpx.Headers


def default_api_url() -> str:
    return os.environ.get("KEYHEALTH_API_URL") or f"http://127.0.0.1:{os.environ.get('KEYHEALTH_PORT') or 3000}"


class ApiClient:
    """The keyhealth API over HTTP: SigV4-signed for a deployed stack, plain for the local one."""

    def __init__(
        self,
        base_url: str,
        *,
        local: bool | None = None,
        principal: str | None = None,
        region: str | None = None,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        split = urlsplit(base_url)
        if split.scheme not in ("http", "https") or not split.hostname:
            raise CliError(f"the API URL must be http(s)://host[:port][/v1], got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.local = local if local is not None else split.hostname in LOOPBACK
        self.principal = principal
        self.region = region
        self._http = httpx.Client(timeout=timeout, transport=transport)

    def close(self) -> None:
        self._http.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        params = {k: str(v) for k, v in (query or {}).items() if v is not None}
        url = str(httpx.URL(self.base_url + path, params=params or None))
        payload = json.dumps(body).encode() if body is not None else b""
        all_headers = {"Accept": "application/json", **(headers or {})}
        if body is not None:
            all_headers["Content-Type"] = "application/json"
        if self.local:
            if self.principal:
                all_headers[PRINCIPAL_HEADER] = self.principal
        else:
            all_headers = self._signed(method, url, payload, all_headers)
        try:
            response = self._http.request(method, url, content=payload or None, headers=all_headers)
        except httpx.TimeoutException:
            raise CliError(f"the API at {self.base_url} did not answer in time", UNKNOWN) from None
        except httpx.TransportError as error:
            hint = " (is `make run` running?)" if self.local else ""
            reason = str(error) or type(error).__name__
            raise CliError(f"cannot reach the API at {self.base_url}: {reason}{hint}", UNKNOWN) from None
        try:
            parsed = response.json() if response.content else None
        except ValueError:
            parsed = response.text
        return Answer(response.status_code, parsed, response.headers)

    def _signed(self, method: str, url: str, payload: bytes, headers: dict[str, str]) -> dict[str, str]:
        """SigV4 for API Gateway (service execute-api) with the caller's AWS credentials."""
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.exceptions import BotoCoreError
        from botocore.session import Session

        try:
            session = Session()
            credentials = session.get_credentials()
        except BotoCoreError as error:
            raise CliError(f"cannot read AWS credentials: {error}") from None
        if credentials is None:
            raise CliError("no AWS credentials found (set AWS_PROFILE or run `aws sso login`), or use --local")
        region = self.region or _region_of(url) or session.get_config_variable("region")
        if not region:
            raise CliError("cannot tell the API's region: pass --region or set AWS_REGION")
        request = AWSRequest(method=method, url=url, data=payload, headers=headers)
        SigV4Auth(credentials.get_frozen_credentials(), "execute-api", region).add_auth(request)
        return dict(request.headers.items())


def _region_of(url: str) -> str | None:
    """abc123.execute-api.eu-west-1.amazonaws.com -> eu-west-1."""
    parts = (urlsplit(url).hostname or "").split(".")
    if "execute-api" in parts and parts.index("execute-api") + 1 < len(parts):
        return parts[parts.index("execute-api") + 1]
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")


# ---- reading secrets -------------------------------------------------------------------------------


def _interactive() -> bool:
    return sys.stdin.isatty()


def read_value(
    flag_value: str | None, env_name: str, label: str, *, file: str | None = None, hidden: bool = True
) -> str:
    if flag_value:
        return flag_value
    if file:
        try:
            text = sys.stdin.read() if file == "-" else open(file, encoding="utf-8").read()  # noqa: SIM115
        except OSError as error:
            raise CliError(f"cannot read {label} from {file}: {error.strerror}") from None
        if not text.strip():
            raise CliError(f"{label} from {file} is empty")
        return text.strip("\n") if "-----BEGIN" in text else text.strip()
    if os.environ.get(env_name):
        return os.environ[env_name]
    if _interactive():
        value = getpass.getpass(f"{label}: ") if hidden else input(f"{label}: ")
        if value:
            return value
    raise CliError(f"no {label}: set {env_name}, or run in a terminal to be prompted")


def credentials(args: argparse.Namespace, exchange: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "api_key": read_value(args.api_key, "KEYHEALTH_API_KEY", "api key", hidden=False),
        "api_secret": read_value(args.api_secret, "KEYHEALTH_API_SECRET", "api secret", file=args.api_secret_file),
        "key_type": args.key_type,
    }
    if exchange == "bitget":
        body["passphrase"] = read_value(
            args.passphrase, "KEYHEALTH_PASSPHRASE", "passphrase", file=args.passphrase_file
        )
    elif args.passphrase or args.passphrase_file:
        raise CliError(f"{exchange} keys have no passphrase: drop --passphrase")
    return body


# ---- output ----------------------------------------------------------------------------------------


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(c) for c in header], *[["-" if c is None else str(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    out = [line.format(*cells[0]), line.format(*("-" * w for w in widths))]
    out += [line.format(*r) for r in cells[1:]]
    return "\n".join(x.rstrip() for x in out)


def describe_report(report: dict[str, Any] | None) -> list[str]:
    if not report:
        return []
    perms = report.get("permissions") or {}
    shown = ", ".join(f"{k}={'yes' if v else 'no' if v is not None else '?'}" for k, v in perms.items())
    out = [
        f"status       {report.get('status')}   (checked {report.get('checked_at')} from {report.get('egress_ip')})",
        f"permissions  {shown or '-'}",
        f"ip           restricted={report.get('ip_restricted')}  whitelist={report.get('ip_whitelist')}",
    ]
    if report.get("trading_expires_at"):
        out.append(f"trading      expires {report['trading_expires_at']}")
    findings = report.get("findings") or []
    out.append("findings     " + ("none" if not findings else ""))
    for f in findings:
        out.append(f"  - {f.get('code')} ({f.get('severity')}, {f.get('audience')})")
        out.append(textwrap.fill(f.get("message") or "", 110, initial_indent="      ", subsequent_indent="      "))
        if f.get("remedy"):
            out.append(
                textwrap.fill("Fix: " + f["remedy"], 110, initial_indent="      ", subsequent_indent="           ")
            )
        if f.get("exchange_code") is not None:
            out.append(f"      exchange said: {f.get('exchange_code')} {f.get('exchange_message') or ''}".rstrip())
    return out


def describe_binding(binding: dict[str, Any]) -> list[str]:
    return [
        f"binding      {binding.get('binding_id')}  ({binding.get('status')})",
        f"user         {binding.get('user_id')}   exchange {binding.get('exchange')}   label {binding.get('label')}",
        f"key          {binding.get('api_key_masked')} ({binding.get('key_type')})   "
        f"scopes {','.join(binding.get('scopes') or [])}",
        f"updated      {binding.get('updated_at')}   last checked {binding.get('last_checked_at')}",
    ]


def error_line(answer: Answer) -> str:
    body = answer.body
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        extra = f" (binding {error['binding_id']})" if error.get("binding_id") else ""
        field = f" [{error['field']}]" if error.get("field") else ""
        return f"{answer.status} {error.get('code')}: {error.get('message')}{field}{extra}"
    if isinstance(body, dict) and body.get("message"):
        return f"{answer.status} {body['message']}"
    return f"{answer.status} {str(body)[:200]}"


def exit_of_http(status: int) -> int:
    if status == 422:
        return FAILING
    if status in (429,) or status >= 500:
        return UNKNOWN
    return USAGE


# ---- commands --------------------------------------------------------------------------------------


def _checked(args: argparse.Namespace, answer: Answer, ok: tuple[int, ...]) -> int:
    """Print a {binding, report} answer (or {error, report}) and return the exit code."""
    body = answer.body if isinstance(answer.body, dict) else {}
    if args.json:
        print(json.dumps(answer.body, indent=2))
    if answer.status in ok:
        report = body.get("report") or body.get("last_report")
        binding = body.get("binding") or body
        if not args.json:
            print("\n".join(describe_binding(binding) + describe_report(report)))
        return EXIT_OF_STATUS.get((report or {}).get("status") or binding.get("status"), OK)
    if not args.json:
        lines = [f"keyhealth: error: {error_line(answer)}"]
        if answer.headers.get("Retry-After"):
            lines.append(f"retry after {answer.headers['Retry-After']} s")
        lines += describe_report(body.get("report"))
        print("\n".join(lines), file=sys.stderr if not body.get("report") else sys.stdout)
    return exit_of_http(answer.status)


def _idempotency(args: argparse.Namespace) -> dict[str, str]:
    return {"Idempotency-Key": args.idempotency_key} if args.idempotency_key else {}


def cmd_bind(api: ApiClient, args: argparse.Namespace) -> int:
    scopes = [s.strip() for s in args.scopes.split(",") if s.strip()]
    body = {
        "user_id": args.user_id,
        "exchange": args.exchange,
        **credentials(args, args.exchange),
        "label": args.label,
        "scopes": scopes,
    }
    answer = api.request("POST", "/bindings", body=body, headers=_idempotency(args))
    return _checked(args, answer, (201,))


def cmd_rotate(api: ApiClient, args: argparse.Namespace) -> int:
    current = api.request("GET", f"/bindings/{args.binding_id}")
    if current.status != 200:
        return _checked(args, current, (200,))
    body = credentials(args, current.body["exchange"])
    answer = api.request("PUT", f"/bindings/{args.binding_id}/credentials", body=body, headers=_idempotency(args))
    return _checked(args, answer, (200,))


def cmd_verify(api: ApiClient, args: argparse.Namespace) -> int:
    return _checked(args, api.request("POST", f"/bindings/{args.binding_id}/verify"), (200,))


def cmd_get(api: ApiClient, args: argparse.Namespace) -> int:
    return _checked(args, api.request("GET", f"/bindings/{args.binding_id}"), (200,))


def cmd_unbind(api: ApiClient, args: argparse.Namespace) -> int:
    answer = api.request("DELETE", f"/bindings/{args.binding_id}")
    if answer.status == 204:
        print(json.dumps({"unbound": args.binding_id}) if args.json else f"unbound {args.binding_id}")
        return OK
    return _checked(args, answer, (204,))


def cmd_list(api: ApiClient, args: argparse.Namespace) -> int:
    items: list[dict[str, Any]] = []
    cursor = args.cursor
    while True:
        query = {"user_id": args.user_id, "exchange": args.exchange, "status": args.status, "limit": args.limit}
        answer = api.request("GET", "/bindings", query={**query, "cursor": cursor})
        if answer.status != 200:
            return _checked(args, answer, (200,))
        items += answer.body["items"]
        cursor = answer.body.get("next_cursor")
        if not (args.all and cursor):
            break
    if args.json:
        print(json.dumps({"items": items, "next_cursor": cursor}, indent=2))
        return OK
    rows = [
        (
            b["binding_id"],
            b["user_id"],
            b["exchange"],
            b.get("label"),
            b["status"],
            ",".join(f["code"] for f in (b.get("last_report") or {}).get("findings") or []) or "-",
            b["api_key_masked"],
            b.get("last_checked_at"),
        )
        for b in items
    ]
    header = ("binding_id", "user_id", "exchange", "label", "status", "findings", "key", "last_checked")
    print(table(header, rows) if rows else "no bindings")
    if cursor:
        print(f"more: keyhealth list --cursor {cursor}  (or --all)")
    return OK


def cmd_egress_ips(api: ApiClient, args: argparse.Namespace) -> int:
    answer = api.request("GET", "/egress-ips")
    if answer.status != 200:
        return _checked(args, answer, (200,))
    print(json.dumps(answer.body, indent=2) if args.json else "\n".join(answer.body["egress_ips"]))
    return OK


def _progress(done: int, total: int, finished: bool) -> None:
    if not sys.stderr.isatty():
        return
    width = 30
    filled = width if finished else (width * done // total if total else 0)
    bar = "#" * filled + "-" * (width - filled)
    sys.stderr.write(f"\raudit [{bar}] {done}/{total} checked{' done' if finished else ''}   ")
    sys.stderr.flush()


def cmd_audit(api: ApiClient, args: argparse.Namespace) -> int:
    if not api.local:
        raise CliError(
            "the audit trigger is a local-stack route; on AWS run the dispatcher: "
            "aws lambda invoke --function-name <AuditDispatcherFunction> --payload '{}' /dev/stdout"
        )
    started = api.request("POST", "/_local/audit", body={"run_id": args.run_id} if args.run_id else {})
    if started.status != 202:
        raise CliError(f"the audit did not start: {error_line(started)}", exit_of_http(started.status))
    run_id = started.body["run_id"]
    if not args.json:
        print(f"audit {run_id}: {started.body.get('tasks')} binding(s) queued", file=sys.stderr)
    if args.no_follow:
        print(json.dumps(started.body) if args.json else run_id)
        return OK
    deadline = time.monotonic() + args.wait
    state: dict[str, Any] = {}
    while time.monotonic() < deadline:
        answer = api.request("GET", f"/_local/audit/{run_id}")
        if answer.status == 200:
            state = answer.body
            _progress(state.get("tasks_done", 0), state.get("tasks_total", 0), bool(state.get("summary")))
            if state.get("summary"):
                break
        time.sleep(0.25)
    if sys.stderr.isatty():
        sys.stderr.write("\n")
    summary = state.get("summary")
    if args.json:
        print(json.dumps(state, indent=2))
    if not summary:
        raise CliError(f"audit {run_id} did not finish within {args.wait:.0f} s (--wait)", UNKNOWN)
    if not args.json:
        print(render_summary(summary))
    return OK


def render_summary(summary: dict[str, Any]) -> str:
    counts = summary["counts"]
    out = [
        f"audit {summary['run_id']}: {counts['total']} checked in {summary.get('duration_seconds')} s: "
        f"{counts['healthy']} healthy, {counts['degraded']} degraded, {counts['failing']} failing, "
        f"{counts['unknown']} unknown",
    ]
    rows = [
        (exchange, r["total"], r["healthy"], r["degraded"], r["failing"], r["unknown"])
        for exchange, r in sorted(summary.get("by_exchange", {}).items())
    ]
    if rows:
        out.append(table(("exchange", "checked", "healthy", "degraded", "failing", "unknown"), rows))
    for item in summary.get("newly_failing") or []:
        out.append(f"newly failing: {json.dumps(item)}")
    for item in summary.get("incidents") or []:
        out.append(f"INCIDENT: {json.dumps(item)}")
    return "\n".join(out)


# ---- parser ----------------------------------------------------------------------------------------


def build_parser() -> Parser:
    common = Parser(add_help=False)
    # SUPPRESS: the same options work before or after the command, without the later one resetting them.
    common.add_argument("--api-url", default=argparse.SUPPRESS, help="the API (env KEYHEALTH_API_URL)")
    common.add_argument("--local", action="store_true", default=argparse.SUPPRESS, help="unsigned, local stack")
    common.add_argument(
        "--principal", default=argparse.SUPPRESS, help=f"local only: the caller's IAM ARN ({PRINCIPAL_HEADER})"
    )
    common.add_argument("--region", default=argparse.SUPPRESS, help="SigV4 region (default: from the URL)")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="JSON output, for scripts")
    common.add_argument("--timeout", type=float, default=argparse.SUPPRESS, help="HTTP timeout, seconds (30)")

    parser = Parser(
        prog="keyhealth",
        description=__doc__.split("\n\n")[0],
        epilog="Exit codes: 0 healthy/degraded/success, 1 failing, 2 usage or bad input, 3 unknown or transient.",
        parents=[common],
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    commands.required = True

    def command(name: str, help_text: str) -> Parser:
        return commands.add_parser(name, help=help_text, description=help_text, parents=[common])

    def secret_options(p: Parser) -> None:
        p.add_argument("--api-key", help="the API key (env KEYHEALTH_API_KEY, or a prompt)")
        p.add_argument("--api-secret", help="discouraged: use KEYHEALTH_API_SECRET, --api-secret-file or the prompt")
        p.add_argument("--api-secret-file", metavar="PATH", help="read the secret (or PEM private key); - for stdin")
        p.add_argument("--passphrase", help="Bitget; discouraged: use KEYHEALTH_PASSPHRASE or the prompt")
        p.add_argument("--passphrase-file", metavar="PATH", help="Bitget: read the passphrase from a file")
        p.add_argument("--key-type", choices=KEY_TYPES, default="hmac", help="hmac (default); binance: ed25519, rsa")
        p.add_argument("--idempotency-key", help="retry-safe: the same key and body answer the first result")

    bind = command("bind", "check a key live and store it if usable")
    bind.add_argument("--user-id", required=True, help="the platform's id for the key's owner")
    bind.add_argument("--exchange", required=True, choices=EXCHANGES)
    bind.add_argument("--scopes", default="spot", help="comma-separated: spot, futures (default spot)")
    bind.add_argument("--label", help="a name people recognise, e.g. 'grid bot'")
    secret_options(bind)
    bind.set_defaults(run=cmd_bind)

    rotate = command("rotate", "check new credentials; swap them in only if usable")
    rotate.add_argument("binding_id")
    secret_options(rotate)
    rotate.set_defaults(run=cmd_rotate)

    for name, help_text, run in (
        ("verify", "re-check a binding now and store the report", cmd_verify),
        ("get", "one binding with its last report", cmd_get),
        ("unbind", "delete a binding (its secret is scheduled for deletion)", cmd_unbind),
    ):
        sub = command(name, help_text)
        sub.add_argument("binding_id")
        sub.set_defaults(run=run)

    listing = command("list", "the caller's bindings, newest first")
    listing.add_argument("--user-id")
    listing.add_argument("--exchange", choices=EXCHANGES)
    listing.add_argument("--status", choices=STATUSES)
    listing.add_argument("--limit", type=int, default=50, help="per page, 1-100")
    listing.add_argument("--cursor")
    listing.add_argument("--all", action="store_true", help="follow next_cursor to the end")
    listing.set_defaults(run=cmd_list)

    command("egress-ips", "the addresses users must whitelist").set_defaults(run=cmd_egress_ips)

    audit = command("audit", "local stack: run the scheduled audit now and follow its progress")
    audit.add_argument("--run-id", help="name the run (default: time-based)")
    audit.add_argument("--no-follow", action="store_true", help="print the run id and return at once")
    audit.add_argument("--wait", type=float, default=120.0, help="seconds to wait for the run to finish (120)")
    audit.set_defaults(run=cmd_audit)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        for name, default in (("api_url", None), ("local", False), ("principal", None), ("region", None)):
            setattr(args, name, getattr(args, name, default))
        args.json = getattr(args, "json", False)
        args.timeout = getattr(args, "timeout", 30.0)
        if getattr(args, "limit", 50) is not None and not 1 <= getattr(args, "limit", 50) <= 100:
            raise CliError("--limit must be between 1 and 100")
        principal = args.principal or os.environ.get("KEYHEALTH_PRINCIPAL")
        api = ApiClient(
            args.api_url or default_api_url(),
            local=True if args.local else None,
            principal=principal,
            region=args.region,
            timeout=args.timeout,
        )
        if args.principal and not api.local:
            raise CliError("--principal works against the local stack only (deployed stacks use your AWS identity)")
        try:
            return args.run(api, args)
        finally:
            api.close()
    except CliError as error:
        print(f"keyhealth: error: {error}", file=sys.stderr)
        return error.code
    except KeyboardInterrupt:
        print("keyhealth: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
