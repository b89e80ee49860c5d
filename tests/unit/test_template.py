"""The deployed template's security properties, on the CloudFormation the SAM transform makes of it.

Given template.yaml translated by aws-sam-translator (as CloudFormation does on deploy), these tests pin
which functions run in the VPC, every role's exact actions and resources, encryption, AWS_IAM on every
method, data protection, the schedule and the outputs. A change that widens a policy fails here first:
update EXPECTED_POLICIES only together with the code that needs the new permission.
"""

from __future__ import annotations

import json
from fnmatch import fnmatchcase
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from keyhealth.adapters.kms_credentials import KmsCredentialStore
from keyhealth.adapters.kms_webhook_secrets import PURPOSE
from keyhealth.config import CREDENTIAL_STORES
from scripts.checkov_scan import render
from scripts.sam_translate import TEMPLATE, translate

SECRETS = "arn:${AWS::Partition}:secretsmanager:${AWS::Region}:${AWS::AccountId}:secret:keyhealth/${AWS::StackName}/*"
KEY = "SecretsKey.Arn"
TABLE = "BindingsTable.Arn"
QUEUES = ("AuditQueueBinance.Arn", "AuditQueueBitget.Arn", "AuditQueueBingx.Arn")
ENI_ACTIONS = (
    "ec2:AssignPrivateIpAddresses",
    "ec2:CreateNetworkInterface",
    "ec2:DeleteNetworkInterface",
    "ec2:DescribeNetworkInterfaces",
    "ec2:DescribeSubnets",
    "ec2:UnassignPrivateIpAddresses",
)
# Tracing: Active. X-Ray has no resource-level permissions for these: "*" is the only resource they take.
XRAY_ACTIONS = ("xray:PutTelemetryRecords", "xray:PutTraceSegments")
TRACING = (XRAY_ACTIONS, ("*",), None)
# The orphan sweeper lists the stack's secrets: ListSecrets has no resource-level permissions either.
LIST_SECRETS = ("secretsmanager:ListSecrets",)
# The KMS credential store (CredentialStore=kms): its table, and its key, which the functions call directly.
CREDENTIALS_TABLE = "CredentialsTable.Arn"
CREDENTIALS_KEY = "CredentialsKey.Arn"
STACK_CONTEXT_KEY = "kms:EncryptionContext:keyhealth:stack"
# The condition of every statement on CredentialsKey: data keys only under this stack's encryption context.
THIS_STACKS_CONTEXT = f"{STACK_CONTEXT_KEY}=AWS::StackName"


def via(*services: str) -> str:
    return "kms:ViaService=" + ",".join(f"{s}.${{AWS::Region}}.amazonaws.com" for s in services)


# The three statements of every role whose function records binding events (keyhealth.webhooks.FeedPublisher):
# the event and its dedupe marker into EventsTable, the tenant's webhook read from it, the delivery queued.
PUBLISHES_TENANT_EVENTS = {
    "PublishTenantEvents": (("dynamodb:GetItem", "dynamodb:PutItem"), ("EventsTable.Arn",), None),
    "QueueTenantEvents": (("sqs:SendMessage",), ("WebhookQueue.Arn",), None),
    "KeyThroughSqsForTenantEvents": (("kms:Decrypt", "kms:GenerateDataKey"), (KEY,), via("sqs")),
}
WEBHOOK_SIGNING = "kms:EncryptionContext:keyhealth:purpose=webhook-signing"

