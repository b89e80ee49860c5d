"""KmsCredentialStore on moto: credentials in DynamoDB under KMS envelope encryption, with the
versions, deletion and errors of the Secrets Manager store (bindings.ports.CredentialStore)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar

import pytest
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from moto import mock_aws

from keyhealth.adapters.kms_credentials import MAX_RECOVERY_DAYS, WRITE_ATTEMPTS, KmsCredentialStore
from keyhealth.adapters.secretsmanager_credentials import _serialise
from keyhealth.api.requests import MAX_PASSPHRASE, MAX_SECRET
from keyhealth.bindings.model import BindCommand, RotateCommand
from keyhealth.bindings.ports import Services
from keyhealth.bindings.sweeper import sweep_orphans
from keyhealth.bindings.usecases import bind_key, rotate_credentials, unbind, verify_binding
from keyhealth.domain.credentials import Credentials, KeyType, Secret
from keyhealth.domain.errors import (
    CredentialsBeingDeleted,
    CredentialsConflict,
    CredentialsUnreadable,
    StorageAdapterError,
    StorageUnavailable,
)
from keyhealth.domain.exchange import CheckResult
from keyhealth.domain.ids import new_binding_id
from keyhealth.domain.model import Report, Scope, Status
from keyhealth.exchanges.registry import Exchange
from tests.support.aws import SESSION
from tests.support.clock import FakeClock
from tests.support.fakes import FakeAlerts, FakeBindings, FakeChecker
from tests.support.faults import FaultyClient

CREDENTIALS_TABLE = "keyhealth-credentials"
STACK = "keyhealth-test"
PREFIX = "keyhealth/test/"
TENANT = "123456789012:role/platform"
OTHER_TENANT = "210987654321:role/other-platform"
DAY = 86_400

CANARY_SECRET = "canary-secret-3f9c1d7e5b2a4c6e8f0a"
CANARY_PASSPHRASE = "canary-passphrase-9e8d7c6b5a4f3e2d"
HMAC = Credentials(api_key="HMACKEY0" * 8, api_secret=Secret(CANARY_SECRET), passphrase=Secret(CANARY_PASSPHRASE))
OLD = Credentials(api_key="OLD0" * 16, api_secret=Secret("oldsecret" * 4))
NEW = Credentials(api_key="NEW0" * 16, api_secret=Secret("newsecret" * 4))
NEWER = Credentials(api_key="NEWR" * 16, api_secret=Secret("newersecret" * 4))


# ------------------------------------------------------------------------------ fixtures
@dataclass
class Aws:
    dynamodb: Any
    kms: Any
    key_arn: str
    clock: FakeClock

    def store(self, *, dynamodb: Any = None, kms: Any = None, stack: str = STACK) -> KmsCredentialStore:
        """One container's store (each container builds its own over the same table and key)."""
        return KmsCredentialStore(
            dynamodb or self.dynamodb,
            kms or self.kms,
            table_name=CREDENTIALS_TABLE,
            key_id=self.key_arn,
            stack_name=stack,
            clock=self.clock,
        )

    def raw(self, credential_id: str) -> dict[str, Any]:
        return self.dynamodb.get_item(TableName=CREDENTIALS_TABLE, Key={"pk": {"S": credential_id}})["Item"]

    def put_raw(self, item: dict[str, Any]) -> None:
        self.dynamodb.put_item(TableName=CREDENTIALS_TABLE, Item=item)


@pytest.fixture(scope="module")
def backend() -> Iterator[tuple[Any, Any, str]]:
    """moto for the module, with its KMS key (moto takes ~0.1 s to create one): each test gets a
    fresh table. Tests that change the key's state create their own."""
    with mock_aws():
        kms = SESSION.client("kms")
        key_arn = kms.create_key(Description="keyhealth binding secrets")["KeyMetadata"]["Arn"]
        yield SESSION.client("dynamodb"), kms, key_arn


@pytest.fixture
def aws(backend: tuple[Any, Any, str]) -> Iterator[Aws]:
    dynamodb, kms, key_arn = backend
    # The item's key schema: pk = the credential id; DynamoDB's TTL deletes it after expires_at.
    dynamodb.create_table(
        TableName=CREDENTIALS_TABLE,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    dynamodb.update_time_to_live(
        TableName=CREDENTIALS_TABLE, TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires_at"}
    )
    yield Aws(dynamodb, kms, key_arn, FakeClock())
    dynamodb.delete_table(TableName=CREDENTIALS_TABLE)


@pytest.fixture
def store(aws: Aws) -> KmsCredentialStore:
    return aws.store()


@pytest.fixture(scope="module")
def rsa_pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=4096)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def tags(binding_id: str, tenant: str = TENANT) -> dict[str, str]:
    return {"keyhealth:tenant": tenant, "keyhealth:binding_id": binding_id}


