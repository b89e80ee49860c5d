"""`keyhealth migrate-credentials` end to end on moto: settings from the environment (or a stack's outputs),
the confirmation, the dry run, the move, the report as text and one JSON line, never a credential."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from moto import mock_aws

from keyhealth import wiring
from keyhealth.adapters.dynamodb_bindings import to_item
from keyhealth.adapters.routed_credentials import KMS, SECRETS_MANAGER
from keyhealth.bindings.model import Binding, api_key_hash
from keyhealth.config import Settings
from keyhealth.domain.credentials import Credentials, KeyType, Secret
from keyhealth.domain.ids import new_binding_id
from keyhealth.domain.model import Scope, Status
from keyhealth_cli import main, migrate
from tests.support.aws import SESSION, TABLE
from tests.support.template import create_key, create_table

PREFIX = "keyhealth/cli-test/"
SECRET = "cli-migrate-canary-secret-0123456789"
TENANT = "111111111111:role/platform-a"
NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def stack(monkeypatch: pytest.MonkeyPatch) -> Iterator[wiring.Container]:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", SESSION.region_name)
    with mock_aws():
        dynamodb = SESSION.client("dynamodb")
        create_table(dynamodb, "BindingsTable", TABLE)
        create_table(dynamodb, "CredentialsTable", "cli-credentials")
        key = create_key(SESSION.client("kms"), "CredentialsKey")
        env = {
            "TABLE_NAME": TABLE,
            "SECRET_PREFIX": PREFIX,
            "CREDENTIALS_TABLE_NAME": "cli-credentials",
            "CREDENTIALS_KMS_KEY_ID": key,
            "STACK_NAME": "cli-test",
            "CREDENTIAL_STORE": KMS,
        }
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        container = wiring.Container(wiring.Environment(settings=Settings.from_env(env)))
        for n in range(3):
            binding_id = new_binding_id(1_767_225_600 + n)
            credentials = Credentials(api_key=f"key{n}" + "k" * 60, api_secret=Secret(f"{SECRET}-{n}"))
            secret_id = container.credentials.store(SECRETS_MANAGER).create(
                f"{PREFIX}{binding_id}", credentials, tags={}, token=f"cli-{n}-0000-4000-8000-000000000000"
            )
            binding = Binding(
                binding_id=binding_id,
                tenant=TENANT,
                user_id=f"u-{n}",
                exchange="binance",
                label=None,
                key_type=KeyType.HMAC,
                api_key_masked=credentials.masked_api_key,
                api_key_hash=api_key_hash("binance", credentials.api_key),
                scopes=(Scope.SPOT,),
                status=Status.HEALTHY,
                created_at=NOW,
                updated_at=NOW,
                secret_id=secret_id,
            )
            dynamodb.put_item(TableName=TABLE, Item=to_item(binding))
        yield container


def last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def test_a_dry_run_counts_then_the_move_switches_every_binding(stack, capsys) -> None:
    assert main.main(["migrate-credentials", "--to", "kms", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would move" in out
    assert (last_json(out)["moved"], last_json(out)["dry_run"]) == (3, True)

    assert main.main(["migrate-credentials", "--to", "kms", "--yes", "--rate", "50"]) == 0
    out = capsys.readouterr().out
    report = last_json(out)
    assert (report["moved"], report["scheduled"], report["ok"], report["interrupted"]) == (3, 3, True, False)
    assert SECRET not in out
    assert main.main(["migrate-credentials", "--to", "kms", "--yes", "--json"]) == 0
    assert last_json(capsys.readouterr().out)["already_there"] == 3


def test_without_a_terminal_it_asks_for_yes_and_changes_nothing(stack, capsys, monkeypatch) -> None:
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    assert main.main(["migrate-credentials", "--to", "kms"]) == migrate.USAGE
    assert "add --yes" in capsys.readouterr().err
    assert main.main(["migrate-credentials", "--to", "kms", "--dry-run", "--json"]) == 0
    assert last_json(capsys.readouterr().out)["moved"] == 3  # still all on Secrets Manager


def test_missing_settings_are_named(stack, capsys, monkeypatch) -> None:
    monkeypatch.delenv("CREDENTIALS_TABLE_NAME")
    assert main.main(["migrate-credentials", "--to", "kms", "--yes"]) != 0
    assert "CREDENTIALS_TABLE_NAME" in capsys.readouterr().err


def test_a_stacks_outputs_and_parameters_are_the_settings() -> None:
    stack = {
        "StackName": "prod",
        "Outputs": [
            {"OutputKey": "TableName", "OutputValue": "prod-bindings"},
            {"OutputKey": "CredentialsTableName", "OutputValue": "prod-credentials"},
            {"OutputKey": "CredentialsKeyArn", "OutputValue": "arn:aws:kms:eu-west-1:1:key/k"},
            {"OutputKey": "ApiUrl", "OutputValue": "https://x"},
        ],
        "Parameters": [{"ParameterKey": "CredentialStore", "ParameterValue": "kms"}],
    }
    assert migrate.stack_environment(stack) == {
        "STACK_NAME": "prod",
        "SECRET_PREFIX": "keyhealth/prod/",
        "TABLE_NAME": "prod-bindings",
        "CREDENTIALS_TABLE_NAME": "prod-credentials",
        "CREDENTIALS_KMS_KEY_ID": "arn:aws:kms:eu-west-1:1:key/k",
        "CREDENTIAL_STORE": "kms",
    }
