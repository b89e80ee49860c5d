"""RoutedCredentialStore on moto: both real stores behind one port; new credentials go to the
configured store, everything else to the store a binding's secret id names, and a read of a copy a
migration has just retired falls back to the other store's copy of the same name."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from moto import mock_aws

from keyhealth.adapters.kms_credentials import KmsCredentialStore
from keyhealth.adapters.routed_credentials import KMS, SECRETS_MANAGER, RoutedCredentialStore, name_of, store_of
from keyhealth.adapters.secretsmanager_credentials import SecretsManagerCredentialStore
from keyhealth.bindings.ports import CredentialStore
from keyhealth.domain.credentials import Credentials, Secret
from keyhealth.domain.errors import CredentialsBeingDeleted, CredentialsUnreadable, StorageAdapterError
from tests.support.aws import SESSION
from tests.support.clock import FakeClock

TABLE = "keyhealth-credentials"
PREFIX = "keyhealth/test/"
TENANT = "123456789012:role/platform"
OLD = Credentials(api_key="OLD0" * 16, api_secret=Secret("oldsecret" * 4))
NEW = Credentials(api_key="NEW0" * 16, api_secret=Secret("newsecret" * 4))
TOKEN_1 = "00000000-0000-4000-8000-000000000001"  # Secrets Manager wants 32 characters or more
TOKEN_2 = "00000000-0000-4000-8000-000000000002"


@dataclass
class Stores:
    secretsmanager: SecretsManagerCredentialStore
    kms: KmsCredentialStore
    built: list[str]

    def routed(self, new_in: str) -> RoutedCredentialStore:
        def factory(name: str, store: CredentialStore) -> Any:
            def build() -> CredentialStore:
                self.built.append(name)
                return store

            return build

        return RoutedCredentialStore(
            {SECRETS_MANAGER: factory(SECRETS_MANAGER, self.secretsmanager), KMS: factory(KMS, self.kms)},
            new_in=new_in,
        )


@pytest.fixture
def stores() -> Iterator[Stores]:
    with mock_aws():
        dynamodb, kms = SESSION.client("dynamodb"), SESSION.client("kms")
        dynamodb.create_table(
            TableName=TABLE,
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        key = kms.create_key()["KeyMetadata"]["Arn"]
        yield Stores(
            SecretsManagerCredentialStore(SESSION.client("secretsmanager")),
            KmsCredentialStore(dynamodb, kms, table_name=TABLE, key_id=key, stack_name="test", clock=FakeClock()),
            [],
        )


def tags(binding_id: str) -> dict[str, str]:
    return {"keyhealth:tenant": TENANT, "keyhealth:binding_id": binding_id}


def test_ids_name_their_store_and_name(stores: Stores) -> None:
    arn = stores.secretsmanager.create(f"{PREFIX}b-1", OLD, tags=tags("b-1"), token=TOKEN_1)
    assert store_of(arn) == SECRETS_MANAGER
    assert name_of(arn) == f"{PREFIX}b-1"
    assert store_of(f"{PREFIX}b-1") == KMS
    assert name_of(f"{PREFIX}b-1") == f"{PREFIX}b-1"


@pytest.mark.parametrize("new_in", [SECRETS_MANAGER, KMS])
def test_create_goes_to_the_configured_store_and_the_other_is_never_built(stores: Stores, new_in: str) -> None:
    routed = stores.routed(new_in)
    secret_id = routed.create(f"{PREFIX}b-1", OLD, tags=tags("b-1"), token=TOKEN_1)
    assert store_of(secret_id) == new_in
    assert routed.read(secret_id) == OLD
    version = routed.stage_pending(secret_id, NEW, token=TOKEN_2)
    routed.promote(secret_id, version)
    assert routed.read(secret_id) == NEW
    assert stores.built == [new_in]


def test_each_binding_is_served_by_the_store_its_id_names(stores: Stores) -> None:
    arn = stores.secretsmanager.create(f"{PREFIX}b-sm", OLD, tags=tags("b-sm"), token=TOKEN_1)
    kms_id = stores.kms.create(f"{PREFIX}b-kms", NEW, tags=tags("b-kms"), token=TOKEN_2)
    routed = stores.routed(KMS)
    assert routed.read(arn) == OLD
    assert routed.read(kms_id) == NEW
    routed.schedule_deletion(arn, recovery_days=7)
    assert stores.secretsmanager.describe(arn).scheduled_for_deletion  # type: ignore[union-attr]
    assert not stores.kms.describe(kms_id).scheduled_for_deletion  # type: ignore[union-attr]
    listed = {stored.name for stored in routed.list_stored(PREFIX)}
    assert listed == {f"{PREFIX}b-sm", f"{PREFIX}b-kms"}


@pytest.mark.parametrize("moved_to", [KMS, SECRETS_MANAGER])
def test_a_read_of_a_retired_copy_falls_back_to_the_copy_of_the_same_name(stores: Stores, moved_to: str) -> None:
    """A reader that read the binding before a migration switched it still gets its credentials."""
    old_store = stores.secretsmanager if moved_to == KMS else stores.kms
    new_store = stores.kms if moved_to == KMS else stores.secretsmanager
    old_id = old_store.create(f"{PREFIX}b-1", OLD, tags=tags("b-1"), token=TOKEN_1)
    new_store.create(f"{PREFIX}b-1", OLD, tags=tags("b-1"), token=TOKEN_1)
    old_store.schedule_deletion(old_id, recovery_days=7)
    assert stores.routed(moved_to).read(old_id) == OLD


def test_a_retired_copy_without_another_copy_says_so(stores: Stores) -> None:
    arn = stores.secretsmanager.create(f"{PREFIX}b-1", OLD, tags=tags("b-1"), token=TOKEN_1)
    stores.secretsmanager.schedule_deletion(arn, recovery_days=7)
    with pytest.raises(CredentialsBeingDeleted):
        stores.routed(KMS).read(arn)


def test_unreadable_credentials_never_fall_back(stores: Stores) -> None:
    """Only a copy that is gone or retiring is looked for elsewhere: an undecryptable one is an
    operator's problem, and a copy in the other store must not hide it."""
    kms_id = stores.kms.create(f"{PREFIX}b-1", OLD, tags=tags("b-1"), token=TOKEN_1)
    stores.secretsmanager.create(f"{PREFIX}b-1", NEW, tags=tags("b-1"), token=TOKEN_1)
    item = stores.kms._dynamodb.get_item(TableName=TABLE, Key={"pk": {"S": kms_id}})["Item"]
    item["tenant"] = {"S": "210987654321:role/other-platform"}  # the context no longer matches
    stores.kms._dynamodb.put_item(TableName=TABLE, Item=item)
    with pytest.raises(CredentialsUnreadable):
        stores.routed(KMS).read(kms_id)


