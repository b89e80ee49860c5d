"""The Secrets Manager store's errors on reads, on moto: a secret whose KMS key no longer decrypts it is
`CredentialsUnreadable` (an operator finding, not a transient 503), other refusals stay storage errors."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from keyhealth.adapters.secretsmanager_credentials import SecretsManagerCredentialStore
from keyhealth.domain.credentials import Credentials, Secret
from keyhealth.domain.errors import CredentialsUnreadable, StorageAdapterError
from tests.support.aws import SESSION

CREDENTIALS = Credentials(api_key="KEY0" * 16, api_secret=Secret("sm-canary-secret" * 2))


class Refusing:
    """The Secrets Manager client, whose GetSecretValue answers `code` (as AWS does when the secret's KMS
    key is disabled, pending deletion, or no longer lets this role decrypt: DecryptionFailure)."""

    def __init__(self, client: Any, code: str) -> None:
        self._client, self._code = client, code

    def __getattr__(self, name: str) -> Any:
        if name != "get_secret_value":
            return getattr(self._client, name)

        def refuse(**params: Any) -> Any:
            raise ClientError({"Error": {"Code": self._code, "Message": "refused"}}, "GetSecretValue")

        return refuse


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    with mock_aws():
        yield SESSION.client("secretsmanager")


def test_a_secret_that_cannot_be_decrypted_is_unreadable(client: Any) -> None:
    secret_id = SecretsManagerCredentialStore(client).create(
        "keyhealth/test/b-1", CREDENTIALS, tags={}, token="00000000-0000-4000-8000-000000000001"
    )
    with pytest.raises(CredentialsUnreadable) as unreadable:
        SecretsManagerCredentialStore(Refusing(client, "DecryptionFailure")).read(secret_id)
    assert (unreadable.value.operation, unreadable.value.reason) == (
        "secretsmanager:GetSecretValue",
        "DecryptionFailure",
    )
    assert "sm-canary-secret" not in str(unreadable.value)


@pytest.mark.parametrize("code", ["ThrottlingException", "InternalServiceError", "AccessDeniedException"])
def test_other_refusals_are_plain_storage_errors(client: Any, code: str) -> None:
    secret_id = SecretsManagerCredentialStore(client).create(
        "keyhealth/test/b-1", CREDENTIALS, tags={}, token="00000000-0000-4000-8000-000000000001"
    )
    with pytest.raises(StorageAdapterError) as failed:
        SecretsManagerCredentialStore(Refusing(client, code)).read(secret_id)
    assert not isinstance(failed.value, CredentialsUnreadable)
    assert failed.value.reason == code
