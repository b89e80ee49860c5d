"""The whole-stack test harness's types: the exchange simulators a test talks to, the stack
(moto, the wiring's container, fault-injecting AWS clients) and a handler's answer. The fixtures
that build them are in tests/integration/conftest.py."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, ClassVar

import pytest

from keyhealth import wiring
from keyhealth.bindings.ports import Services
from keyhealth.domain.credentials import Credentials
from simulators.base import DemoKey, ExchangeSimulator
from tests.support.aws import TABLE
from tests.support.events import LambdaContext
from tests.support.faults import FaultyClient

SECRET_PREFIX = "keyhealth/test-stack/"
CREDENTIALS_TABLE = "keyhealth-credentials"


@dataclass
class Exchanges:
    urls: dict[str, str]
    simulators: dict[str, ExchangeSimulator]
    keys: dict[tuple[str, str], DemoKey]

    def key(self, exchange: str, label: str) -> DemoKey:
        return self.keys[(exchange, label)]

    def first(self, exchange: str, status: str) -> DemoKey:
        return next(k for (ex, _), k in self.keys.items() if ex == exchange and k.expected_status == status)


@dataclass
class Stack:
    services: Services
    dynamodb: FaultyClient
    secretsmanager: FaultyClient
    sns: FaultyClient
    sqs: Any
    queue_url: str
    exchanges: Exchanges
    kms_key_arn: str
    container: wiring.Container
    kms: FaultyClient | None = None
    store: str = "secretsmanager"  # the credential store under test: CREDENTIAL_STORE
    _alerts: list[dict[str, Any]] = field(default_factory=list)

    # Each Secrets Manager call a test breaks, and the KMS store's call that fails the same step.
    KMS_FAULTS: ClassVar[dict[str, tuple[str, str]]] = {
        "create_secret": ("kms", "generate_data_key"),
        "put_secret_value": ("kms", "generate_data_key"),
        "get_secret_value": ("kms", "decrypt"),
        "delete_secret": ("dynamodb", "update_item"),  # unbind's only update_item: scheduling the deletion
    }

    def requires_secrets_manager(self, why: str) -> None:
        """Skip a test of Secrets Manager's own mechanics (version stages, DeletedDate, its call names) when
        the stack runs the KMS store; `why` names the KMS store's tests of the same guarantee."""
        if self.store != "secretsmanager":
            pytest.skip(f"Secrets Manager mechanics: for the kms store see {why}")

    def credentials_client(self, secrets_manager_call: str) -> tuple[FaultyClient, str]:
        """The client and call that fail the credential step `secrets_manager_call` names, in the store under
        test (skipped when the KMS store has no call of its own for that step)."""
        if self.store == "secretsmanager":
            return self.secretsmanager, secrets_manager_call
        if secrets_manager_call not in self.KMS_FAULTS:
            pytest.skip(f"{secrets_manager_call}: no KMS-store call of its own (tests/integration/adapters)")
        client, call = self.KMS_FAULTS[secrets_manager_call]
        return getattr(self, client), call

    def fault_point(self, client: str, call: str) -> tuple[FaultyClient, str]:
        """The client and call a test breaks or pauses: `("secretsmanager", call)` means the credential step
        that call makes, in the store under test."""
        if client == "secretsmanager":
            return self.credentials_client(call)
        return getattr(self, client), call

    def delete_now_point(self) -> tuple[FaultyClient, str]:
        """The call that removes credentials at once (a failed bind's undo): Secrets Manager's DeleteSecret
        without recovery, the KMS store's DeleteItem on its table."""
        return (
            (self.secretsmanager, "delete_secret") if self.store == "secretsmanager" else (self.dynamodb, "delete_item")
        )

    def fail_credentials(self, secrets_manager_call: str) -> None:
        client, call = self.credentials_client(secrets_manager_call)
        client.fail(call)

    def heal_credentials(self) -> None:
        self.secretsmanager.heal()
        if self.kms is not None:
            self.kms.heal()

    def stored_credentials(self, binding_id: str, stage: str = "AWSCURRENT") -> Credentials:
        """What the store under test holds for the binding (read through its adapter)."""
        return self.container.credentials.store(self.store).read(f"{SECRET_PREFIX}{binding_id}", stage=stage)

    def credentials_live(self, binding_id: str) -> bool:
        stored = self.container.credentials.store(self.store).describe(f"{SECRET_PREFIX}{binding_id}")
        return stored is not None and not stored.scheduled_for_deletion

    def credential_items(self) -> list[dict[str, Any]]:
        """The KMS store's credentials table (empty for Secrets Manager)."""
        return self.table_items(CREDENTIALS_TABLE) if self.store == "kms" else []

    def invoke(self, function: ModuleType, event: dict[str, Any]) -> Response:
        answer = function.lambda_handler(event, LambdaContext())
        return Response(answer)

    def alerts(self) -> list[dict[str, Any]]:
        """SNS messages published so far (read through an SQS subscription)."""
        while True:
            batch = self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10).get("Messages", [])
            if not batch:
                return self._alerts
            for message in batch:
                envelope = json.loads(message["Body"])
                self._alerts.append(
                    {
                        "subject": envelope.get("Subject"),
                        "body": json.loads(envelope["Message"]),
                        "attributes": {k: v["Value"] for k, v in envelope.get("MessageAttributes", {}).items()},
                    }
                )
                self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])

    def table_items(self, table: str = TABLE) -> list[dict[str, Any]]:
        return self.dynamodb.scan(TableName=table)["Items"]

    def secret_names(self) -> list[str]:
        """The live credentials' names in the store under test (not those scheduled for deletion)."""
        if self.store == "kms":
            return sorted(i["pk"]["S"] for i in self.credential_items() if "deleted_at" not in i)
        return [s["Name"] for s in self.secretsmanager.list_secrets()["SecretList"] if "DeletedDate" not in s]

    def binding_items(self) -> list[dict[str, Any]]:
        return [i for i in self.table_items() if i["sk"]["S"].startswith("B#")]


class Response:
    def __init__(self, answer: dict[str, Any]) -> None:
        self.raw = answer
        self.status = answer["statusCode"]
        self.text = answer.get("body") or ""
        headers = dict(answer.get("headers") or {})
        for name, values in (answer.get("multiValueHeaders") or {}).items():
            headers.setdefault(name, values[-1])
        self.headers = {k.lower(): v for k, v in headers.items()}

    @property
    def json(self) -> Any:
        return json.loads(self.text)

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.text[:300]}>"