def created(
    store: KmsCredentialStore,
    binding_id: str = "b-1",
    credentials: Credentials = OLD,
    *,
    tenant: str = TENANT,
    token: str = "v-old",
) -> str:
    return store.create(f"{PREFIX}{binding_id}", credentials, tags=tags(binding_id, tenant), token=token)


def client_error(code: str, operation: str) -> ClientError:
    # AWS messages can echo request parameters: the adapter must never repeat this one.
    message = f"injected {code}: {CANARY_SECRET}"
    return ClientError({"Error": {"Code": code, "Message": message}}, operation_name=operation)


class Failing:
    """Delegates to a boto3 client; `op` raises ClientError(`code`) while `code` is set."""

    def __init__(self, client: Any, op: str, code: str | None = None) -> None:
        self._client, self.op, self.code = client, op, code
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        if name != self.op:
            return attribute

        def call(**params: Any) -> Any:
            self.calls.append(name)
            if self.code is not None:
                raise client_error(self.code, name)
            return attribute(**params)

        return call


class KeyStates:
    """A KMS client that refuses keys as AWS does. moto 5.2.5 encrypts and decrypts under a disabled
    key or one pending deletion (measured here); AWS answers DisabledException and
    KMSInvalidStateException. This wrapper asks moto for the key's state and answers as AWS would."""

    _REFUSED: ClassVar[dict[str, str]] = {
        "Disabled": "DisabledException",
        "PendingDeletion": "KMSInvalidStateException",
    }

    def __init__(self, kms: Any, key_id: str) -> None:
        self._kms, self._key_id = kms, key_id

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._kms, name)
        if name not in ("decrypt", "generate_data_key"):
            return attribute

        def call(**params: Any) -> Any:
            state = self._kms.describe_key(KeyId=self._key_id)["KeyMetadata"]["KeyState"]
            if code := self._REFUSED.get(state):
                raise client_error(code, name)
            return attribute(**params)

        return call


# ---------------------------------------------------------------------------- round trips
def test_create_returns_the_name_as_the_id_and_reads_back_hmac_credentials(store):
    secret_id = created(store, credentials=HMAC)

    assert secret_id == f"{PREFIX}b-1"
    assert store.read(secret_id) == HMAC
    assert store.current_version(secret_id) == "v-old"


def test_credentials_without_a_passphrase_round_trip(store):
    assert store.read(created(store, credentials=OLD)) == OLD


def test_an_rsa_4096_pem_with_a_long_passphrase_round_trips_though_plain_kms_encrypt_refuses_it(aws, store, rsa_pem):
    pem = Credentials(
        api_key="RSAKEY00" * 8, api_secret=Secret(rsa_pem), passphrase=Secret("p" * 900), key_type=KeyType.RSA
    )
    plaintext = _serialise(pem).encode()
    assert len(plaintext) > 4096
    with pytest.raises(ClientError) as refused:  # why the store uses envelope encryption
        aws.kms.encrypt(KeyId=aws.key_arn, Plaintext=plaintext)
    assert refused.value.response["Error"]["Code"] == "ValidationException"

    assert store.read(created(store, credentials=pem)) == pem


def test_the_largest_secret_the_api_accepts_round_trips(store):
    largest = Credentials(
        api_key="BIGKEY00" * 8, api_secret=Secret("s" * MAX_SECRET), passphrase=Secret("q" * MAX_PASSPHRASE)
    )
    secret_id = created(store, credentials=largest)
    store.stage_pending(secret_id, largest, token="v-2")
    store.promote(secret_id, "v-2")

    assert store.read(secret_id) == largest
    assert store.read(secret_id, stage="AWSPREVIOUS") == largest


def test_each_write_takes_one_kms_call_and_each_read_one(aws):
    kms = FaultyClient(aws.kms)
    store = aws.store(kms=kms)
    secret_id = created(store)
    store.stage_pending(secret_id, NEW, token="v-new")
    store.read(secret_id)
    store.read(secret_id, stage="AWSPENDING")

    assert kms.calls == ["generate_data_key", "generate_data_key", "decrypt", "decrypt"]


def test_the_stored_item_holds_no_plaintext(aws, store):
    secret_id = created(store, credentials=HMAC)
    store.stage_pending(secret_id, HMAC, token="v-2")
    store.promote(secret_id, "v-2")

    items = aws.dynamodb.scan(TableName=CREDENTIALS_TABLE)["Items"]

    def binaries(value: Any) -> Iterator[bytes]:
        if isinstance(value, dict):
            for inner in value.values():
                yield from binaries(inner)
        elif isinstance(value, bytes):
            yield value

    stored = b"".join(binaries(items))
    text = repr(items)
    for canary in (CANARY_SECRET, CANARY_PASSPHRASE, HMAC.api_key):
        assert canary not in text
        assert canary.encode() not in stored
    item = items[0]
    assert (item["tenant"]["S"], item["binding_id"]["S"]) == (TENANT, "b-1")  # for the sweeper
    assert set(item["current"]["M"]) == {"version", "key", "nonce", "blob"}
    assert len(item["current"]["M"]["nonce"]["B"]) == 12
    assert item["current"]["M"]["nonce"]["B"] != item["previous"]["M"]["nonce"]["B"]
    assert item["current"]["M"]["key"]["B"] != item["previous"]["M"]["key"]["B"]  # a data key per version


