"""`keyhealth doctor`: checks a deployed stack (or the local one) end to end, and says what to fix.

1. outputs: the stack's outputs keyhealth needs are there (ApiUrl, EgressIps, AlertTopicArn); a deployed stack's
   from CloudFormation (`--stack`), the local stack's from its `/_local/outputs`;
2. api: GET /egress-ips answers 200, SigV4-signed with your AWS credentials, and lists the EgressIps output;
3. alerts: the alert topic has at least one confirmed subscription (an unconfirmed email receives nothing);
4. canary: every egress IP has a recent egress canary result for every exchange, and every one is up.

Each check prints PASS or FAIL with what to do; the exit code is 0 when all pass, 1 when one fails, 3 when the
API cannot be reached.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from keyhealth_cli.api import ApiClient
from keyhealth_cli.errors import FAILING, OK, UNKNOWN, CliError

REQUIRED_OUTPUTS = ("ApiUrl", "EgressIps", "AlertTopicArn")
#: The canary runs every CanaryMinutes (5 by default, at most 60): older than this, it is not running.
CANARY_FRESH = timedelta(minutes=65)


@dataclass
class Check:
    name: str
    ok: bool
    said: str
    fix: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"check": self.name, "ok": self.ok, "said": self.said, "fix": self.fix}


@dataclass
class Doctor:
    """The checks, given the stack's outputs and how to reach its alert topic."""

    api: ApiClient
    outputs: dict[str, str]
    subscriptions: Callable[[str], list[dict[str, Any]]]  # topic ARN -> its subscriptions (SNS)
    now: Callable[[], datetime] = lambda: datetime.now(UTC)
    exchanges: tuple[str, ...] = ("binance", "bingx", "bitget")
    checks: list[Check] = field(default_factory=list)

    def run(self) -> list[Check]:
        self.checks = [self.check_outputs()]
        answer = self.check_api()
        self.checks.append(self.check_alerts())
        self.checks.append(self.check_canary(answer))
        return self.checks

    def check_outputs(self) -> Check:
        missing = [name for name in REQUIRED_OUTPUTS if not self.outputs.get(name)]
        if missing:
            return Check(
                "outputs",
                False,
                f"missing {', '.join(missing)}",
                "deploy the stack from this template (sam deploy); an older stack lacks these outputs",
            )
        return Check("outputs", True, ", ".join(f"{n}={self.outputs[n]}" for n in REQUIRED_OUTPUTS))

    def check_api(self) -> dict[str, Any] | None:
        answer = self.api.request("GET", "/egress-ips")
        if answer.status != 200 or not isinstance(answer.body, dict):
            fix = (
                "your AWS identity may not call the API: grant execute-api:Invoke on the ApiExecuteArn output "
                "(docs/deploy.md), or check ApiAllowedAccounts"
                if answer.status == 403
                else "look at the API's access logs and the functions' errors alarms"
            )
            self.checks.append(Check("api", False, f"GET /egress-ips answered {answer.status}", fix))
            return None
        listed = answer.body.get("egress_ips") or []
        expected = [ip for ip in self.outputs.get("EgressIps", "").split(",") if ip]
        if expected and sorted(listed) != sorted(expected):
            self.checks.append(
                Check(
                    "api",
                    False,
                    f"GET /egress-ips lists {listed}, the stack outputs {expected}",
                    "redeploy: the functions' EGRESS_IPS comes from the template",
                )
            )
            return answer.body
        self.checks.append(Check("api", True, f"GET /egress-ips answered 200 with {', '.join(listed) or 'no IP'}"))
        return answer.body

    def check_alerts(self) -> Check:
        topic = self.outputs.get("AlertTopicArn")
        if not topic:
            return Check("alerts", False, "no AlertTopicArn output", "deploy the stack from this template")
        try:
            subscriptions = self.subscriptions(topic)
        except Exception as error:  # the SNS call's own error, said as it is
            return Check("alerts", False, f"cannot list the topic's subscriptions: {error}", "check your AWS access")
        confirmed = [s for s in subscriptions if not str(s.get("SubscriptionArn", "")).startswith("Pending")]
        pending = len(subscriptions) - len(confirmed)
        if not confirmed:
            why = f"{pending} pending confirmation" if pending else "none"
            return Check(
                "alerts",
                False,
                f"the alert topic has no confirmed subscription ({why})",
                "confirm the email AWS sent to AlertEmail (or subscribe ops to AlertTopicArn)",
            )
        protocols = sorted({str(s.get("Protocol")) for s in confirmed})
        return Check("alerts", True, f"{len(confirmed)} confirmed subscription(s): {', '.join(protocols)}")

    def check_canary(self, egress: dict[str, Any] | None) -> Check:
        if egress is None:
            return Check("canary", False, "not checked: the API did not answer", "fix the api check first")
        canary = egress.get("canary") or {}
        problems: list[str] = []
        fixes: set[str] = set()
        for ip in egress.get("egress_ips") or []:
            results = canary.get(ip) or {}
            for exchange in self.exchanges:
                result = results.get(exchange)
                if result is None:
                    problems.append(f"no result for {exchange} from {ip}")
                    fixes.add("the canary has not run from this IP: check its EgressCanary schedule and worker")
                    continue
                checked = _time(result.get("checked_at"))
                if checked is None or self.now() - checked > CANARY_FRESH:
                    problems.append(f"{exchange} from {ip}: last result {result.get('checked_at')}, stale")
                    fixes.add("the canary stopped: check the EgressCanary schedules and the workers' errors alarms")
                elif not result.get("ok"):
                    code = result.get("code")
                    since = f" since {result['down_since']}" if result.get("down_since") else ""
                    problems.append(f"{exchange} from {ip}: {code}{since}")
                    fixes.add(
                        "egress_blocked: the exchange refuses this IP (a ban or a restricted region: move the "
                        "egress to another region, or wait out the ban); timeout: check the NAT gateway and routes"
                        if code in ("egress_blocked", "timeout")
                        else "the exchange is down or throttling: it should clear by itself"
                    )
        if problems:
            return Check("canary", False, "; ".join(problems), " | ".join(sorted(fixes)))
        return Check("canary", True, f"every exchange answers every egress IP ({len(egress.get('egress_ips') or [])})")