def test_writes_never_fall_back(stores: Stores) -> None:
    """(On the KMS store's copy: moto lets PutSecretValue write to a secret scheduled for deletion,
    which Secrets Manager refuses.)"""
    kms_id = stores.kms.create(f"{PREFIX}b-1", OLD, tags=tags("b-1"), token=TOKEN_1)
    stores.secretsmanager.create(f"{PREFIX}b-1", OLD, tags=tags("b-1"), token=TOKEN_1)
    stores.kms.schedule_deletion(kms_id, recovery_days=7)
    with pytest.raises(CredentialsBeingDeleted):
        stores.routed(SECRETS_MANAGER).stage_pending(kms_id, NEW, token=TOKEN_2)
    assert stores.secretsmanager.read(f"{PREFIX}b-1") == OLD
    with pytest.raises(StorageAdapterError, match="ResourceNotFoundException"):
        stores.secretsmanager.read(f"{PREFIX}b-1", stage="AWSPENDING")


def test_the_stores_must_be_named() -> None:
    with pytest.raises(ValueError, match="must name the stores"):
        RoutedCredentialStore({SECRETS_MANAGER: lambda: None}, new_in=SECRETS_MANAGER)  # type: ignore[dict-item,return-value]
    with pytest.raises(ValueError, match="must name the stores"):
        RoutedCredentialStore({SECRETS_MANAGER: lambda: None, KMS: lambda: None}, new_in="vault")  # type: ignore[dict-item,return-value]


def test_a_store_that_is_not_configured_is_refused_and_never_fallen_back_on(stores: Stores) -> None:
    """A process without the KMS store's settings (a Secrets Manager-only local stack)."""
    routed = RoutedCredentialStore(
        {SECRETS_MANAGER: lambda: stores.secretsmanager, KMS: lambda: None}, new_in=SECRETS_MANAGER
    )
    arn = routed.create(f"{PREFIX}b-1", OLD, tags=tags("b-1"), token=TOKEN_1)
    routed.schedule_deletion(arn, recovery_days=7)
    with pytest.raises(CredentialsBeingDeleted):
        routed.read(arn)
    with pytest.raises(StorageAdapterError, match="StoreNotConfigured"):
        routed.read(f"{PREFIX}b-2")
    assert [stored.name for stored in routed.list_stored(PREFIX)] == [f"{PREFIX}b-1"]