# ------------------------------------------------------------------------ wrong context
def test_a_ciphertext_copied_onto_another_binding_of_the_same_tenant_is_unreadable(aws, store):
    source, target = created(store, "b-1", HMAC), created(store, "b-2", OLD)
    item = aws.raw(target)
    item["current"] = aws.raw(source)["current"]
    aws.put_raw(item)

    with pytest.raises(CredentialsUnreadable) as unreadable:
        store.read(target)

    assert (unreadable.value.operation, unreadable.value.reason) == ("kms:Decrypt", "InvalidCiphertextException")
    assert CANARY_SECRET not in str(unreadable.value)
    assert store.read(source) == HMAC  # the original is untouched


def test_a_ciphertext_copied_onto_another_tenants_binding_is_unreadable(aws, store):
    source, target = created(store, "b-1", HMAC), created(store, "b-9", OLD, tenant=OTHER_TENANT)
    item = aws.raw(target)
    item["current"] = aws.raw(source)["current"]
    aws.put_raw(item)

    with pytest.raises(CredentialsUnreadable):
        store.read(target)


def test_an_item_copied_whole_under_another_credential_id_is_unreadable(aws, store):
    # Its tenant and binding id travel with it, so KMS accepts the context: the AES-GCM associated
    # data, which binds the credential id too, is what refuses it.
    source = created(store, "b-1", HMAC)
    copy = {**aws.raw(source), "pk": {"S": f"{PREFIX}b-2"}}
    aws.put_raw(copy)

    with pytest.raises(CredentialsUnreadable) as unreadable:
        store.read(f"{PREFIX}b-2")

    assert unreadable.value.reason == "InvalidTag"


def test_credentials_of_another_stack_are_unreadable(aws, store):
    secret_id = created(store, credentials=HMAC)

    with pytest.raises(CredentialsUnreadable):
        aws.store(stack="keyhealth-other").read(secret_id)


def test_a_tampered_ciphertext_is_unreadable(aws, store):
    secret_id = created(store, credentials=HMAC)
    item = aws.raw(secret_id)
    blob = bytearray(item["current"]["M"]["blob"]["B"])
    blob[5] ^= 0x01
    item["current"]["M"]["blob"]["B"] = bytes(blob)
    aws.put_raw(item)

    with pytest.raises(CredentialsUnreadable) as unreadable:
        store.read(secret_id)

    assert (unreadable.value.operation, unreadable.value.reason) == ("aes-gcm:decrypt", "InvalidTag")


def test_a_malformed_item_is_unreadable(aws, store):
    secret_id = created(store)
    item = aws.raw(secret_id)
    del item["current"]["M"]["nonce"]
    aws.put_raw(item)

    with pytest.raises(CredentialsUnreadable):
        store.read(secret_id)


# ------------------------------------------------------------------------------ KMS errors
@pytest.mark.parametrize(
    ("stop", "code"),
    [
        (lambda kms, key: kms.disable_key(KeyId=key), "DisabledException"),
        (lambda kms, key: kms.schedule_key_deletion(KeyId=key, PendingWindowInDays=7), "KMSInvalidStateException"),
    ],
    ids=["disabled", "pending-deletion"],
)
def test_a_key_disabled_or_pending_deletion_makes_credentials_unreadable(aws, stop, code):
    key = aws.kms.create_key()["KeyMetadata"]  # its own: the module's key stays enabled
    aws.key_arn = key["Arn"]
    store = aws.store(kms=KeyStates(aws.kms, key["Arn"]))
    secret_id = created(store, credentials=HMAC)
    stop(aws.kms, key["KeyId"])  # moto's disable_key and schedule_key_deletion want the id, not the ARN

    with pytest.raises(CredentialsUnreadable) as unreadable:
        store.read(secret_id)

    assert unreadable.value.reason == code


def test_a_data_key_of_another_kms_key_is_unreadable(aws, store):
    # A ciphertext encrypted under a key the store was not configured with (Decrypt names KeyId).
    secret_id = created(store, credentials=HMAC)
    other_key = aws.kms.create_key()["KeyMetadata"]["Arn"]

    with pytest.raises(CredentialsUnreadable) as unreadable:
        KmsCredentialStore(
            aws.dynamodb, aws.kms, table_name=CREDENTIALS_TABLE, key_id=other_key, stack_name=STACK, clock=aws.clock
        ).read(secret_id)

    assert unreadable.value.reason in ("IncorrectKeyException", "AccessDeniedException")