# role -> Sid -> (actions, resources, condition). Resources and conditions as `show` writes them.
EXPECTED_POLICIES: dict[str, dict[str, tuple[tuple[str, ...], tuple[str, ...], str | None]]] = {
    "BindRole": {
        "Logs": (("logs:CreateLogStream", "logs:PutLogEvents"), ("BindLogGroup.Arn",), None),
        "Tracing": TRACING,
        "VpcNetworkInterfaces": (ENI_ACTIONS, ("*",), None),
        "WriteBindingSecrets": (
            (
                "secretsmanager:CreateSecret",
                "secretsmanager:DeleteSecret",
                "secretsmanager:DescribeSecret",
                "secretsmanager:GetSecretValue",
                "secretsmanager:PutSecretValue",
                "secretsmanager:TagResource",
                "secretsmanager:UpdateSecretVersionStage",
            ),
            (SECRETS,),
            None,
        ),
        "KeyThroughSecretsManager": (("kms:Decrypt", "kms:GenerateDataKey"), (KEY,), via("secretsmanager")),
        "KeyThroughDynamoDbAndSns": (("kms:Decrypt", "kms:GenerateDataKey"), (KEY,), via("dynamodb", "sns")),
        "Bindings": (("dynamodb:DeleteItem", "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:Query"), (TABLE,), None),
        # bind (create; delete when its metadata write failed) and rotate (stage, promote, undo) are one function
        "CredentialsTable": (
            ("dynamodb:DeleteItem", "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"),
            (CREDENTIALS_TABLE,),
            None,
        ),
        "CredentialsKey": (("kms:Decrypt", "kms:GenerateDataKey"), (CREDENTIALS_KEY,), THIS_STACKS_CONTEXT),
        "Idempotency": (
            ("dynamodb:DeleteItem", "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"),
            ("IdempotencyTable.Arn",),
            None,
        ),
        "Alerts": (("sns:Publish",), ("AlertTopic",), None),
        **PUBLISHES_TENANT_EVENTS,
    },
    "VerifyRole": {
        "Logs": (("logs:CreateLogStream", "logs:PutLogEvents"), ("VerifyLogGroup.Arn",), None),
        "Tracing": TRACING,
        "VpcNetworkInterfaces": (ENI_ACTIONS, ("*",), None),
        "ReadBindingSecrets": (("secretsmanager:GetSecretValue",), (SECRETS,), None),
        "KeyThroughSecretsManager": (("kms:Decrypt",), (KEY,), via("secretsmanager")),
        "KeyThroughDynamoDbAndSns": (("kms:Decrypt", "kms:GenerateDataKey"), (KEY,), via("dynamodb", "sns")),
        "Bindings": (("dynamodb:DeleteItem", "dynamodb:GetItem", "dynamodb:PutItem"), (TABLE,), None),
        "CredentialsTable": (("dynamodb:GetItem",), (CREDENTIALS_TABLE,), None),
        "CredentialsKey": (("kms:Decrypt",), (CREDENTIALS_KEY,), THIS_STACKS_CONTEXT),
        "Alerts": (("sns:Publish",), ("AlertTopic",), None),
        **PUBLISHES_TENANT_EVENTS,
    },
    "UnbindRole": {
        "Logs": (("logs:CreateLogStream", "logs:PutLogEvents"), ("UnbindLogGroup.Arn",), None),
        "Tracing": TRACING,
        "DeleteBindingSecrets": (
            ("secretsmanager:DeleteSecret", "secretsmanager:DescribeSecret", "secretsmanager:RestoreSecret"),
            (SECRETS,),
            None,
        ),
        "KeyThroughDynamoDb": (("kms:Decrypt",), (KEY,), via("dynamodb")),
        "Bindings": (("dynamodb:DeleteItem", "dynamodb:GetItem"), (TABLE,), None),
        "CredentialsTable": (("dynamodb:GetItem", "dynamodb:UpdateItem"), (CREDENTIALS_TABLE,), None),  # no key
        **PUBLISHES_TENANT_EVENTS,
    },
    "ReadRole": {
        "Logs": (("logs:CreateLogStream", "logs:PutLogEvents"), ("ReadLogGroup.Arn",), None),
        "Tracing": TRACING,
        "KeyThroughDynamoDb": (("kms:Decrypt",), (KEY,), via("dynamodb")),
        "Bindings": (("dynamodb:GetItem", "dynamodb:Query"), (TABLE, "${BindingsTable.Arn}/index/ByUser"), None),
    },
    "AuditDispatcherRole": {
        "Logs": (("logs:CreateLogStream", "logs:PutLogEvents"), ("AuditDispatcherLogGroup.Arn",), None),
        "Tracing": TRACING,
        "KeyThroughDynamoDbSqsAndSns": (
            ("kms:Decrypt", "kms:GenerateDataKey"),
            (KEY,),
            via("dynamodb", "sqs", "sns"),
        ),
        "BindingsByExchange": (("dynamodb:Query",), ("${BindingsTable.Arn}/index/ByExchange",), None),
        "RunItems": (
            ("dynamodb:DeleteItem", "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:Query", "dynamodb:UpdateItem"),
            (TABLE,),
            None,
        ),
        "AuditTasks": (("sqs:SendMessage",), QUEUES, None),
        "Alerts": (("sns:Publish",), ("AlertTopic",), None),
        **PUBLISHES_TENANT_EVENTS,
    },
    "AuditWorkerRole": {
        "Logs": (("logs:CreateLogStream", "logs:PutLogEvents"), ("AuditWorkerLogGroup.Arn",), None),
        "Tracing": TRACING,
        "VpcNetworkInterfaces": (ENI_ACTIONS, ("*",), None),
        "ReadBindingSecrets": (("secretsmanager:GetSecretValue",), (SECRETS,), None),
        "KeyThroughSecretsManager": (("kms:Decrypt",), (KEY,), via("secretsmanager")),
        "KeyThroughDynamoDbSqsAndSns": (
            ("kms:Decrypt", "kms:GenerateDataKey"),
            (KEY,),
            via("dynamodb", "sqs", "sns"),
        ),
        "AuditState": (
            (
                "dynamodb:BatchWriteItem",
                "dynamodb:DeleteItem",
                "dynamodb:GetItem",
                "dynamodb:PutItem",
                "dynamodb:Query",
                "dynamodb:UpdateItem",
            ),
            (TABLE,),
            None,
        ),
        "CredentialsTable": (("dynamodb:GetItem",), (CREDENTIALS_TABLE,), None),
        "CredentialsKey": (("kms:Decrypt",), (CREDENTIALS_KEY,), THIS_STACKS_CONTEXT),
        "AuditTasks": (
            (
                "sqs:ChangeMessageVisibility",
                "sqs:DeleteMessage",
                "sqs:GetQueueAttributes",
                "sqs:GetQueueUrl",
                "sqs:ReceiveMessage",
            ),
            QUEUES,
            None,
        ),
        "Alerts": (("sns:Publish",), ("AlertTopic",), None),
        **PUBLISHES_TENANT_EVENTS,
    },
    "SlackNotifierRole": {
        "Logs": (("logs:CreateLogStream", "logs:PutLogEvents"), ("SlackNotifierLogGroup.Arn",), None),
        "Tracing": TRACING,
        "WebhookSecret": (("secretsmanager:GetSecretValue",), ("SlackWebhookSecretArn",), None),
        "DeadLetters": (("sqs:SendMessage",), ("SlackDeadLetterQueue.Arn",), None),
        "KeyThroughSqs": (("kms:Decrypt", "kms:GenerateDataKey"), (KEY,), via("sqs")),
    },
    "OrphanSweeperRole": {
        "Logs": (("logs:CreateLogStream", "logs:PutLogEvents"), ("OrphanSweeperLogGroup.Arn",), None),
        "Tracing": TRACING,
        "ListSecrets": (LIST_SECRETS, ("*",), None),
        "RemoveOrphanSecrets": (("secretsmanager:DeleteSecret", "secretsmanager:DescribeSecret"), (SECRETS,), None),
        "KeyThroughDynamoDbAndSns": (("kms:Decrypt", "kms:GenerateDataKey"), (KEY,), via("dynamodb", "sns")),
        "Bindings": (("dynamodb:GetItem",), (TABLE,), None),
        "CredentialsTable": (  # no key: the sweeper never decrypts
            ("dynamodb:GetItem", "dynamodb:Scan", "dynamodb:UpdateItem"),
            (CREDENTIALS_TABLE,),
            None,
        ),
        "Alerts": (("sns:Publish",), ("AlertTopic",), None),
    },
    "WebhooksRole": {
        "Logs": (("logs:CreateLogStream", "logs:PutLogEvents"), ("WebhooksLogGroup.Arn",), None),
        "Tracing": TRACING,
        "KeyThroughDynamoDbAndSqs": (("kms:Decrypt", "kms:GenerateDataKey"), (KEY,), via("dynamodb", "sqs")),
        "WebhooksAndEvents": (
            ("dynamodb:DeleteItem", "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:Query", "dynamodb:UpdateItem"),
            ("EventsTable.Arn",),
            None,
        ),
        # Encrypt only: the routes create signing secrets and never read one back.
        "EncryptSigningSecrets": (("kms:Encrypt",), ("WebhookSecretsKey.Arn",), WEBHOOK_SIGNING),
        "QueueDeliveries": (("sqs:SendMessage",), ("WebhookQueue.Arn",), None),
    },
    "WebhookDelivererRole": {
        "Logs": (("logs:CreateLogStream", "logs:PutLogEvents"), ("WebhookDelivererLogGroup.Arn",), None),
        "Tracing": TRACING,
        "KeyThroughDynamoDbAndSqs": (("kms:Decrypt", "kms:GenerateDataKey"), (KEY,), via("dynamodb", "sqs")),
        "WebhooksAndEvents": (("dynamodb:GetItem", "dynamodb:UpdateItem"), ("EventsTable.Arn",), None),
        "DecryptSigningSecrets": (("kms:Decrypt",), ("WebhookSecretsKey.Arn",), WEBHOOK_SIGNING),
        "Deliveries": (
            (
                "sqs:ChangeMessageVisibility",
                "sqs:DeleteMessage",
                "sqs:GetQueueAttributes",
                "sqs:ReceiveMessage",
            ),
            ("WebhookQueue.Arn",),
            None,
        ),
        "DeadLetters": (("sqs:SendMessage",), ("WebhookDeadLetterQueue.Arn",), None),
    },
}

FUNCTIONS = {
    "BindFunction": "BindRole",
    "VerifyFunction": "VerifyRole",
    "UnbindFunction": "UnbindRole",
    "ReadFunction": "ReadRole",
    "AuditDispatcherFunction": "AuditDispatcherRole",
    "AuditWorkerFunction": "AuditWorkerRole",
    "SlackNotifierFunction": "SlackNotifierRole",
    "OrphanSweeperFunction": "OrphanSweeperRole",
    "WebhooksFunction": "WebhooksRole",
    "WebhookDelivererFunction": "WebhookDelivererRole",
}
# The functions that call exchanges: their requests must leave from the NAT gateways' Elastic IPs.
IN_VPC = {"BindFunction", "VerifyFunction", "AuditWorkerFunction"}


EGRESS_CONDITIONS = {"EgressIps2": 2, "EgressIps3": 3, "EgressIps4": 4}  # condition -> the least EgressIpCount


def with_egress_ips(node: Any, count: int) -> Any:
    """`node` as CloudFormation resolves the EgressIpCount conditions for `count` (the others stay as they are)."""
    if isinstance(node, list):
        return [with_egress_ips(item, count) for item in node]
    if not isinstance(node, dict):
        return node
    if set(node) == {"Fn::If"} and node["Fn::If"][0] in EGRESS_CONDITIONS:
        condition, when_true, when_false = node["Fn::If"]
        return with_egress_ips(when_true if count >= EGRESS_CONDITIONS[condition] else when_false, count)
    return {key: with_egress_ips(value, count) for key, value in node.items()}


