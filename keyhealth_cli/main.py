"""keyhealth: the command line for platform engineers and ops, against the local or a deployed stack.

    keyhealth bind --user-id u-42 --exchange binance --scopes spot,futures --label "grid bot"
    keyhealth verify bnd_...      keyhealth rotate bnd_...      keyhealth unbind bnd_...
    keyhealth get bnd_...         keyhealth list [--user-id u-42]   keyhealth egress-ips
    keyhealth audit               (local stack only: run the scheduled audit now and follow it)
    keyhealth webhook set URL [--events TYPE,TYPE...]    keyhealth webhook show|test|delete|rotate-secret
    keyhealth events [--after evt_...] [--limit N] [--all]
    keyhealth migrate-credentials --to kms|secretsmanager [--dry-run] [--rate N] [--yes] [--stack NAME]
                                  (in this process, with your AWS credentials: not through the API)

Where: --api-url or KEYHEALTH_API_URL (default http://127.0.0.1:3000, the local stack). A deployed
stack's URL (the ApiUrl output) is called with SigV4 signatures made from your AWS credentials
(service execute-api); a loopback URL, or --local, is called unsigned and sends --principal (an IAM
ARN) as X-Keyhealth-Principal.

Secrets (bind, rotate): from KEYHEALTH_API_SECRET / KEYHEALTH_PASSPHRASE, from --api-secret-file
PATH (- for stdin; for PEM private keys), or a hidden prompt. --api-secret and --passphrase work
too but leave the secret in your shell history and the process list. The api key comes from
--api-key, KEYHEALTH_API_KEY or a prompt. A webhook's signing secret is printed once, on one line: by
`webhook set` when it creates the webhook, and by `webhook rotate-secret`; never by anything else.

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
import time
from collections.abc import Sequence
from typing import Any, NoReturn

from keyhealth_cli import doctor, migrate
from keyhealth_cli.api import PRINCIPAL_HEADER, Answer, ApiClient, default_api_url
from keyhealth_cli.errors import EXIT_OF_STATUS, OK, UNKNOWN, CliError, exit_of_http
from keyhealth_cli.render import (
    describe_binding,
    describe_delivery,
    describe_report,
    describe_secret,
    describe_webhook,
    error_line,
    events_table,
    progress,
    render_summary,
    table,
)

EXCHANGES = ("binance", "bitget", "bingx")
KEY_TYPES = ("hmac", "ed25519", "rsa")
STATUSES = ("healthy", "degraded", "failing", "unknown")
#: What `webhook set --events` can name (the server's default: all of them); `ping` is always delivered.
WEBHOOK_EVENTS = (
    "binding.status_changed",
    "binding.trading_permission_expiring",
    "binding.unreachable",
    "binding.deleted",
    "binding.planned_ip_missing",
)
NO_WEBHOOK = "no webhook is registered: keyhealth webhook set URL"


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """One line, not argparse's usage block."""
        raise CliError(f"{message} (see: {self.prog} --help)")


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
            progress(state.get("tasks_done", 0), state.get("tasks_total", 0), bool(state.get("summary")))
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


# ---- webhooks and the event feed ------------------------------------------------------------------
# A signing secret (whsec_...) is in two answers only: PUT /webhook's when it created the webhook, and
# POST /webhook/secret's. It is printed on one line of those commands' output and nowhere else: not in an
# error line, not in a log (the CLI logs nothing; httpx's request lines, if someone enables them, name the
# method and URL only, and no request carries a secret).


def _webhook_failed(args: argparse.Namespace, answer: Answer) -> int:
    """An error answer of a webhook or events command: the API's JSON with --json, else one line on stderr
    (a missing webhook with the command that registers one); the exit code of its HTTP status."""
    if isinstance(answer.body, dict) and "secret" in answer.body:  # an unexpected status with a secret: not shown
        answer = Answer(answer.status, {k: v for k, v in answer.body.items() if k != "secret"}, answer.headers)
    if args.json:
        print(json.dumps(answer.body, indent=2))
        return exit_of_http(answer.status)
    error = answer.body.get("error") if isinstance(answer.body, dict) else None
    if answer.status == 404 and isinstance(error, dict) and error.get("code") == "webhook_not_found":
        line = f"{NO_WEBHOOK} (404 webhook_not_found)"
    else:
        line = error_line(answer)
    print(f"keyhealth: error: {line}", file=sys.stderr)
    if answer.headers.get("Retry-After"):
        print(f"retry after {answer.headers['Retry-After']} s", file=sys.stderr)
    return exit_of_http(answer.status)


def _event_types(text: str) -> list[str]:
    events = [e.strip() for e in text.split(",") if e.strip()]
    if not events:
        raise CliError("--events: name at least one event type, or leave --events out for all of them")
    unknown = [e for e in events if e not in WEBHOOK_EVENTS]
    if unknown:
        raise CliError(f"--events: unknown event type(s) {', '.join(unknown)} (one of: {', '.join(WEBHOOK_EVENTS)})")
    return list(dict.fromkeys(events))  # the API refuses a repeated type


def cmd_webhook_set(api: ApiClient, args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"url": args.url}
    if args.events is not None:
        body["events"] = _event_types(args.events)
    answer = api.request("PUT", "/webhook", body=body)
    if answer.status != 200:
        return _webhook_failed(args, answer)
    if args.json:
        print(json.dumps(answer.body, indent=2))  # with "secret" when it created the webhook: for scripts
        return OK
    lines = describe_webhook(answer.body)
    if answer.body.get("secret"):
        lines += describe_secret(answer.body["secret"])
    else:
        lines.append("secret       unchanged: the webhook existed, its signing secret is kept")
    print("\n".join(lines))
    return OK


