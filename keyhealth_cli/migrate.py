"""keyhealth migrate-credentials: move every binding's credentials to the other store (docs/cli.md).

The one command that does not talk to the HTTP API: it runs the migration use case
(keyhealth.bindings.migration) in this process, with the operator's AWS credentials, on the stack's tables,
secrets and keys. A Lambda would stop after 15 minutes (a million bindings at 25 a second take 11 hours);
here the run is as long as it needs, and since every step is idempotent an interrupted run is resumed by
running the command again. Everything is built by keyhealth.wiring's Container, from the same settings the
functions read: the environment (TABLE_NAME, SECRET_PREFIX, CREDENTIALS_TABLE_NAME, ...), or `--stack NAME`,
which reads them from the stack's outputs and parameters (cloudformation:DescribeStacks).

It needs the `keyhealth` library (layers/shared) and boto3, which the installed CLI does not carry: from a
checkout (bin/keyhealth) it finds layers/shared next to this package.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keyhealth_cli.errors import OK, UNKNOWN, USAGE, CliError
from keyhealth_cli.render import progress, table

if TYPE_CHECKING:
    from keyhealth.bindings.migration import MigrationReport
    from keyhealth.config import Settings

STORES = ("kms", "secretsmanager")
DEFAULT_RATE = 25.0  # keyhealth.bindings.migration.DEFAULT_RATE (not imported: --help must not need the library)
MAX_RATE = 50.0
INTERRUPTED = 130

#: What the migration needs set, whichever store it moves to (both stores are read and written).
REQUIRED = ("TABLE_NAME", "SECRET_PREFIX", "CREDENTIALS_TABLE_NAME", "CREDENTIALS_KMS_KEY_ID", "STACK_NAME")

#: The stack's outputs and parameters that are the functions' settings (template.yaml's Globals).
STACK_OUTPUTS = {
    "TableName": "TABLE_NAME",
    "SecretsKeyArn": "SECRETS_KMS_KEY_ID",
    "CredentialsTableName": "CREDENTIALS_TABLE_NAME",
    "CredentialsKeyArn": "CREDENTIALS_KMS_KEY_ID",
}
STACK_PARAMETERS = {"CredentialStore": "CREDENTIAL_STORE", "SecretRecoveryDays": "SECRET_RECOVERY_DAYS"}


def add_command(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    """`keyhealth migrate-credentials`, added to the CLI's parser by main.build_parser."""
    sub = command("migrate-credentials", "move every binding's credentials to the other store (resumable)")
    sub.add_argument("--to", required=True, choices=STORES, dest="target", help="the store to move them to")
    sub.add_argument("--dry-run", action="store_true", help="count what would be moved; write nothing")
    sub.add_argument(
        "--rate",
        type=float,
        default=DEFAULT_RATE,
        help=f"bindings per second, at most {MAX_RATE:g} (default {DEFAULT_RATE:g}: half the Secrets Manager quota)",
    )
    sub.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    sub.add_argument("--stack", help="read the settings from this CloudFormation stack (default: the environment)")
    sub.set_defaults(run=None, run_local=run)


# ---- settings -------------------------------------------------------------------------------------


def stack_environment(stack: Mapping[str, Any]) -> dict[str, str]:
    """The functions' settings from a DescribeStacks answer's stack: its outputs, its parameters, and the
    names the template derives from the stack's name."""
    name = str(stack["StackName"])
    env = {"STACK_NAME": name, "SECRET_PREFIX": f"keyhealth/{name}/"}
    for output in stack.get("Outputs") or []:
        if output.get("OutputKey") in STACK_OUTPUTS:
            env[STACK_OUTPUTS[output["OutputKey"]]] = str(output["OutputValue"])
    for parameter in stack.get("Parameters") or []:
        if parameter.get("ParameterKey") in STACK_PARAMETERS:
            env[STACK_PARAMETERS[parameter["ParameterKey"]]] = str(parameter["ParameterValue"])
    return env


def settings_for(args: argparse.Namespace, aws_client: Callable[[str], Any]) -> Settings:
    from keyhealth.config import ConfigError, Settings

    if args.stack:
        try:
            stacks = aws_client("cloudformation").describe_stacks(StackName=args.stack)["Stacks"]
        except Exception as error:  # botocore's errors: the stack's name and the code, never a payload
            code = getattr(error, "response", {}).get("Error", {}).get("Code", type(error).__name__)
            raise CliError(f"cannot read the stack {args.stack}: {code}") from None
        env = stack_environment(stacks[0])
    else:
        env = dict(os.environ)
    missing = [name for name in REQUIRED if not env.get(name, "").strip()]
    if missing:
        where = f"the stack {args.stack} has no" if args.stack else "set"
        raise CliError(f"migrate-credentials needs both stores: {where} {', '.join(missing)} (or use --stack NAME)")
    try:
        return Settings.from_env(env)
    except ConfigError as error:
        raise CliError(str(error)) from None


