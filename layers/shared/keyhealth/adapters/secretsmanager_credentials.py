"""Binding credentials in AWS Secrets Manager: one secret per binding, KMS-encrypted."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from keyhealth.adapters.aws_errors import error_code, storage_call
from keyhealth.bindings.ports import BINDING_ID_TAG, TENANT_TAG, StoredCredential
from keyhealth.domain.credentials import Credentials, KeyType, Secret
from keyhealth.domain.errors import CredentialsBeingDeleted, CredentialsUnreadable, StorageAdapterError

#: ListSecrets' largest page.
LIST_PAGE_SIZE = 100


def _serialise(credentials: Credentials) -> str:
    return json.dumps(
        {
            "api_key": credentials.api_key,
            "api_secret": credentials.api_secret.reveal(),
            "passphrase": credentials.passphrase.reveal() if credentials.passphrase else None,
            "key_type": credentials.key_type.value,
        }
    )


def _deserialise(text: str) -> Credentials:
    data = json.loads(text)
    return Credentials(
        api_key=data["api_key"],
        api_secret=Secret(data["api_secret"]),
        passphrase=Secret(data["passphrase"]) if data.get("passphrase") is not None else None,
        key_type=KeyType(data.get("key_type", "hmac")),
    )


def _stored(entry: dict[str, Any]) -> StoredCredential:
    """A ListSecrets or DescribeSecret entry: metadata and tags only (neither call returns a value)."""
    tags = {tag.get("Key"): tag.get("Value") for tag in entry.get("Tags") or []}
    created = entry.get("CreatedDate")
    return StoredCredential(
        secret_id=entry["ARN"],
        name=entry["Name"],
        tenant=tags.get(TENANT_TAG),
        binding_id=tags.get(BINDING_ID_TAG),
        created_at=created.astimezone(UTC) if isinstance(created, datetime) else None,
        scheduled_for_deletion=entry.get("DeletedDate") is not None,
    )


class SecretsManagerCredentialStore:
    def __init__(self, client: Any, *, kms_key_id: str | None = None) -> None:
        self._client = client
        self._kms_key_id = kms_key_id

    @contextmanager
    def _on_secret(self, secret_id: str, operation: str) -> Iterator[None]:
        """One call on an existing secret. Secrets Manager answers InvalidRequestException for a
        secret scheduled for deletion (an unbind got there first): that is said as such, so the
        use case can answer 404/409 rather than a transient 503."""
        try:
            with storage_call(operation):
                yield
        except StorageAdapterError as error:
            if error.reason == "InvalidRequestException" and self._scheduled(secret_id):
                raise CredentialsBeingDeleted(operation, "scheduled for deletion") from None
            if error.reason == "DecryptionFailure":
                # GetSecretValue's answer when the secret's KMS key is disabled, scheduled for deletion or
                # no longer lets this role decrypt: not transient, and not the key owner's to fix.
                raise CredentialsUnreadable(operation, error.reason) from None
            raise

    def create(self, name: str, credentials: Credentials, *, tags: dict[str, str], token: str) -> str:
        params: dict[str, Any] = {
            "Name": name,
            "ClientRequestToken": token,
            "SecretString": _serialise(credentials),
            "Tags": [{"Key": k, "Value": v} for k, v in tags.items()],
            "Description": "keyhealth binding credentials",
        }
        if self._kms_key_id:
            params["KmsKeyId"] = self._kms_key_id
        with storage_call("secretsmanager:CreateSecret"):
            return self._client.create_secret(**params)["ARN"]

    def read(self, secret_id: str, *, stage: str = "AWSCURRENT") -> Credentials:
        with self._on_secret(secret_id, "secretsmanager:GetSecretValue"):
            answer = self._client.get_secret_value(SecretId=secret_id, VersionStage=stage)
        return _deserialise(answer["SecretString"])

    def stage_pending(self, secret_id: str, credentials: Credentials, *, token: str) -> str:
        with self._on_secret(secret_id, "secretsmanager:PutSecretValue"):
            answer = self._client.put_secret_value(
                SecretId=secret_id,
                ClientRequestToken=token,
                SecretString=_serialise(credentials),
                VersionStages=["AWSPENDING"],
            )
        return answer["VersionId"]

    def current_version(self, secret_id: str) -> str:
        with storage_call("secretsmanager:DescribeSecret"):
            stages = self._client.describe_secret(SecretId=secret_id)["VersionIdsToStages"]
        return next(version for version, labels in stages.items() if "AWSCURRENT" in labels)

    def promote(self, secret_id: str, version_id: str) -> None:
        current = self.current_version(secret_id)
        # One call, so that a failure leaves AWSCURRENT where it was. Moving AWSCURRENT makes
        # Secrets Manager label the old version AWSPREVIOUS.
        with self._on_secret(secret_id, "secretsmanager:UpdateSecretVersionStage"):
            self._client.update_secret_version_stage(
                SecretId=secret_id, VersionStage="AWSCURRENT", MoveToVersionId=version_id, RemoveFromVersionId=current
            )

    def demote(self, secret_id: str, version_id: str, *, restore_version_id: str) -> None:
        with storage_call("secretsmanager:UpdateSecretVersionStage"):
            self._client.update_secret_version_stage(
                SecretId=secret_id,
                VersionStage="AWSCURRENT",
                MoveToVersionId=restore_version_id,
                RemoveFromVersionId=version_id,
            )

    def discard_pending(self, secret_id: str, version_id: str) -> None:
        with storage_call("secretsmanager:UpdateSecretVersionStage"):
            self._client.update_secret_version_stage(
                SecretId=secret_id, VersionStage="AWSPENDING", RemoveFromVersionId=version_id
            )

    def schedule_deletion(self, secret_id: str, *, recovery_days: int) -> None:
        try:
            self._client.delete_secret(SecretId=secret_id, RecoveryWindowInDays=recovery_days)
        except ClientError as error:
            # A retried unbind finds the secret already scheduled: that is the state we want.
            if error_code(error) == "InvalidRequestException" and self._scheduled(secret_id):
                return
            raise StorageAdapterError("secretsmanager:DeleteSecret", error_code(error)) from None

    def _scheduled(self, secret_id: str) -> bool:
        with storage_call("secretsmanager:DescribeSecret"):
            return "DeletedDate" in self._client.describe_secret(SecretId=secret_id)

    def restore(self, secret_id: str) -> None:
        with storage_call("secretsmanager:RestoreSecret"):
            self._client.restore_secret(SecretId=secret_id)

    def delete_now(self, secret_id: str) -> None:
        with storage_call("secretsmanager:DeleteSecret"):
            self._client.delete_secret(SecretId=secret_id, ForceDeleteWithoutRecovery=True)

    def list_stored(self, prefix: str) -> Iterator[StoredCredential]:
        """ListSecrets, page by page, by name filter. The filter is only a first cut (AWS documents
        loose matching for some keys): each name is checked against the prefix here, exactly, so a
        secret of another stack whose name merely resembles ours is never returned."""
        params: dict[str, Any] = {
            "Filters": [{"Key": "name", "Values": [prefix]}],
            "IncludePlannedDeletion": True,
            "MaxResults": LIST_PAGE_SIZE,
        }
        while True:
            with storage_call("secretsmanager:ListSecrets"):
                page = self._client.list_secrets(**params)
            for entry in page.get("SecretList") or []:
                if str(entry.get("Name", "")).startswith(prefix):
                    yield _stored(entry)
            token = page.get("NextToken")
            if not token:
                return
            params["NextToken"] = token

    def describe(self, secret_id: str) -> StoredCredential | None:
        try:
            with storage_call("secretsmanager:DescribeSecret"):
                return _stored(self._client.describe_secret(SecretId=secret_id))
        except StorageAdapterError as error:
            if error.reason == "ResourceNotFoundException":
                return None
            raise