def cmd_webhook_show(api: ApiClient, args: argparse.Namespace) -> int:
    answer = api.request("GET", "/webhook")
    if answer.status != 200:
        return _webhook_failed(args, answer)
    # GET /webhook never carries a secret; drop one all the same, so that a server bug cannot print it here.
    shown = {k: v for k, v in answer.body.items() if k != "secret"}
    print(json.dumps(shown, indent=2) if args.json else "\n".join(describe_webhook(shown) + describe_delivery(shown)))
    return OK


def cmd_webhook_test(api: ApiClient, args: argparse.Namespace) -> int:
    answer = api.request("POST", "/webhook/test")
    if answer.status != 202:
        return _webhook_failed(args, answer)
    if args.json:
        print(json.dumps(answer.body, indent=2))
    else:
        print(
            f"ping {answer.body['event_id']} is on its way to the webhook "
            "(its delivery: keyhealth webhook show; the feed: keyhealth events)"
        )
    return OK


def cmd_webhook_delete(api: ApiClient, args: argparse.Namespace) -> int:
    answer = api.request("DELETE", "/webhook")
    if answer.status != 204:
        return _webhook_failed(args, answer)
    print(json.dumps({"deleted": "webhook"}) if args.json else "webhook deleted (the event feed keeps its events)")
    return OK


def cmd_webhook_rotate_secret(api: ApiClient, args: argparse.Namespace) -> int:
    answer = api.request("POST", "/webhook/secret")
    if answer.status != 200:
        return _webhook_failed(args, answer)
    if args.json:
        print(json.dumps(answer.body, indent=2))
        return OK
    expires = answer.body.get("previous_secret_expires_at")
    lines = [
        *describe_secret(answer.body["secret"]),
        f"previous     the old secret keeps signing each delivery, as a second v1= signature, until {expires}:",
        "             deploy the new one before then",
    ]
    print("\n".join(lines))
    return OK


def cmd_events(api: ApiClient, args: argparse.Namespace) -> int:
    items: list[dict[str, Any]] = []
    after = args.after
    while True:
        answer = api.request("GET", "/events", query={"after": after, "limit": args.limit})
        if answer.status != 200:
            return _webhook_failed(args, answer)
        page = answer.body["items"]
        items += page
        has_more = bool(answer.body.get("has_more"))
        if page:
            after = page[-1]["id"]
        if not (args.all and has_more and page):
            break
    last = after  # the last item's id, or --after when there were none
    if args.json:
        print(json.dumps({"items": items, "has_more": has_more, "last_event_id": last}, indent=2))
        return OK
    print(events_table(items) if items else f"no events{f' after {args.after}' if args.after else ''}")
    if last:  # what a poller resumes from
        more = (
            f"more: keyhealth events --after {last}, or --all"
            if has_more
            else f"resume: keyhealth events --after {last}"
        )
        print(f"last event: {last}  ({more})")
    return OK


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
    listing.set_defaults(run=cmd_list, limit_max=100)

    command("egress-ips", "the addresses users must whitelist").set_defaults(run=cmd_egress_ips)

    audit = command("audit", "local stack: run the scheduled audit now and follow its progress")
    audit.add_argument("--run-id", help="name the run (default: time-based)")
    audit.add_argument("--no-follow", action="store_true", help="print the run id and return at once")
    audit.add_argument("--wait", type=float, default=120.0, help="seconds to wait for the run to finish (120)")
    audit.set_defaults(run=cmd_audit)

    webhook = command("webhook", "the caller's webhook: where its binding events are POSTed, signed")
    actions = webhook.add_subparsers(dest="webhook_command", metavar="ACTION", parser_class=Parser)
    actions.required = True

    def action(name: str, help_text: str) -> Parser:
        return actions.add_parser(name, help=help_text, description=help_text, parents=[common])

    set_webhook = action("set", "register the webhook, or change its URL or events (its secret is kept)")
    set_webhook.add_argument("url", metavar="URL", help="https URL the platform receives events on")
    set_webhook.add_argument(
        "--events", metavar="TYPE,TYPE...", help=f"comma-separated, of: {', '.join(WEBHOOK_EVENTS)} (default: all)"
    )
    set_webhook.set_defaults(run=cmd_webhook_set)
    for name, help_text, run in (
        ("show", "the webhook and how its deliveries are going", cmd_webhook_show),
        ("test", "send it a ping event now", cmd_webhook_test),
        ("delete", "stop delivering events (the feed keeps them)", cmd_webhook_delete),
        ("rotate-secret", "a new signing secret; the old one signs too for a grace period", cmd_webhook_rotate_secret),
    ):
        action(name, help_text).set_defaults(run=run)

    events = command("events", "the caller's event feed, oldest first (what the webhook is sent)")
    events.add_argument("--after", metavar="EVENT_ID", help="only events after this one (resume a poll)")
    events.add_argument("--limit", type=int, help="per page, 1-500 (server default 100)")
    events.add_argument("--all", action="store_true", help="follow has_more to the end")
    events.set_defaults(run=cmd_events, limit_max=500)

    migrate.add_command(command)
    doctor.add_command(command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        for name, default in (("api_url", None), ("local", False), ("principal", None), ("region", None)):
            setattr(args, name, getattr(args, name, default))
        args.json = getattr(args, "json", False)
        args.timeout = getattr(args, "timeout", 30.0)
        if getattr(args, "run_local", None):
            return int(args.run_local(args))  # runs in this process on AWS, not through the API
        limit, most = getattr(args, "limit", None), getattr(args, "limit_max", 100)
        if limit is not None and not 1 <= limit <= most:
            raise CliError(f"--limit must be between 1 and {most}")
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