def _library() -> None:
    """Make `import keyhealth` work from a checkout (layers/shared next to this package)."""
    try:
        import keyhealth  # noqa: F401
    except ImportError:
        shared = Path(__file__).resolve().parents[1] / "layers" / "shared"
        if not (shared / "keyhealth").is_dir():
            raise CliError(
                "migrate-credentials runs the migration in this process and needs the keyhealth library and "
                "boto3: run it from a checkout, with bin/keyhealth"
            ) from None
        sys.path.insert(0, str(shared))


# ---- the command ----------------------------------------------------------------------------------


def run(args: argparse.Namespace, *, aws_client: Callable[[str], Any] | None = None) -> int:
    """The command; `aws_client` (service name -> client) replaces the default boto3 clients in tests."""
    if not 0 < args.rate <= MAX_RATE:
        raise CliError(f"--rate must be above 0 and at most {MAX_RATE:g} (Secrets Manager's write quota per second)")
    _library()
    if args.region:
        os.environ["AWS_DEFAULT_REGION"] = args.region
    from keyhealth import wiring
    from keyhealth.bindings.migration import Migration, MigrationOptions
    from keyhealth.config import Settings
    from keyhealth.domain.errors import StorageAdapterError

    clients = aws_client or wiring.Environment(settings=Settings()).aws_client
    config = settings_for(args, clients)
    container = wiring.Container(wiring.Environment(settings=config, aws_client=clients))
    try:
        deps = container.credential_migration()
    except StorageAdapterError as error:
        raise CliError(f"the credential stores could not be set up: {error.reason}") from None
    source = next(name for name in STORES if name != args.target)
    if config.credential_store != args.target and not args.dry_run:
        print(
            f"keyhealth: warning: new bindings still go to {config.credential_store} (CREDENTIAL_STORE): deploy "
            f"with CredentialStore={args.target} first, or run this again afterwards to move those too",
            file=sys.stderr,
        )
    if not args.dry_run and not args.yes:
        _confirm(f"move every binding's credentials from {source} to {args.target} (old copies scheduled for deletion)")

    def shown(done: int, total: int) -> None:
        progress(done, total, done >= total, label="migrate", verb="bindings")

    options = MigrationOptions(target=args.target, dry_run=args.dry_run, rate_per_second=args.rate)
    migration = Migration(deps, options, progress=None if args.json else shown)
    try:
        report = migration.run()
    except KeyboardInterrupt:
        _end_progress(args)
        report = migration.report()
        print_report(report, as_json=args.json, interrupted=True)
        return INTERRUPTED
    _end_progress(args)
    print_report(report, as_json=args.json)
    return OK if report.ok else UNKNOWN


def _confirm(what: str) -> None:
    if not sys.stdin.isatty():
        raise CliError(f"about to {what}: add --yes to go ahead without a terminal (or --dry-run to count)", USAGE)
    answer = input(f"{what}? [y/N] ").strip().lower()
    if answer not in ("y", "yes"):
        raise CliError("not confirmed: nothing was done", USAGE)


def _end_progress(args: argparse.Namespace) -> None:
    if not args.json and sys.stderr.isatty():
        sys.stderr.write("\n")


# ---- the report -----------------------------------------------------------------------------------


def render_report(report: MigrationReport, *, interrupted: bool = False) -> str:
    """The report as text: the counts, then every failed binding (ids, step and reason: never a credential)."""
    verb = "would move" if report.dry_run else "moved"
    state = (
        "interrupted: run it again to resume"
        if interrupted
        else "complete"
        if report.complete
        else f"stopped ({report.stopped_by}): run it again to resume"
    )
    out = [f"migrate-credentials to {report.target}{' (dry run)' if report.dry_run else ''}: {state}"]
    rows = [
        ("bindings", report.total),
        ("seen", report.seen),
        (verb, report.moved),
        ("already there", report.already_there),
        ("old copies left live" if report.dry_run else "old copies left live, scheduled now", report.leftovers),
    ]
    if not report.dry_run:
        rows += [
            ("old copies scheduled for deletion", report.scheduled),
            ("earlier copies reused", report.reused),
            ("moved again (changed meanwhile)", report.retried),
        ]
    rows += [("unbound meanwhile", report.gone), ("failed", len(report.failed))]
    out.append(table(("", "count"), rows))
    if report.failed:
        out.append(
            table(
                ("failed binding", "tenant", "step", "reason"),
                [(f.binding_id, f.tenant, f.step, f.reason) for f in report.failed],
            )
        )
        out.append("run it again to retry them: every step is idempotent")
    return "\n".join(out)


def print_report(report: MigrationReport, *, as_json: bool, interrupted: bool = False) -> None:
    """The text report (unless --json), then the report as one JSON line."""
    if not as_json:
        print(render_report(report, interrupted=interrupted))
    print(json.dumps({**report.to_dict(), "interrupted": interrupted}, sort_keys=True))