@pytest.mark.parametrize(
    "code",
    [
        "InvalidCiphertextException",
        "IncorrectKeyException",
        "DisabledException",
        "KMSInvalidStateException",
        "NotFoundException",
        "AccessDeniedException",
    ],
)
def test_decrypt_refusals_are_unreadable(aws, code):
    kms = Failing(aws.kms, "decrypt")
    store = aws.store(kms=kms)
    secret_id = created(store, credentials=HMAC)
    kms.code = code

    with pytest.raises(CredentialsUnreadable) as unreadable:
        store.read(secret_id)

    assert (unreadable.value.operation, unreadable.value.reason) == ("kms:Decrypt", code)
    assert CANARY_SECRET not in str(unreadable.value)


@pytest.mark.parametrize(
    "code", ["ThrottlingException", "KMSInternalException", "DependencyTimeoutException", "ServiceUnavailable"]
)
def test_throttling_and_outages_on_decrypt_are_transient_not_unreadable(aws, code):
    kms = Failing(aws.kms, "decrypt")
    store = aws.store(kms=kms)
    secret_id = created(store, credentials=HMAC)
    kms.code = code

    with pytest.raises(StorageAdapterError) as failed:
        store.read(secret_id)

    assert not isinstance(failed.value, CredentialsUnreadable)
    assert (failed.value.operation, failed.value.reason) == ("kms:Decrypt", code)
    assert CANARY_SECRET not in str(failed.value)
    kms.code = None
    assert store.read(secret_id) == HMAC  # a retry later works


def test_a_refused_data_key_writes_nothing_and_is_a_plain_storage_error(aws):
    kms = Failing(aws.kms, "generate_data_key", "DisabledException")
    store = aws.store(kms=kms)

    with pytest.raises(StorageAdapterError) as failed:
        created(store)

    assert not isinstance(failed.value, CredentialsUnreadable)  # nothing stored is unreadable
    assert failed.value.operation == "kms:GenerateDataKey"
    assert aws.dynamodb.scan(TableName=CREDENTIALS_TABLE)["Items"] == []


def test_a_dynamodb_failure_is_a_storage_error_without_the_aws_message(aws):
    dynamodb = Failing(aws.dynamodb, "get_item")
    store = aws.store(dynamodb=dynamodb)
    secret_id = created(store)
    dynamodb.code = "ProvisionedThroughputExceededException"

    with pytest.raises(StorageAdapterError) as failed:
        store.read(secret_id)

    assert failed.value.reason == "ProvisionedThroughputExceededException"
    assert CANARY_SECRET not in str(failed.value)


def test_reading_missing_credentials_or_a_missing_stage_is_not_found(store):
    with pytest.raises(StorageAdapterError) as missing:
        store.read(f"{PREFIX}nope")
    assert missing.value.reason == "ResourceNotFoundException"
    assert not isinstance(missing.value, (CredentialsUnreadable, CredentialsBeingDeleted))

    secret_id = created(store)
    for stage in ("AWSPENDING", "AWSPREVIOUS", "NOSUCHSTAGE"):
        with pytest.raises(StorageAdapterError) as no_stage:
            store.read(secret_id, stage=stage)
        assert no_stage.value.reason == "ResourceNotFoundException"


# -------------------------------------------------------------------------------- create
def test_a_retried_create_with_the_same_token_is_the_same_request(aws, store):
    first = created(store, credentials=HMAC, token="t-1")
    again = created(store, credentials=HMAC, token="t-1")

    assert again == first
    assert aws.dynamodb.scan(TableName=CREDENTIALS_TABLE)["Count"] == 1
    assert aws.raw(first)["revision"]["N"] == "1"
    assert store.read(first) == HMAC


def test_create_never_overwrites_other_credentials_under_the_same_id(store):
    secret_id = created(store, credentials=HMAC, token="t-1")

    with pytest.raises(StorageAdapterError) as exists:
        created(store, credentials=OLD, token="t-2")

    assert exists.value.reason == "ResourceExistsException"
    assert store.read(secret_id) == HMAC


def test_create_needs_the_tenant_and_binding_tags(store):
    with pytest.raises(ValueError, match="keyhealth:tenant"):
        store.create(f"{PREFIX}b-1", OLD, tags={"keyhealth:binding_id": "b-1"}, token="t")


