"""The orphan sweeper's resources in the deployed template (issue 10), on the SAM transform's CloudFormation.

docs/sweeper-template-snippet.yaml holds them until they are merged into template.yaml: until then every test
here skips itself (template.yaml has no OrphanSweeperFunction), and once they are merged the tests run. They pin
the function's role to exactly the calls keyhealth.bindings.sweeper makes, its schedule, log group and alarm,
and that it runs outside the VPC (it calls no exchange).
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from scripts.sam_translate import TEMPLATE, translate

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_PATH: Path = TEMPLATE  # the template under test
FUNCTION, ROLE = "OrphanSweeperFunction", "OrphanSweeperRole"
SECRETS = "arn:${AWS::Partition}:secretsmanager:${AWS::Region}:${AWS::AccountId}:secret:keyhealth/${AWS::StackName}/*"
KEY = "SecretsKey.Arn"
VIA_DYNAMODB_AND_SNS = "kms:ViaService=dynamodb.${AWS::Region}.amazonaws.com,sns.${AWS::Region}.amazonaws.com"

EXPECTED_POLICY = {
    "Logs": (("logs:CreateLogStream", "logs:PutLogEvents"), ("OrphanSweeperLogGroup.Arn",), None),
    "Tracing": (("xray:PutTelemetryRecords", "xray:PutTraceSegments"), ("*",), None),
    # ListSecrets has no resource-level permissions: "*" is the only resource it takes (and it returns no value).
    "ListSecrets": (("secretsmanager:ListSecrets",), ("*",), None),
    "RemoveOrphanSecrets": (("secretsmanager:DeleteSecret", "secretsmanager:DescribeSecret"), (SECRETS,), None),
    "KeyThroughDynamoDbAndSns": (("kms:Decrypt", "kms:GenerateDataKey"), (KEY,), VIA_DYNAMODB_AND_SNS),
    "Bindings": (("dynamodb:GetItem",), ("BindingsTable.Arn",), None),
    # The KMS credential store: list (Scan of the metadata), read again, schedule deletion; no key.
    "CredentialsTable": (
        ("dynamodb:GetItem", "dynamodb:Scan", "dynamodb:UpdateItem"),
        ("CredentialsTable.Arn",),
        None,
    ),
    "Alerts": (("sns:Publish",), ("AlertTopic",), None),
}


@cache
def _cfn(path: Path) -> dict[str, Any]:
    return translate(
        {"SlackWebhookSecretArn": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:slack-AbCdEf"}, path
    )


def cfn() -> dict[str, Any]:
    return _cfn(TEMPLATE_PATH)


@pytest.fixture(autouse=True)
def _merged() -> None:
    if f"  {FUNCTION}:" not in TEMPLATE_PATH.read_text():
        pytest.skip("until docs/sweeper-template-snippet.yaml is merged into template.yaml")


def props(logical_id: str) -> dict[str, Any]:
    return cfn()["Resources"][logical_id]["Properties"]


def show(value: Any) -> str:
    """An intrinsic as short text: {"Fn::GetAtt": ["T", "Arn"]} -> "T.Arn", {"Ref": "X"} -> "X"."""
    if isinstance(value, str):
        return value
    [(name, arg)] = value.items()
    if name == "Ref":
        return arg
    if name == "Fn::GetAtt":
        return ".".join(arg) if isinstance(arg, list) else arg
    if name == "Fn::Sub" and isinstance(arg, str):
        return arg
    raise AssertionError(f"unexpected intrinsic {value!r}")


def as_tuple(value: Any) -> tuple[Any, ...]:
    return tuple(value) if isinstance(value, list) else (value,)


def policy_table(role: str) -> dict[str, tuple[tuple[str, ...], tuple[str, ...], str | None]]:
    [policy] = props(role)["Policies"]
    table = {}
    for statement in policy["PolicyDocument"]["Statement"]:
        assert statement["Effect"] == "Allow"
        assert statement["Sid"] not in table
        condition = None
        if "Condition" in statement:
            [(operator, tests)] = statement["Condition"].items()
            assert operator == "StringEquals"
            [(key, values)] = tests.items()
            condition = f"{key}=" + ",".join(show(v) for v in as_tuple(values))
        table[statement["Sid"]] = (
            tuple(sorted(as_tuple(statement["Action"]))),
            tuple(show(r) for r in as_tuple(statement["Resource"])),
            condition,
        )
    return table


# ------------------------------------------------------------------------------------------------ IAM
def test_the_sweepers_role_allows_exactly_the_calls_it_makes():
    assert policy_table(ROLE) == EXPECTED_POLICY
    assert "ManagedPolicyArns" not in props(ROLE)
    assert props(ROLE)["AssumeRolePolicyDocument"]["Statement"] == [
        {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}
    ]
    assert props(FUNCTION)["Role"] == {"Fn::GetAtt": [ROLE, "Arn"]}


def test_the_sweeper_can_never_read_a_secrets_value_nor_reach_another_stacks_secrets():
    actions = {a for actions, _, _ in policy_table(ROLE).values() for a in actions}
    assert "secretsmanager:GetSecretValue" not in actions
    assert "secretsmanager:BatchGetSecretValue" not in actions
    # Nor a KMS store version: it may read items (their metadata), but nothing on the key that decrypts them.
    for sid, (actions_, resources, _) in policy_table(ROLE).items():
        assert "CredentialsKey.Arn" not in resources, sid
        if any(a.startswith("kms:") for a in actions_):
            assert resources == (KEY,), sid
    for sid, (actions_, resources, _) in policy_table(ROLE).items():
        if "*" in resources:  # only what takes no other resource
            assert sid in {"Tracing", "ListSecrets"}, sid
        elif any(a.startswith("secretsmanager:") for a in actions_):
            assert resources == (SECRETS,), sid
    assert props(FUNCTION)["Environment"]["Variables"]["SECRET_PREFIX"] == {"Fn::Sub": "keyhealth/${AWS::StackName}/"}


# ------------------------------------------------------------------------------------------------ function
def test_the_sweeper_runs_outside_the_vpc_with_the_stacks_settings():
    function = props(FUNCTION)
    assert "VpcConfig" not in function  # it calls no exchange: no NAT, no ENI permissions
    assert function["Handler"] == "app.lambda_handler"
    assert function["Timeout"] == 900
    assert (function["Runtime"], function["Architectures"]) == ("python3.13", ["arm64"])
    assert function["TracingConfig"] == {"Mode": "Active"}
    [layer] = function["Layers"]
    assert layer["Ref"].startswith("SharedLayer")
    assert "ReservedConcurrentExecutions" not in function  # once a day: nothing to bound
    variables = function["Environment"]["Variables"]
    for name, value in {
        "TABLE_NAME": {"Ref": "BindingsTable"},
        "ALERT_TOPIC_ARN": {"Ref": "AlertTopic"},
        "SECRET_RECOVERY_DAYS": {"Ref": "SecretRecoveryDays"},
    }.items():
        assert variables[name] == value, name


def test_the_sweepers_code_is_the_handler_in_functions():
    template_function = cfn()["Resources"][FUNCTION]
    assert template_function["Metadata"]["BuildMethod"] == "makefile"
    from functions.orphan_sweeper import app

    assert callable(app.lambda_handler)
    assert (ROOT / "functions" / "orphan_sweeper" / "__init__.py").exists()


def test_the_sweeper_logs_to_its_own_encrypted_group():
    assert show(props(FUNCTION)["LoggingConfig"]["LogGroup"]) == "OrphanSweeperLogGroup"
    group = props("OrphanSweeperLogGroup")
    assert group["LogGroupName"] == {"Fn::Sub": "/keyhealth/${AWS::StackName}/orphan-sweeper"}
    assert group["RetentionInDays"] == {"Ref": "LogRetentionDays"}
    assert group["KmsKeyId"] == {"Fn::GetAtt": ["SecretsKey", "Arn"]}


# ------------------------------------------------------------------------------------------------ schedule
def test_a_daily_schedule_starts_the_sweeper_with_a_role_that_may_invoke_only_it():
    schedule = props("DailyOrphanSweep")
    expression = schedule["ScheduleExpression"]
    assert expression.startswith("cron(")
    assert expression.endswith(" * * ? *)")  # every day of every month
    assert schedule["State"] == "ENABLED"
    assert schedule["Target"]["Arn"] == {"Fn::GetAtt": [FUNCTION, "Arn"]}
    assert schedule["Target"]["RoleArn"] == {"Fn::GetAtt": ["OrphanSweeperSchedulerRole", "Arn"]}
    role = props("OrphanSweeperSchedulerRole")
    [trust] = role["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "scheduler.amazonaws.com"}
    assert trust["Condition"] == {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}}
    [policy] = role["Policies"]
    assert policy["PolicyDocument"]["Statement"] == [
        {"Effect": "Allow", "Action": "lambda:InvokeFunction", "Resource": {"Fn::GetAtt": [FUNCTION, "Arn"]}}
    ]


def test_the_sample_event_is_what_the_schedule_sends():
    sent = props("DailyOrphanSweep")["Target"]["Input"].replace(
        "<aws.scheduler.scheduled-time>", "2026-11-21T03:30:00Z"
    )
    assert json.loads(sent) == json.loads((ROOT / "events" / "orphan-sweeper.json").read_text())


# ------------------------------------------------------------------------------------------------ alarm
def test_the_sweepers_errors_raise_an_alarm_on_the_alert_topic():
    alarm = props("OrphanSweeperErrorsAlarm")
    assert (alarm["Namespace"], alarm["MetricName"]) == ("AWS/Lambda", "Errors")
    assert alarm["Dimensions"] == [{"Name": "FunctionName", "Value": {"Ref": FUNCTION}}]
    assert alarm["AlarmActions"] == [{"Ref": "AlertTopic"}]
    assert alarm["Threshold"] == 1