def _time(text: Any) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def stack_outputs(stack: str, region: str | None) -> dict[str, str]:
    """A deployed stack's outputs, from CloudFormation."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        answer = boto3.client("cloudformation", region_name=region).describe_stacks(StackName=stack)
    except (BotoCoreError, ClientError) as error:
        raise CliError(f"cannot read the stack {stack!r}: {error}") from None
    [described] = answer["Stacks"]
    return {o["OutputKey"]: o["OutputValue"] for o in described.get("Outputs", [])}


def sns_subscriptions(region: str | None, endpoint_url: str | None = None) -> Callable[[str], list[dict[str, Any]]]:
    def listed(topic: str) -> list[dict[str, Any]]:
        import boto3

        local = {"aws_access_key_id": "local", "aws_secret_access_key": "local"} if endpoint_url else {}  # moto
        sns = boto3.client("sns", region_name=region or topic.split(":")[3], endpoint_url=endpoint_url, **local)
        found: list[dict[str, Any]] = []
        for page in sns.get_paginator("list_subscriptions_by_topic").paginate(TopicArn=topic):
            found.extend(page.get("Subscriptions", []))
        return found

    return listed


def cmd_doctor(api: ApiClient, args: argparse.Namespace) -> int:
    if args.stack:
        outputs = stack_outputs(args.stack, args.region)
        api = ApiClient(outputs.get("ApiUrl") or api.base_url, region=args.region, timeout=args.timeout)
        subscriptions = sns_subscriptions(args.region)
    elif api.local:
        answer = api.request("GET", "/_local/outputs")
        if answer.status != 200 or not isinstance(answer.body, dict):
            raise CliError(f"the local stack answered {answer.status} for its outputs", UNKNOWN)
        outputs = answer.body["outputs"]
        subscriptions = sns_subscriptions(outputs.get("Region"), answer.body.get("aws_endpoint_url"))
    else:
        raise CliError("pass --stack NAME for a deployed stack (its outputs come from CloudFormation)")
    checks = Doctor(api, outputs, subscriptions).run()
    if args.json:
        print(json.dumps({"ok": all(c.ok for c in checks), "checks": [c.to_dict() for c in checks]}, indent=2))
    else:
        for check in checks:
            print(f"{'PASS' if check.ok else 'FAIL'}  {check.name:<8} {check.said}")
            if not check.ok and check.fix:
                print(f"      {'':<8} fix: {check.fix}")
    return OK if all(c.ok for c in checks) else FAILING


def add_command(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    doctor = command("doctor", "check a deployed (or the local) stack end to end and say what to fix")
    doctor.add_argument("--stack", help="a deployed stack's name (its outputs from CloudFormation)")
    doctor.set_defaults(run=cmd_doctor)