# ------------------------------------------------------------------------------ versions
def test_rotation_as_the_use_case_drives_it_stage_read_pending_promote_discard(store):
    secret_id = created(store)

    pending = store.stage_pending(secret_id, NEW, token="v-new")
    assert pending == "v-new"
    assert store.read(secret_id, stage="AWSPENDING") == NEW
    assert store.read(secret_id) == OLD  # nothing changes for readers until promote
    previous = store.current_version(secret_id)
    store.promote(secret_id, pending)
    store.discard_pending(secret_id, pending)

    assert (previous, store.current_version(secret_id)) == ("v-old", "v-new")
    assert store.read(secret_id) == NEW
    assert store.read(secret_id, stage="AWSPREVIOUS") == OLD
    with pytest.raises(StorageAdapterError):
        store.read(secret_id, stage="AWSPENDING")


def test_a_failed_rotation_is_undone_by_demote(aws, store):
    secret_id = created(store)
    pending = store.stage_pending(secret_id, NEW, token="v-new")
    previous = store.current_version(secret_id)
    store.promote(secret_id, pending)

    store.demote(secret_id, pending, restore_version_id=previous)

    assert store.current_version(secret_id) == "v-old"
    assert store.read(secret_id) == OLD
    assert store.read(secret_id, stage="AWSPREVIOUS") == NEW  # as Secrets Manager labels it
    assert aws.raw(secret_id)["revision"]["N"] == "4"  # create, stage, promote, demote


def test_promote_keeps_only_one_previous_version(store):
    secret_id = created(store)
    store.stage_pending(secret_id, NEW, token="v-new")
    store.promote(secret_id, "v-new")
    store.stage_pending(secret_id, NEWER, token="v-newer")
    store.promote(secret_id, "v-newer")

    assert store.read(secret_id) == NEWER
    assert store.read(secret_id, stage="AWSPREVIOUS") == NEW


def test_stage_pending_replaces_an_older_pending_version(store):
    secret_id = created(store)
    store.stage_pending(secret_id, NEW, token="v-new")
    store.stage_pending(secret_id, NEWER, token="v-newer")

    assert store.read(secret_id, stage="AWSPENDING") == NEWER
    store.discard_pending(secret_id, "v-new")  # not the pending one any more: nothing to do
    assert store.read(secret_id, stage="AWSPENDING") == NEWER


def test_retried_version_calls_write_nothing(aws):
    kms = FaultyClient(aws.kms)
    store = aws.store(kms=kms)
    secret_id = created(store)
    store.stage_pending(secret_id, NEW, token="v-new")
    store.stage_pending(secret_id, NEW, token="v-new")
    store.promote(secret_id, "v-new")
    store.promote(secret_id, "v-new")
    store.demote(secret_id, "v-new", restore_version_id="v-old")
    store.demote(secret_id, "v-new", restore_version_id="v-old")
    store.discard_pending(secret_id, "v-new")

    assert kms.calls.count("generate_data_key") == 2  # create and the first stage
    assert aws.raw(secret_id)["revision"]["N"] == "4"
    assert store.read(secret_id) == OLD


def test_promoting_a_version_that_is_not_pending_is_a_conflict(store):
    secret_id = created(store)
    store.stage_pending(secret_id, NEW, token="v-new")
    store.stage_pending(secret_id, NEWER, token="v-newer")  # another rotation displaced ours

    with pytest.raises(CredentialsConflict) as conflict:
        store.promote(secret_id, "v-new")

    assert conflict.value.reason == "PendingVersionMismatch"
    assert store.read(secret_id) == OLD
    assert store.read(secret_id, stage="AWSPENDING") == NEWER


def test_demoting_over_another_rotation_is_a_conflict(store):
    secret_id = created(store)
    store.stage_pending(secret_id, NEW, token="v-new")
    store.promote(secret_id, "v-new")
    store.stage_pending(secret_id, NEWER, token="v-newer")
    store.promote(secret_id, "v-newer")  # another rotation promoted after ours

    with pytest.raises(CredentialsConflict) as conflict:
        store.demote(secret_id, "v-new", restore_version_id="v-old")

    assert conflict.value.reason == "CurrentVersionMismatch"
    assert store.read(secret_id) == NEWER


# --------------------------------------------------------------------------- concurrency
def test_two_containers_staging_at_once_lose_no_write_the_later_one_re_reads_and_wins(aws):
    # A and B both read revision 2; B writes (revision 3); A's write, conditional on revision 2,
    # fails; A reads again and writes pending over B's, as Secrets Manager moves AWSPENDING to the
    # latest version. B's rotation then finds its version displaced at promote: a conflict, so it
    # undoes itself; nothing is lost or half-promoted.
    dynamodb, kms = FaultyClient(aws.dynamodb), FaultyClient(aws.kms)
    a, b = aws.store(dynamodb=dynamodb, kms=kms), aws.store()
    secret_id = created(b)
    assert aws.raw(secret_id)["revision"]["N"] == "1"
    dynamodb.before["update_item"] = lambda: b.stage_pending(secret_id, NEWER, token="v-b")

    assert a.stage_pending(secret_id, NEW, token="v-a") == "v-a"

    assert dynamodb.calls == ["get_item", "update_item", "get_item", "update_item"]
    assert kms.calls == ["generate_data_key"]  # sealed once, written twice
    assert aws.raw(secret_id)["revision"]["N"] == "3"
    assert a.read(secret_id, stage="AWSPENDING") == NEW
    with pytest.raises(CredentialsConflict):
        b.promote(secret_id, "v-b")
    a.promote(secret_id, "v-a")
    assert a.read(secret_id) == NEW
    assert a.read(secret_id, stage="AWSPREVIOUS") == OLD