@cache
def cfn(egress_ips: int = 1) -> dict[str, Any]:
    """The translated template, as deployed with EgressIpCount=`egress_ips` (its resources and values)."""
    template = translate(
        {
            "SlackWebhookSecretArn": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:slack-AbCdEf",
            "EgressIpCount": str(egress_ips),
        }
    )
    kept = {
        name: resource
        for name, resource in template["Resources"].items()
        if resource.get("Condition") not in EGRESS_CONDITIONS or egress_ips >= EGRESS_CONDITIONS[resource["Condition"]]
    }
    return with_egress_ips({**template, "Resources": kept}, egress_ips)


def resources(kind: str | None = None, egress_ips: int = 1) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in cfn(egress_ips)["Resources"].items() if kind is None or v["Type"] == kind}


def props(logical_id: str, egress_ips: int = 1) -> dict[str, Any]:
    return cfn(egress_ips)["Resources"][logical_id]["Properties"]


def show(value: Any) -> str:
    """An intrinsic as short text: {"Fn::GetAtt": ["T", "Arn"]} -> "T.Arn", {"Ref": "X"} -> "X"."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and len(value) == 1:
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


def show_condition(condition: dict[str, Any] | None) -> str | None:
    if condition is None:
        return None
    [(operator, tests)] = condition.items()
    assert operator == "StringEquals", condition
    [(key, values)] = tests.items()
    return f"{key}=" + ",".join(show(v) for v in as_tuple(values))


def policy_table(role: str) -> dict[str, tuple[tuple[str, ...], tuple[str, ...], str | None]]:
    [policy] = props(role)["Policies"]
    table = {}
    for statement in policy["PolicyDocument"]["Statement"]:
        assert statement["Effect"] == "Allow"
        assert statement["Sid"] not in table, f"{role}: Sid {statement['Sid']} twice"
        table[statement["Sid"]] = (
            tuple(sorted(as_tuple(statement["Action"]))),
            tuple(show(r) for r in as_tuple(statement["Resource"])),
            show_condition(statement.get("Condition")),
        )
    return table


# ------------------------------------------------------------------------------------------------ IAM
@pytest.mark.parametrize("role", list(EXPECTED_POLICIES))
def test_each_role_allows_exactly_the_calls_its_function_makes(role):
    assert policy_table(role) == EXPECTED_POLICIES[role]
    assert "ManagedPolicyArns" not in props(role), "a managed policy would widen the role unseen"
    trust = props(role)["AssumeRolePolicyDocument"]["Statement"]
    assert trust == [{"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}]


def test_every_function_has_its_own_role_and_no_role_is_generated():
    functions = resources("AWS::Lambda::Function")
    assert set(functions) == set(FUNCTIONS)
    for function, role in FUNCTIONS.items():
        assert props(function)["Role"] == {"Fn::GetAtt": [role, "Arn"]}
    roles = set(resources("AWS::IAM::Role"))
    assert roles == set(FUNCTIONS.values()) | {
        "AuditSchedulerRole",
        "CanarySchedulerRole",
        "OrphanSweeperSchedulerRole",
        "ApiGatewayCloudWatchRole",
    }


def test_no_wildcard_action_and_star_resources_only_for_network_interfaces_and_tracing():
    for role in EXPECTED_POLICIES:
        for sid, (actions, resources_, _) in policy_table(role).items():
            assert not any(a.endswith("*") for a in actions), (role, sid)
            if "*" in resources_:
                takes_only_star = {
                    "VpcNetworkInterfaces": ENI_ACTIONS,
                    "Tracing": XRAY_ACTIONS,
                    "ListSecrets": LIST_SECRETS,
                }
                assert sid in takes_only_star, (role, sid)
                assert set(actions) == set(takes_only_star[sid]), (role, sid)


def test_secrets_are_reached_only_under_the_stacks_prefix():
    for role, table in EXPECTED_POLICIES.items():
        for sid, (actions, resources_, _) in table.items():
            reads_prefix = role != "SlackNotifierRole" and sid != "ListSecrets"
            if any(a.startswith("secretsmanager:") for a in actions) and reads_prefix:
                assert resources_ == (SECRETS,), (role, sid)
    for name in FUNCTIONS:
        prefix = props(name)["Environment"]["Variables"]["SECRET_PREFIX"]
        assert prefix == {"Fn::Sub": "keyhealth/${AWS::StackName}/"}


def uses(resource: str) -> dict[str, tuple[str, ...]]:
    """role -> the actions it is allowed on `resource` (every role in the template, not only the expected)."""
    found: dict[str, set[str]] = {}
    for role in resources("AWS::IAM::Role"):
        for policy in props(role).get("Policies", []):
            for statement in policy["PolicyDocument"]["Statement"]:
                if resource in (show(r) for r in as_tuple(statement["Resource"])):
                    found.setdefault(role, set()).update(as_tuple(statement["Action"]))
    return {role: tuple(sorted(actions)) for role, actions in found.items()}


def test_the_credential_store_is_reached_by_exactly_the_functions_that_use_it():
    assert uses(CREDENTIALS_TABLE) == {
        "BindRole": ("dynamodb:DeleteItem", "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"),
        "VerifyRole": ("dynamodb:GetItem",),
        "UnbindRole": ("dynamodb:GetItem", "dynamodb:UpdateItem"),
        "AuditWorkerRole": ("dynamodb:GetItem",),
        "OrphanSweeperRole": ("dynamodb:GetItem", "dynamodb:Scan", "dynamodb:UpdateItem"),
    }
    # Data keys: bind and rotate make them (and rotate reads back); verify and the worker only decrypt.
    assert uses(CREDENTIALS_KEY) == {
        "BindRole": ("kms:Decrypt", "kms:GenerateDataKey"),
        "VerifyRole": ("kms:Decrypt",),
        "AuditWorkerRole": ("kms:Decrypt",),
    }


def test_every_kms_permission_is_conditioned_on_the_service_or_this_stacks_encryption_context():
    for role in EXPECTED_POLICIES:
        for sid, (actions, resources_, condition) in policy_table(role).items():
            if not any(a.startswith("kms:") for a in actions):
                continue
            assert all(a.startswith("kms:") for a in actions), (role, sid)
            if resources_ == ("WebhookSecretsKey.Arn",):
                # A 32-byte signing secret is encrypted by KMS itself (no data key to manage), for its purpose only.
                assert condition == WEBHOOK_SIGNING, (role, sid)
                continue
            assert "kms:Encrypt" not in actions, (role, sid)  # envelope encryption: data keys, never Encrypt
            if resources_ == (CREDENTIALS_KEY,):
                assert condition == THIS_STACKS_CONTEXT, (role, sid)
            else:
                assert resources_ == (KEY,), (role, sid)
                assert condition is not None, (role, sid)
                assert condition.startswith("kms:ViaService="), (role, sid)


def test_the_policies_name_the_encryption_context_key_the_store_sends():
    store = KmsCredentialStore(None, None, table_name="t", key_id="k", stack_name="my-stack")
    assert store._context("tenant", "binding")[STACK_CONTEXT_KEY.removeprefix("kms:EncryptionContext:")] == "my-stack"


def test_the_api_gateway_logging_role_is_aws_own_and_optional():
    role = cfn()["Resources"]["ApiGatewayCloudWatchRole"]
    assert role["Condition"] == "CreateApiGatewayLoggingRole"
    assert [show(a) for a in role["Properties"]["ManagedPolicyArns"]] == [
        "arn:${AWS::Partition}:iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs"
    ]


# ------------------------------------------------------------------------------------------------ network
def test_only_the_functions_that_call_exchanges_run_in_the_private_subnets():
    in_vpc = {name for name in FUNCTIONS if "VpcConfig" in props(name)}
    assert in_vpc == IN_VPC
    for name in IN_VPC:
        config = props(name)["VpcConfig"]
        assert config["SubnetIds"] == [{"Ref": "PrivateSubnetA"}, {"Ref": "PrivateSubnetB"}]
        assert config["SecurityGroupIds"] == [{"Ref": "FunctionSecurityGroup"}]


LETTERS = "ABCD"  # egress IP n is EgressIp<letter>, NatGateway<letter>, PrivateSubnet<letter>, its worker's queues


def worker_of(n: int) -> str:
    return "AuditWorkerFunction" if n == 1 else f"AuditWorker{LETTERS[n - 1]}Function"


@pytest.mark.parametrize("count", [1, 2, 3, 4])
def test_each_egress_ip_is_its_own_nat_gateway_with_a_retained_elastic_ip_and_a_private_subnet_routed_to_it(count):
    nats = {n: r for n, r in resources("AWS::EC2::NatGateway", count).items()}
    assert sorted(nats) == [f"NatGateway{LETTERS[i]}" for i in range(count)]
    for i in range(count):
        letter = LETTERS[i]
        nat, eip = props(f"NatGateway{letter}", count), f"EgressIp{letter}"
        assert nat["AllocationId"] == {"Fn::GetAtt": [eip, "AllocationId"]}
        assert nat["SubnetId"] == {"Ref": f"PublicSubnet{'AB'[i % 2]}"}  # alternating AZs
        assert cfn(count)["Resources"][eip]["DeletionPolicy"] == "Retain"
        assert cfn(count)["Resources"][eip]["UpdateReplacePolicy"] == "Retain"
    routes = {
        props(name, count)["RouteTableId"]["Ref"]: props(name, count)["NatGatewayId"]["Ref"]
        for name in resources("AWS::EC2::Route", count)
        if name.startswith("PrivateDefaultRoute")
    }
    subnets = max(count, 2)  # with one IP, both AZs' subnets leave through it
    assert routes == {
        f"PrivateRouteTable{LETTERS[i]}": f"NatGateway{LETTERS[min(i, count - 1)]}" for i in range(subnets)
    }
    azs = {name: props(name, count)["AvailabilityZone"] for name in resources("AWS::EC2::Subnet", count)}
    assert len([n for n in azs if n.startswith("PrivateSubnet")]) == subnets
    blocks = [props(name, count)["CidrBlock"]["Fn::Select"][0] for name in resources("AWS::EC2::Subnet", count)]
    assert len(set(blocks)) == len(blocks)  # no two subnets share a /20


@pytest.mark.parametrize("count", [1, 3])
def test_each_audit_worker_is_pinned_to_its_ips_subnet_drains_its_queues_and_spends_its_budget(count):
    for n in range(1, count + 1):
        worker, letter = props(worker_of(n), count), LETTERS[n - 1]
        subnets = worker["VpcConfig"]["SubnetIds"]
        if count == 1:
            assert subnets == [{"Ref": "PrivateSubnetA"}, {"Ref": "PrivateSubnetB"}]  # both leave from the one IP
        else:
            assert subnets == [{"Ref": f"PrivateSubnet{letter}"}]
        assert worker["Environment"]["Variables"]["AUDIT_EGRESS_IP"] == {"Ref": f"EgressIp{letter}"}
        suffix = "" if n == 1 else letter
        queues = {
            ev["Properties"]["EventSourceArn"]["Fn::GetAtt"][0]
            for ev in cfn(count)["Resources"].values()
            if ev["Type"] == "AWS::Lambda::EventSourceMapping"
            and ev["Properties"]["FunctionName"] == {"Ref": worker_of(n)}
        }
        assert queues == {f"AuditQueue{x}{suffix}" for x in ("Binance", "Bitget", "Bingx")}
        assert worker["Role"] == {"Fn::GetAtt": ["AuditWorkerRole", "Arn"]}
    assert worker_of(count + 1) not in cfn(count)["Resources"]
    # the API functions may leave from any IP: every private subnet
    for function in ("BindFunction", "VerifyFunction"):
        assert props(function, count)["VpcConfig"]["SubnetIds"] == [
            {"Ref": f"PrivateSubnet{LETTERS[i]}"} for i in range(max(count, 2))
        ]


def test_with_three_egress_ips_the_roles_reach_every_ips_queues_and_logs_and_nothing_more():
    worker = {s["Sid"]: s for s in props("AuditWorkerRole", 3)["Policies"][0]["PolicyDocument"]["Statement"]}
    queue_arns = sorted(show(r) for r in worker["AuditTasks"]["Resource"])
    expected = sorted(f"AuditQueue{x}{s}.Arn" for x in ("Binance", "Bitget", "Bingx") for s in ("", "B", "C"))
    assert queue_arns == expected
    assert sorted(show(r) for r in worker["Logs"]["Resource"]) == sorted(
        ["AuditWorkerLogGroup.Arn", "AuditWorkerBLogGroup.Arn", "AuditWorkerCLogGroup.Arn"]
    )
    dispatcher = {s["Sid"]: s for s in props("AuditDispatcherRole", 3)["Policies"][0]["PolicyDocument"]["Statement"]}
    assert sorted(show(r) for r in dispatcher["AuditTasks"]["Resource"]) == expected
    variables = props("AuditDispatcherFunction", 3)["Environment"]["Variables"]
    assert variables["AUDIT_QUEUE_URL_BITGET"] == {
        "Fn::Join": [",", [{"Ref": "AuditQueueBitget"}, {"Ref": "AuditQueueBitgetB"}, {"Ref": "AuditQueueBitgetC"}]]
    }
    alarms = resources("AWS::CloudWatch::Alarm", 3)
    assert {"AuditWorkerBErrorsAlarm", "AuditWorkerCErrorsAlarm"} <= set(alarms)
    assert "AuditWorkerDErrorsAlarm" not in alarms


def test_functions_security_group_allows_https_out_and_nothing_in():
    group = props("FunctionSecurityGroup")
    assert "SecurityGroupIngress" not in group
    assert [(r["IpProtocol"], r["FromPort"], r["ToPort"], r["CidrIp"]) for r in group["SecurityGroupEgress"]] == [
        ("tcp", 443, 443, "0.0.0.0/0")
    ]


def test_dynamodb_gateway_endpoint_admits_only_this_stacks_tables():
    endpoint = props("DynamoDbEndpoint")
    assert endpoint["VpcEndpointType"] == "Gateway"
    assert endpoint["RouteTableIds"] == [{"Ref": "PrivateRouteTableA"}, {"Ref": "PrivateRouteTableB"}]
    [statement] = endpoint["PolicyDocument"]["Statement"]
    assert [show(r) for r in statement["Resource"]] == [
        TABLE,
        "${BindingsTable.Arn}/index/*",
        "IdempotencyTable.Arn",
        CREDENTIALS_TABLE,
        "EventsTable.Arn",
    ]


def test_interface_endpoints_are_optional():
    for name in ("SecretsManagerEndpoint", "SnsEndpoint", "SqsEndpoint", "EndpointSecurityGroup"):
        assert cfn()["Resources"][name]["Condition"] == "WithInterfaceEndpoints"


@pytest.mark.parametrize("count", [1, 2, 3, 4])
def test_every_egress_ip_reaches_the_functions_and_the_outputs(count):
    refs = [{"Ref": f"EgressIp{LETTERS[i]}"} for i in range(count)]
    expected = refs[0] if count == 1 else {"Fn::Join": [",", refs]}
    assert cfn(count)["Outputs"]["EgressIps"]["Value"] == expected
    for name in FUNCTIONS:
        assert props(name, count)["Environment"]["Variables"]["EGRESS_IPS"] == expected
    assert "EgressIps" not in cfn()["Parameters"]


# ------------------------------------------------------------------------------------------------ encryption
def test_the_key_rotates_and_its_policy_names_only_the_account_and_the_services_that_use_it():
    key = props("SecretsKey")
    assert key["EnableKeyRotation"] is True
    statements = {s["Sid"]: s for s in key["KeyPolicy"]["Statement"]}
    assert set(statements) == {
        "AccountAdministersAndDelegatesToIam",
        "CloudWatchAlarmsPublishToTheEncryptedTopic",
        "CloudWatchLogsEncryptsThisStacksLogGroups",
    }
    assert statements["CloudWatchAlarmsPublishToTheEncryptedTopic"]["Principal"] == {
        "Service": "cloudwatch.amazonaws.com"
    }
    logs = statements["CloudWatchLogsEncryptsThisStacksLogGroups"]
    assert show(logs["Condition"]["ArnLike"]["kms:EncryptionContext:aws:logs:arn"]).endswith(
        ":log-group:/keyhealth/${AWS::StackName}/*"
    )


def test_the_credentials_key_rotates_and_refuses_any_encryption_context_but_this_stacks():
    key = props("CredentialsKey")
    assert key["EnableKeyRotation"] is True
    assert "Condition" not in cfn()["Resources"]["CredentialsKey"]  # deployed whatever CredentialStore says
    statements = {s["Sid"]: s for s in key["KeyPolicy"]["Statement"]}
    assert set(statements) == {
        "AccountAdministersAndDelegatesToIam",
        "DenyOtherStacksEncryptionContext",
        "DenyMissingEncryptionContext",
    }
    secrets_key = {s["Sid"]: s for s in props("SecretsKey")["KeyPolicy"]["Statement"]}
    assert statements["AccountAdministersAndDelegatesToIam"] == secrets_key["AccountAdministersAndDelegatesToIam"]
    crypto = ["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey*", "kms:ReEncrypt*"]
    # Two statements: one statement's conditions must all hold, and Null holds only for a missing key.
    for sid, condition in (
        ("DenyOtherStacksEncryptionContext", {"StringNotEquals": {STACK_CONTEXT_KEY: {"Ref": "AWS::StackName"}}}),
        ("DenyMissingEncryptionContext", {"Null": {STACK_CONTEXT_KEY: "true"}}),
    ):
        deny = statements[sid]
        assert (deny["Effect"], deny["Principal"], deny["Resource"]) == ("Deny", "*", "*"), sid
        assert sorted(deny["Action"]) == crypto, sid
        assert deny["Condition"] == condition, sid
    # The denies cover every call a role may make with the key.
    allowed = {a for actions in uses(CREDENTIALS_KEY).values() for a in actions}
    assert allowed
    assert all(any(fnmatchcase(a, pattern) for pattern in crypto) for a in allowed), allowed
    assert props("CredentialsKeyAlias") == {
        "AliasName": {"Fn::Sub": "alias/keyhealth/${AWS::StackName}/credentials"},
        "TargetKeyId": {"Ref": "CredentialsKey"},
    }


def test_tables_queues_topic_and_logs_are_encrypted_with_the_stack_key():
    for name in ("BindingsTable", "IdempotencyTable", "CredentialsTable", "EventsTable"):
        assert props(name)["SSESpecification"] == {
            "SSEEnabled": True,
            "SSEType": "KMS",
            "KMSMasterKeyId": {"Ref": "SecretsKey"},
        }
    for name in resources("AWS::SQS::Queue"):
        assert props(name)["KmsMasterKeyId"] == {"Ref": "SecretsKey"}, name
    assert props("AlertTopic")["KmsMasterKeyId"] == {"Ref": "SecretsKey"}
    groups = resources("AWS::Logs::LogGroup")
    assert len(groups) == len(FUNCTIONS) + 1  # and the API's access logs
    for name in groups:
        assert props(name)["KmsKeyId"] == {"Fn::GetAtt": ["SecretsKey", "Arn"]}, name
        assert props(name)["RetentionInDays"] == {"Ref": "LogRetentionDays"}, name


def test_every_function_logs_to_its_own_group():
    for name in FUNCTIONS:
        group = show(props(name)["LoggingConfig"]["LogGroup"])
        assert group == name.removesuffix("Function") + "LogGroup"


def test_topic_accepts_alarms_of_this_account_and_https_only():
    statements = {s["Sid"]: s for s in props("AlertTopicPolicy")["PolicyDocument"]["Statement"]}
    assert statements["CloudWatchAlarmsOfThisAccount"]["Condition"] == {
        "StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}
    }
    assert statements["HttpsOnly"]["Effect"] == "Deny"


# ------------------------------------------------------------------------------------------------ data
def test_tables_have_point_in_time_recovery_and_deletion_protection():
    for name in ("BindingsTable", "IdempotencyTable", "CredentialsTable", "EventsTable"):
        assert props(name)["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
        assert props(name)["DeletionProtectionEnabled"] is True
    for name in ("BindingsTable", "CredentialsTable"):
        assert cfn()["Resources"][name]["DeletionPolicy"] == "Retain"
        assert cfn()["Resources"][name]["UpdateReplacePolicy"] == "Retain"


def test_the_credentials_table_is_keyed_by_credential_id_and_expires_unbound_items():
    """As keyhealth/adapters/kms_credentials.py reads and writes it: pk (S), TTL on expires_at."""
    assert "Condition" not in cfn()["Resources"]["CredentialsTable"]  # deployed whatever CredentialStore says
    table = props("CredentialsTable")
    assert table["KeySchema"] == [{"AttributeName": "pk", "KeyType": "HASH"}]
    assert table["AttributeDefinitions"] == [{"AttributeName": "pk", "AttributeType": "S"}]
    assert table["BillingMode"] == "PAY_PER_REQUEST"
    assert table["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    assert "GlobalSecondaryIndexes" not in table


# ------------------------------------------------------------------------------------------------ credential store
def test_the_credential_store_parameter_chooses_where_new_credentials_go():
    parameter = cfn()["Parameters"]["CredentialStore"]
    assert parameter["Default"] == "secretsmanager"
    assert parameter["AllowedValues"] == ["secretsmanager", "kms"]
    assert set(parameter["AllowedValues"]) == set(CREDENTIAL_STORES)  # what the functions accept
    for words in ("NEW credentials", "Both stores are always deployed", "stay readable", "migrate-credentials"):
        assert words in parameter["Description"], words
    groups = cfn()["Metadata"]["AWS::CloudFormation::Interface"]["ParameterGroups"]
    assert sum(group["Parameters"].count("CredentialStore") for group in groups) == 1


def test_every_function_is_told_the_store_its_table_key_and_the_stack():
    for name in FUNCTIONS:
        variables = props(name)["Environment"]["Variables"]
        assert variables["CREDENTIAL_STORE"] == {"Ref": "CredentialStore"}, name
        assert variables["CREDENTIALS_TABLE_NAME"] == {"Ref": "CredentialsTable"}, name
        assert variables["CREDENTIALS_KMS_KEY_ID"] == {"Fn::GetAtt": ["CredentialsKey", "Arn"]}, name
        assert variables["STACK_NAME"] == {"Ref": "AWS::StackName"}, name  # the context's keyhealth:stack


def test_the_credential_store_switches_no_resource():
    """Both stores are always deployed and readable; the parameter only tells the functions where new
    credentials go. So the kms translation is the default's, and no condition depends on the parameter."""
    assert "CredentialStore" not in json.dumps(cfn()["Conditions"])
    slack = {"SlackWebhookSecretArn": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:slack-AbCdEf"}
    assert translate({**slack, "CredentialStore": "kms"}) == translate({**slack, "EgressIpCount": "1"})


def test_lint_template_renders_the_kms_variant_with_only_that_default_changed(tmp_path: Path):
    """make lint-template gives cfn-lint, sam validate and checkov template.yaml with CredentialStore's
    Default set to kms (scripts/checkov_scan.py --render-to): exactly one line differs."""
    rendered = tmp_path / "template-kms.yaml"
    render(TEMPLATE, {"CredentialStore": "kms"}, rendered)
    before, after = TEMPLATE.read_text().splitlines(), rendered.read_text().splitlines()
    assert len(before) == len(after)
    assert [(a, b) for a, b in zip(before, after, strict=True) if a != b] == [
        ("    Default: secretsmanager", '    Default: "kms"')
    ]
    translated = tmp_path / "template.json"
    translated.write_text(json.dumps(cfn()))
    render(translated, {"CredentialStore": "kms"}, translated)
    assert json.loads(translated.read_text())["Parameters"]["CredentialStore"]["Default"] == "kms"
    variant = tmp_path / "template-variant.yaml"
    render(TEMPLATE, {"CredentialStore": "kms", "EgressIpCount": "3"}, variant)
    changed = [b for a, b in zip(before, variant.read_text().splitlines(), strict=True) if a != b]
    assert changed == ["    Default: 3", '    Default: "kms"']  # a number stays a number (cfn-lint E2015)
    with pytest.raises(SystemExit, match="AllowedValues"):
        render(TEMPLATE, {"EgressIpCount": "5"}, tmp_path / "no.yaml")
    with pytest.raises(SystemExit, match="AllowedValues"):
        render(TEMPLATE, {"CredentialStore": "dynamodb"}, tmp_path / "no.yaml")
    with pytest.raises(SystemExit, match="no parameter"):
        render(TEMPLATE, {"CredentialsStore": "kms"}, tmp_path / "no.yaml")
    assert not (tmp_path / "no.yaml").exists()


# ------------------------------------------------------------------------------------------------ API
def api_methods() -> dict[tuple[str, str], dict[str, Any]]:
    paths = props("Api")["Body"]["paths"]
    return {(method.upper(), path): spec for path, methods in paths.items() for method, spec in methods.items()}


def test_every_method_requires_aws_iam_and_invokes_without_caller_credentials():
    methods = api_methods()
    assert set(methods) == {
        ("POST", "/bindings"),
        ("GET", "/bindings"),
        ("GET", "/bindings/{binding_id}"),
        ("DELETE", "/bindings/{binding_id}"),
        ("PUT", "/bindings/{binding_id}/credentials"),
        ("POST", "/bindings/{binding_id}/verify"),
        ("GET", "/egress-ips"),
        ("PUT", "/webhook"),
        ("GET", "/webhook"),
        ("DELETE", "/webhook"),
        ("POST", "/webhook/secret"),
        ("POST", "/webhook/test"),
        ("GET", "/events"),
    }
    for key, spec in methods.items():
        assert spec["security"] == [{"AWS_IAM": []}], key
        assert "credentials" not in spec["x-amazon-apigateway-integration"], key
    permissions = resources("AWS::Lambda::Permission")
    api_permissions = [p for p in permissions.values() if p["Properties"]["Principal"] == "apigateway.amazonaws.com"]
    assert len(api_permissions) == len(methods)


def test_bodies_of_bind_and_rotate_are_validated_by_the_gateway():
    methods = api_methods()
    for key, model in (
        (("POST", "/bindings"), "bindrequest"),
        (("PUT", "/bindings/{binding_id}/credentials"), "rotaterequest"),
    ):
        spec = methods[key]
        assert spec["x-amazon-apigateway-request-validator"] == "body-only"
        [parameter] = spec["parameters"] if key[0] == "POST" else [p for p in spec["parameters"] if p["in"] == "body"]
        assert parameter["required"] is True
        assert parameter["schema"] == {"$ref": f"#/definitions/{model}"}
    body = props("Api")["Body"]
    assert body["x-amazon-apigateway-request-validators"]["body-only"] == {
        "validateRequestBody": True,
        "validateRequestParameters": False,
    }
    assert body["definitions"]["bindrequest"]["properties"]["exchange"]["enum"] == ["binance", "bitget", "bingx"]
    error = body["x-amazon-apigateway-gateway-responses"]["BAD_REQUEST_BODY"]
    assert '"code": "invalid_request"' in error["responseTemplates"]["application/json"]


def test_stage_v1_throttles_logs_access_and_never_logs_bodies():
    [stage] = [s["Properties"] for s in resources("AWS::ApiGateway::Stage").values()]
    assert stage["StageName"] == "v1"
    assert stage["AccessLogSetting"]["DestinationArn"] == {"Fn::GetAtt": ["ApiAccessLogGroup", "Arn"]}
    [settings] = stage["MethodSettings"]
    assert settings["ThrottlingRateLimit"] == {"Ref": "ApiThrottleRateLimit"}
    assert settings["ThrottlingBurstLimit"] == {"Ref": "ApiThrottleBurstLimit"}
    assert settings["DataTraceEnabled"] is False
    assert settings["LoggingLevel"] == "OFF"


def test_resource_policy_restricts_accounts_and_vpc_endpoints_when_given():
    policy = translate({"ApiAllowedAccounts": "111111111111,222222222222", "ApiAllowedVpcEndpoints": "vpce-0abc"})[
        "Resources"
    ]["Api"]["Properties"]["Body"]["x-amazon-apigateway-policy"]
    allow, only_accounts, only_vpce = policy["Statement"]
    assert allow["Fn::If"][0] == "RestrictApiAccounts"
    assert allow["Fn::If"][1]["Principal"] == {"AWS": {"Fn::Split": [",", "111111111111,222222222222"]}}
    assert only_accounts["Effect"] == "Deny"
    assert only_accounts["Condition"]["StringNotEquals"]["aws:PrincipalAccount"] == {
        "Fn::If": [
            "RestrictApiAccounts",
            {"Fn::Split": [",", "111111111111,222222222222"]},
            [{"Ref": "AWS::AccountId"}],
        ]
    }
    assert only_vpce["Fn::If"][1]["Effect"] == "Deny"
    assert only_vpce["Fn::If"][1]["Condition"] == {
        "StringNotEquals": {"aws:SourceVpce": {"Fn::Split": [",", "vpce-0abc"]}}
    }
    # Without parameters the policy only restates the default: nothing is allowed by it.
    default = props("Api")["Body"]["x-amazon-apigateway-policy"]["Statement"]
    assert all(s.get("Effect") != "Allow" for s in default)


# ------------------------------------------------------------------------------------------------ schedule
def evaluate(condition: Any, parameters: dict[str, str]) -> Any:
    """Fn::Equals/Not/Or/And, Condition and Ref to parameters (their defaults unless given)."""
    if isinstance(condition, str):
        return condition
    [(name, arg)] = condition.items()
    if name == "Ref":  # a parameter's value is text to CloudFormation, a Number's too
        return str(parameters.get(arg, cfn()["Parameters"][arg].get("Default")))
    if name == "Condition":
        return evaluate(cfn()["Conditions"][arg], parameters)
    if name == "Fn::Equals":
        return evaluate(arg[0], parameters) == evaluate(arg[1], parameters)
    if name == "Fn::Not":
        return not evaluate(arg[0], parameters)
    if name == "Fn::Or":
        return any(evaluate(a, parameters) for a in arg)
    if name == "Fn::And":
        return all(evaluate(a, parameters) for a in arg)
    raise AssertionError(name)


@pytest.mark.parametrize("count", [1, 3])
def test_each_egress_ip_has_a_canary_schedule_invoking_its_worker_with_a_role_that_may_invoke_only_the_workers(
    count,
):
    schedules = {
        n: props(n, count) for n in resources("AWS::Scheduler::Schedule", count) if n.startswith("EgressCanary")
    }
    assert sorted(schedules) == [f"EgressCanary{LETTERS[i]}" for i in range(count)]
    for i in range(count):
        schedule = schedules[f"EgressCanary{LETTERS[i]}"]
        assert schedule["Target"]["Arn"] == {"Fn::GetAtt": [worker_of(i + 1), "Arn"]}
        assert schedule["Target"]["RoleArn"] == {"Fn::GetAtt": ["CanarySchedulerRole", "Arn"]}
        assert schedule["ScheduleExpression"] == {"Fn::Sub": "rate(${CanaryMinutes} minutes)"}
        assert json.loads(schedule["Target"]["Input"])["source"] == "keyhealth.canary"  # the worker's canary branch
    [policy] = props("CanarySchedulerRole", count)["Policies"]
    [statement] = policy["PolicyDocument"]["Statement"]
    assert statement["Action"] == "lambda:InvokeFunction"
    assert statement["Resource"] == [{"Fn::GetAtt": [worker_of(i + 1), "Arn"]} for i in range(count)]


def test_schedule_targets_the_dispatcher_with_a_role_that_may_invoke_only_it():
    schedule = props("NightlyAudit")
    assert schedule["Target"]["Arn"] == {"Fn::GetAtt": ["AuditDispatcherFunction", "Arn"]}
    assert schedule["Target"]["RoleArn"] == {"Fn::GetAtt": ["AuditSchedulerRole", "Arn"]}
    role = props("AuditSchedulerRole")
    [trust] = role["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "scheduler.amazonaws.com"}
    assert trust["Condition"] == {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}}
    [policy] = role["Policies"]
    assert policy["PolicyDocument"]["Statement"] == [
        {
            "Effect": "Allow",
            "Action": "lambda:InvokeFunction",
            "Resource": {"Fn::GetAtt": ["AuditDispatcherFunction", "Arn"]},
        }
    ]


@pytest.mark.parametrize(
    ("mode", "expression", "timezone"),
    [
        ("nightly", {"Ref": "AuditSchedule"}, {"Ref": "AuditScheduleTimezone"}),
        ("rolling", {"Fn::Sub": "rate(${AuditTickMinutes} minutes)"}, "UTC"),
    ],
)
def test_the_audit_mode_picks_the_schedule(mode, expression, timezone):
    schedule = props("NightlyAudit")
    for key, expected in (("ScheduleExpression", expression), ("ScheduleExpressionTimezone", timezone)):
        condition, when_true, when_false = schedule[key]["Fn::If"]
        rolling = evaluate({"Condition": condition}, {"AuditMode": mode})
        assert (when_true if rolling else when_false) == expected
    ticks = cfn()["Parameters"]["AuditTickMinutes"]["AllowedValues"]
    assert all(1440 % int(m) == 0 and int(m) > 1 for m in ticks)  # rate(1 minutes) is not an expression
    for function in ("AuditDispatcherFunction", "AuditWorkerFunction"):  # the tick's and its finaliser's
        variables = props(function)["Environment"]["Variables"]
        assert variables["AUDIT_MODE"] == {"Ref": "AuditMode"}
        assert variables["AUDIT_TICK_MINUTES"] == {"Ref": "AuditTickMinutes"}


@pytest.mark.parametrize(("enabled", "state"), [("true", "ENABLED"), ("false", "DISABLED")])
def test_schedule_can_be_disabled_by_parameter(enabled, state):
    schedule_state = props("NightlyAudit")["State"]
    condition, when_true, when_false = schedule_state["Fn::If"]
    on = evaluate({"Condition": condition}, {"AuditScheduleEnabled": enabled})
    assert (when_true if on else when_false) == state
    alarm = cfn()["Resources"]["AuditNotFinishedAlarm"]
    assert evaluate({"Condition": alarm["Condition"]}, {"AuditScheduleEnabled": enabled}) is (enabled == "true")


# ------------------------------------------------------------------------------------------------ observability
def test_alarms_notify_the_alert_topic():
    alarms = resources("AWS::CloudWatch::Alarm")
    assert set(alarms) == {f"{f.removesuffix('Function')}ErrorsAlarm" for f in FUNCTIONS} | {
        "FunctionsThrottledAlarm",
        "AuditDeadLettersAlarm",
        "SlackDeadLettersAlarm",
        "WebhookDeadLettersAlarm",
        "AuditNotFinishedAlarm",
        "ExchangeCircuitOpenAlarm",
    }
    for name, alarm in alarms.items():
        assert alarm["Properties"]["AlarmActions"] == [{"Ref": "AlertTopic"}], name


def test_audit_not_finished_and_circuit_open_alarms_watch_the_right_metrics():
    finished = props("AuditNotFinishedAlarm")
    assert (finished["Namespace"], finished["MetricName"]) == ("keyhealth", "AuditRunsFinished")
    assert finished["Dimensions"] == [{"Name": "service", "Value": "keyhealth"}]  # Powertools adds `service`
    assert finished["TreatMissingData"] == "breaching"
    assert finished["Period"] * finished["EvaluationPeriods"] == 86400
    circuit = props("ExchangeCircuitOpenAlarm")
    assert (circuit["Namespace"], circuit["MetricName"]) == ("keyhealth", "ExchangeCircuitOpened")
    for name in ("ExchangeCircuitOpenedMetricFilter", "ExchangeCircuitOpenedByExchangeMetricFilter"):
        assert props(name)["FilterPattern"] == '{ $.message = "exchange circuit opened" }'
        assert props(name)["LogGroupName"] == {"Ref": "AuditWorkerLogGroup"}


def test_the_dashboard_shows_health_by_exchange_and_audit_throughput():
    body = props("Dashboard")["DashboardBody"]["Fn::Sub"]
    for metric in (
        "Checked",
        "BindingsHealthy",
        "BindingsDegraded",
        "BindingsFailing",
        "BindingsUnknown",
        "AuditChecksPerSecond",
        "KeyChecks",
        "ExchangeCircuitOpened",
    ):
        assert f'"{metric}"' in body or f'\\"{metric}\\"' in body, metric


# ------------------------------------------------------------------------------------------------ tracing
def test_every_function_and_the_api_stage_trace_with_x_ray():
    for name in FUNCTIONS:
        assert props(name)["TracingConfig"] == {"Mode": "Active"}, name
        assert policy_table(FUNCTIONS[name])["Tracing"] == TRACING, name
    [stage] = [s["Properties"] for s in resources("AWS::ApiGateway::Stage").values()]
    assert stage["TracingEnabled"] is True


# ------------------------------------------------------------------------------------------------ webhooks
def test_webhook_deliveries_retry_by_visibility_and_end_in_their_dead_letter_queue():
    queue = props("WebhookQueue")
    deliverer = props("WebhookDelivererFunction")
    # AWS advises a source queue's visibility of at least 6 x the function's timeout.
    assert queue["VisibilityTimeout"] >= 6 * deliverer["Timeout"]
    assert queue["MessageRetentionPeriod"] > 24 * 3600  # the deliverer's 24-hour retry window fits in it
    assert queue["RedrivePolicy"]["deadLetterTargetArn"] == {"Fn::GetAtt": ["WebhookDeadLetterQueue", "Arn"]}
    assert queue["RedrivePolicy"]["maxReceiveCount"] >= 20  # a net above a day's attempts, not the retry policy
    [source] = [
        e["Properties"]
        for e in resources("AWS::Lambda::EventSourceMapping").values()
        if e["Properties"]["FunctionName"] == {"Ref": "WebhookDelivererFunction"}
    ]
    assert source["EventSourceArn"] == {"Fn::GetAtt": ["WebhookQueue", "Arn"]}
    assert source["FunctionResponseTypes"] == ["ReportBatchItemFailures"]  # one failed delivery, not the batch
    assert int(deliverer["ReservedConcurrentExecutions"]) >= source["ScalingConfig"]["MaximumConcurrency"]
    alarm = props("WebhookDeadLettersAlarm")
    assert alarm["Dimensions"] == [
        {"Name": "QueueName", "Value": {"Fn::GetAtt": ["WebhookDeadLetterQueue", "QueueName"]}}
    ]


def test_webhook_functions_run_outside_the_vpc_and_only_the_deliverer_reads_signing_secrets():
    for name in ("WebhooksFunction", "WebhookDelivererFunction"):
        assert "VpcConfig" not in props(name), name  # platforms' URLs, not exchanges: no whitelisted IP needed
    assert uses("WebhookSecretsKey.Arn") == {"WebhooksRole": ("kms:Encrypt",), "WebhookDelivererRole": ("kms:Decrypt",)}


def test_the_webhook_key_rotates_and_serves_the_signing_purpose_only():
    key = props("WebhookSecretsKey")
    assert key["EnableKeyRotation"] is True
    statements = {s["Sid"]: s for s in key["KeyPolicy"]["Statement"]}
    purpose = "kms:EncryptionContext:keyhealth:purpose"
    assert statements["DenyOtherPurposes"]["Condition"] == {"StringNotEquals": {purpose: PURPOSE}}
    assert statements["DenyMissingPurpose"]["Condition"] == {"Null": {purpose: "true"}}
    for sid in ("DenyOtherPurposes", "DenyMissingPurpose"):
        assert (statements[sid]["Effect"], statements[sid]["Principal"]) == ("Deny", "*"), sid
    assert f"{purpose}={PURPOSE}" == WEBHOOK_SIGNING  # the roles' condition names what the adapter sends


def test_the_events_table_expires_events_and_is_protected():
    table = props("EventsTable")
    assert table["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    assert table["DeletionProtectionEnabled"] is True
    assert table["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    for name in FUNCTIONS:
        variables = props(name)["Environment"]["Variables"]
        assert variables["EVENTS_TABLE_NAME"] == {"Ref": "EventsTable"}, name
        assert variables["WEBHOOK_QUEUE_URL"] == {"Ref": "WebhookQueue"}, name


# ------------------------------------------------------------------------------------------------ concurrency
API_FUNCTIONS = ("BindFunction", "VerifyFunction", "UnbindFunction", "ReadFunction")


def reserved_concurrency(function: str, parameters: dict[str, str]) -> str | None:
    """The function's ReservedConcurrentExecutions once CloudFormation resolved it (None: not set)."""
    value = props(function).get("ReservedConcurrentExecutions")
    if value is None:
        return None
    condition, when_true, when_false = value["Fn::If"]
    chosen = when_true if evaluate({"Condition": condition}, parameters) else when_false
    return None if chosen == {"Ref": "AWS::NoValue"} else evaluate(chosen, parameters)


def test_api_functions_reserve_concurrency_by_default():
    assert cfn()["Parameters"]["ApiReservedConcurrency"]["Default"] == 20
    for name in API_FUNCTIONS:
        assert reserved_concurrency(name, {}) == "20", name
        assert reserved_concurrency(name, {"ApiReservedConcurrency": "35"}) == "35", name
    assert reserved_concurrency("AuditWorkerFunction", {}) == "15"
    # Nightly or alert-driven, nothing to bound: no reservation taken from the account's pool.
    assert reserved_concurrency("AuditDispatcherFunction", {}) is None
    assert reserved_concurrency("SlackNotifierFunction", {}) is None
    assert reserved_concurrency("OrphanSweeperFunction", {}) is None


def test_reserved_concurrency_is_off_with_zero():
    for name in API_FUNCTIONS:
        assert reserved_concurrency(name, {"ApiReservedConcurrency": "0"}) is None, name
        assert reserved_concurrency(name, {"AuditWorkerReservedConcurrency": "0"}) == "20", name
    assert reserved_concurrency("AuditWorkerFunction", {"AuditWorkerReservedConcurrency": "0"}) is None
    assert reserved_concurrency("AuditWorkerFunction", {"ApiReservedConcurrency": "0"}) == "15"
    for name in ("ApiReservedConcurrency", "AuditWorkerReservedConcurrency"):
        assert cfn()["Parameters"][name]["MinValue"] == 0  # no value that would throttle a function entirely


def test_the_worker_reservation_covers_every_queue_at_its_maximum_concurrency():
    """Below the event sources' total MaximumConcurrency, the pollers would be throttled (tasks count receives)."""
    events = [
        e
        for e in resources("AWS::Lambda::EventSourceMapping").values()
        if e["Properties"]["FunctionName"] == {"Ref": "AuditWorkerFunction"}
    ]
    assert len(events) == 3
    for event in events:
        assert event["Properties"]["ScalingConfig"] == {"MaximumConcurrency": {"Ref": "AuditMaxConcurrency"}}
    default = int(cfn()["Parameters"]["AuditMaxConcurrency"]["Default"])
    assert int(reserved_concurrency("AuditWorkerFunction", {}) or 0) >= len(events) * default


# ------------------------------------------------------------------------------------------------ runtime
def test_functions_run_python_3_13_on_arm64_with_the_shared_layer():
    for name in FUNCTIONS:
        assert props(name)["Runtime"] == "python3.13"
        assert props(name)["Architectures"] == ["arm64"]
        [layer] = props(name)["Layers"]
        assert layer["Ref"].startswith("SharedLayer")


def test_outputs():
    assert set(cfn()["Outputs"]) == {
        "ApiUrl",
        "ApiExecuteArn",
        "EgressIps",
        "AlertTopicArn",
        "TableName",
        "SecretsKeyArn",
        "CredentialsTableName",
        "CredentialsKeyArn",
        "AuditDeadLetterQueueUrl",
        "DashboardUrl",
        "SlackDeadLetterQueueUrl",
        "EventsTableName",
        "WebhookQueueUrl",
        "WebhookDeadLetterQueueUrl",
    }
    assert cfn()["Outputs"]["CredentialsTableName"]["Value"] == {"Ref": "CredentialsTable"}
    assert cfn()["Outputs"]["CredentialsKeyArn"]["Value"] == {"Fn::GetAtt": ["CredentialsKey", "Arn"]}


@pytest.mark.parametrize(
    ("value", "accepted"),
    [
        ("", True),
        ("203.0.113.20@2027-01-15", True),
        ("203.0.113.20@2027-01-15,2001:db8::20@2027-02-01", True),
        ("203.0.113.20", False),
        ("203.0.113.20@15/01/2027", False),
        ("203.0.113.20@2027-01-15 ,x", False),
    ],
)
def test_planned_egress_ips_are_refused_at_deploy_when_config_would_refuse_them(value, accepted):
    import re

    from keyhealth.config import ConfigError, Settings

    pattern = cfn()["Parameters"]["PlannedEgressIps"]["AllowedPattern"]
    assert bool(re.fullmatch(pattern, value)) is accepted
    if accepted:  # what CloudFormation lets through, the functions start with
        assert len(Settings.from_env({"PLANNED_EGRESS_IPS": value}).planned_egress_ips) == value.count("@")
    else:
        with pytest.raises(ConfigError):
            Settings.from_env({"PLANNED_EGRESS_IPS": value})


def test_every_sub_and_ref_names_a_parameter_or_resource_of_the_template():
    """A `${Name}` or Ref to nothing translates fine and fails only at deploy (cfn-lint E1019/E3030)."""
    import re

    template = cfn(4)
    known = set(template["Parameters"]) | set(template["Resources"]) | {"AWS::NoValue"}

    def names(node: Any) -> list[str]:
        if isinstance(node, list):
            return [n for item in node for n in names(item)]
        if not isinstance(node, dict):
            return []
        found = [n for value in node.values() for n in names(value)]
        if "Ref" in node and isinstance(node["Ref"], str):
            found.append(node["Ref"])
        if "Fn::Sub" in node:
            text = node["Fn::Sub"] if isinstance(node["Fn::Sub"], str) else node["Fn::Sub"][0]
            found += [m.split(".")[0] for m in re.findall(r"\$\{([^!}]+)\}", text)]
        return found

    unknown = {n for n in names(template["Resources"]) if not n.startswith(("AWS::", "__")) and n not in known}
    assert unknown == set()