def test_a_promote_racing_a_stage_decides_again_on_what_it_re_reads(aws):
    dynamodb = FaultyClient(aws.dynamodb)
    a, b = aws.store(dynamodb=dynamodb), aws.store()
    secret_id = created(b)
    a.stage_pending(secret_id, NEW, token="v-a")
    dynamodb.before["update_item"] = lambda: b.stage_pending(secret_id, NEWER, token="v-b")

    with pytest.raises(CredentialsConflict) as conflict:
        a.promote(secret_id, "v-a")

    assert conflict.value.reason == "PendingVersionMismatch"
    assert a.read(secret_id) == OLD  # the promote wrote nothing over B's pending
    assert a.read(secret_id, stage="AWSPENDING") == NEWER


def test_a_revision_that_keeps_moving_is_a_conflict_after_the_attempts(aws):
    dynamodb = FaultyClient(aws.dynamodb)
    a, b = aws.store(dynamodb=dynamodb), aws.store()
    secret_id = created(b)
    others = iter(range(100))
    dynamodb.every["update_item"] = lambda: b.stage_pending(secret_id, NEWER, token=f"v-b{next(others)}")

    with pytest.raises(CredentialsConflict) as conflict:
        a.stage_pending(secret_id, NEW, token="v-a")

    assert conflict.value.reason == "ConcurrentUpdate"
    assert dynamodb.calls.count("update_item") == WRITE_ATTEMPTS
    assert b.read(secret_id, stage="AWSPENDING") == NEWER


def test_a_stage_racing_an_unbind_is_refused_as_being_deleted(aws):
    dynamodb = FaultyClient(aws.dynamodb)
    a, b = aws.store(dynamodb=dynamodb), aws.store()
    secret_id = created(b)
    dynamodb.before["update_item"] = lambda: b.schedule_deletion(secret_id, recovery_days=7)

    with pytest.raises(CredentialsBeingDeleted):
        a.stage_pending(secret_id, NEW, token="v-a")

    assert "pending" not in aws.raw(secret_id)


# ------------------------------------------------------------------------------ deletion
def test_schedule_deletion_sets_the_ttl_to_the_end_of_the_recovery_window(aws, store):
    secret_id = created(store)

    store.schedule_deletion(secret_id, recovery_days=9)

    item = aws.raw(secret_id)
    now = int(aws.clock.now)
    assert int(item["deleted_at"]["N"]) == now
    assert int(item["expires_at"]["N"]) == now + 9 * DAY
    ttl = aws.dynamodb.describe_time_to_live(TableName=CREDENTIALS_TABLE)["TimeToLiveDescription"]
    assert ttl["AttributeName"] == "expires_at"


def test_schedule_deletion_is_idempotent_and_keeps_the_first_date(aws, store):
    secret_id = created(store)
    store.schedule_deletion(secret_id, recovery_days=7)
    first = aws.raw(secret_id)
    aws.clock.now += 3600

    store.schedule_deletion(secret_id, recovery_days=30)

    assert aws.raw(secret_id) == first


def test_credentials_scheduled_for_deletion_refuse_reads_and_version_changes(store):
    secret_id = created(store)
    store.stage_pending(secret_id, NEW, token="v-new")
    store.schedule_deletion(secret_id, recovery_days=7)

    for call in (
        lambda: store.read(secret_id),
        lambda: store.read(secret_id, stage="AWSPENDING"),
        lambda: store.stage_pending(secret_id, NEWER, token="v-newer"),
        lambda: store.promote(secret_id, "v-new"),
        lambda: store.demote(secret_id, "v-new", restore_version_id="v-old"),
        lambda: store.discard_pending(secret_id, "v-new"),
    ):
        with pytest.raises(CredentialsBeingDeleted):
            call()
    assert store.current_version(secret_id) == "v-old"  # as DescribeSecret answers it


def test_restore_cancels_the_deletion(aws, store):
    secret_id = created(store, credentials=HMAC)
    store.schedule_deletion(secret_id, recovery_days=7)
    aws.clock.now += 6 * DAY

    store.restore(secret_id)

    item = aws.raw(secret_id)
    assert "deleted_at" not in item
    assert "expires_at" not in item
    assert store.read(secret_id) == HMAC
    store.restore(secret_id)  # not scheduled: nothing to do
    assert aws.raw(secret_id) == item


def test_restore_after_the_recovery_window_finds_the_credentials_gone(aws, store):
    # DynamoDB's TTL deletes expired items within days, not at once: the window decides.
    secret_id = created(store)
    store.schedule_deletion(secret_id, recovery_days=7)
    aws.clock.now += 7 * DAY

    with pytest.raises(StorageAdapterError) as gone:
        store.restore(secret_id)

    assert gone.value.reason == "ResourceNotFoundException"
    with pytest.raises(CredentialsBeingDeleted):
        store.read(secret_id)


def test_missing_credentials_cannot_be_scheduled_or_restored(store):
    for call in (
        lambda: store.schedule_deletion(f"{PREFIX}nope", recovery_days=7),
        lambda: store.restore(f"{PREFIX}nope"),
        lambda: store.current_version(f"{PREFIX}nope"),
    ):
        with pytest.raises(StorageAdapterError) as missing:
            call()
        assert missing.value.reason == "ResourceNotFoundException"


@pytest.mark.parametrize("days", [6, MAX_RECOVERY_DAYS + 1])
def test_a_recovery_window_secrets_manager_would_refuse_is_refused(aws, store, days):
    secret_id = created(store)

    with pytest.raises(StorageAdapterError) as refused:
        store.schedule_deletion(secret_id, recovery_days=days)

    assert refused.value.reason == "InvalidParameterException"
    assert "deleted_at" not in aws.raw(secret_id)


def test_delete_now_removes_the_item_and_is_idempotent(aws, store):
    secret_id = created(store)

    store.delete_now(secret_id)
    store.delete_now(secret_id)

    assert aws.dynamodb.scan(TableName=CREDENTIALS_TABLE)["Items"] == []
    with pytest.raises(StorageAdapterError) as missing:
        store.read(secret_id)
    assert missing.value.reason == "ResourceNotFoundException"
    assert not isinstance(missing.value, CredentialsBeingDeleted)


# ------------------------------------------------------------------- listing (the sweeper)
class Paged:
    """A DynamoDB client whose Scan pages hold `limit` items (moto pages at 1 MB); records the
    pages it answered, and fails the scan number `fail_at` (1-based) when set."""

    def __init__(self, client: Any, limit: int, fail_at: int | None = None) -> None:
        self._client, self.limit, self.fail_at = client, limit, fail_at
        self.pages: list[dict[str, Any]] = []

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        if name != "scan":
            return attribute

        def scan(**params: Any) -> Any:
            if self.fail_at == len(self.pages) + 1:
                raise client_error("ProvisionedThroughputExceededException", "Scan")
            page = attribute(**params, Limit=self.limit)
            self.pages.append(page)
            return page

        return scan


def test_list_stored_lists_the_prefix_page_by_page_without_reading_a_version(aws):
    dynamodb = Paged(aws.dynamodb, limit=2)
    store = aws.store(dynamodb=dynamodb)
    for number in range(5):
        created(store, f"b-{number}", HMAC)
    store.schedule_deletion(f"{PREFIX}b-3", recovery_days=7)
    store.create("keyhealth/other-stack/b-9", HMAC, tags=tags("b-9"), token="t")

    listed = sorted(store.list_stored(PREFIX), key=lambda c: c.name)

    assert [c.secret_id for c in listed] == [f"{PREFIX}b-{number}" for number in range(5)]
    assert [c.scheduled_for_deletion for c in listed] == [False, False, False, True, False]
    first = listed[0]
    assert (first.name, first.tenant, first.binding_id) == (f"{PREFIX}b-0", TENANT, "b-0")
    assert first.created_at == aws.clock.datetime()
    assert len(dynamodb.pages) >= 3
    for page in dynamodb.pages:
        for item in page["Items"]:
            assert set(item) <= {"pk", "tenant", "binding_id", "created_at", "deleted_at"}


def test_a_listing_page_that_fails_raises_where_the_iteration_stands(aws):
    dynamodb = Paged(aws.dynamodb, limit=2, fail_at=2)
    store = aws.store(dynamodb=dynamodb)
    for number in range(4):
        created(store, f"b-{number}")
    listing = store.list_stored(PREFIX)

    first_page = [next(listing), next(listing)]
    with pytest.raises(StorageAdapterError) as failed:
        next(listing)

    assert len(first_page) == 2
    assert (failed.value.operation, failed.value.reason) == (
        "dynamodb:Scan(credentials)",
        "ProvisionedThroughputExceededException",
    )
    assert CANARY_SECRET not in str(failed.value)


def test_describe_says_the_credentials_as_they_are_now(aws, store):
    secret_id = created(store)

    described = store.describe(secret_id)
    assert described is not None
    assert (described.secret_id, described.tenant, described.binding_id) == (secret_id, TENANT, "b-1")
    assert not described.scheduled_for_deletion

    store.schedule_deletion(secret_id, recovery_days=7)
    scheduled = store.describe(secret_id)
    assert scheduled is not None
    assert scheduled.scheduled_for_deletion

    store.delete_now(secret_id)
    assert store.describe(secret_id) is None


def test_the_orphan_sweeper_schedules_only_the_credentials_no_binding_points_to(aws, services):
    bound = bind_key(bind_command(OLD), TENANT, services).binding
    orphan_id = new_binding_id(aws.clock.now)
    orphan = services.secrets.create(f"{PREFIX}{orphan_id}", NEW, tags=tags(orphan_id), token="t-orphan")
    aws.clock.now += 2 * 3600

    result = sweep_orphans(services)

    assert result.removed == (orphan_id,)
    assert services.secrets.describe(orphan).scheduled_for_deletion
    assert not services.secrets.describe(bound.secret_id).scheduled_for_deletion
    assert services.secrets.read(bound.secret_id) == OLD


# -------------------------------------------------------------------- through the use cases
START = 1_800_000_000.0
EGRESS = ("203.0.113.10",)


def healthy() -> CheckResult:
    return CheckResult(report=Report(checked_at=datetime.fromtimestamp(START, UTC), egress_ip=EGRESS[0], findings=()))


@pytest.fixture
def services(aws: Aws) -> Services:
    aws.clock.now = START
    return Services(
        checkers={e.value: FakeChecker(e.value, healthy()) for e in Exchange},
        bindings=FakeBindings(),
        secrets=aws.store(),
        alerts=FakeAlerts(),
        secret_prefix=PREFIX,
        egress_ips=EGRESS,
        now=aws.clock.datetime,
        recovery_window_days=9,
    )


def bind_command(credentials: Credentials) -> BindCommand:
    return BindCommand(
        user_id="u-42", exchange=Exchange.BINANCE, credentials=credentials, scopes=(Scope.SPOT,), label="grid bot"
    )


def test_bind_verify_rotate_and_unbind_through_the_use_cases(aws, services):
    binding = bind_key(bind_command(OLD), TENANT, services).binding
    assert binding.secret_id == f"{PREFIX}{binding.binding_id}"
    checker = services.checkers[Exchange.BINANCE]

    verify_binding(TENANT, binding.binding_id, services)
    assert checker.checked[-1] == OLD

    rotate_credentials(TENANT, binding.binding_id, RotateCommand(NEW), services)
    assert checker.checked[-1] == NEW  # read back from AWSPENDING
    assert services.secrets.read(binding.secret_id) == NEW
    assert services.secrets.read(binding.secret_id, stage="AWSPREVIOUS") == OLD
    assert "pending" not in aws.raw(binding.secret_id)

    unbind(TENANT, binding.binding_id, services)
    assert int(aws.raw(binding.secret_id)["expires_at"]["N"]) == int(START) + 9 * DAY


def test_a_rotation_whose_metadata_write_fails_is_demoted_through_the_use_case(aws, services):
    binding = bind_key(bind_command(OLD), TENANT, services).binding
    services.bindings.fail("save")

    with pytest.raises(StorageUnavailable):
        rotate_credentials(TENANT, binding.binding_id, RotateCommand(NEW), services)

    assert services.secrets.read(binding.secret_id) == OLD
    assert services.secrets.current_version(binding.secret_id) == aws.raw(binding.secret_id)["create_token"]["S"]


def test_verify_of_credentials_that_cannot_be_decrypted_reports_unknown_and_alerts_ops_once(aws, services):
    binding = bind_key(bind_command(OLD), TENANT, services).binding
    other = bind_key(bind_command(NEW), OTHER_TENANT, services).binding
    # Another tenant's item copied whole onto this binding's credential id (a restore gone wrong).
    aws.put_raw({**aws.raw(other.secret_id), "pk": {"S": binding.secret_id}})
    checker = services.checkers[Exchange.BINANCE]
    checked = len(checker.checked)

    first = verify_binding(TENANT, binding.binding_id, services)
    second = verify_binding(TENANT, binding.binding_id, services)

    assert len(checker.checked) == checked  # the exchange was never asked
    for outcome in (first, second):
        assert outcome.report.status is Status.UNKNOWN
        assert outcome.report.codes == ["credentials_unreadable"]
        assert outcome.binding.status is Status.HEALTHY  # the owner has nothing to fix
        assert outcome.binding.unknown_streak == 0
    [finding] = first.report.findings
    assert finding.audience == "operator"
    assert services.alerts.types() == ["credentials_unreadable"]  # one alert, not one per check
    [alert] = services.alerts.published
    assert alert.body["binding_id"] == binding.binding_id
    shown = json.dumps(alert.body) + alert.text + json.dumps(first.binding.to_public_dict(), default=str)
    assert "oldsecret" not in shown
    assert "newsecret" not in shown
