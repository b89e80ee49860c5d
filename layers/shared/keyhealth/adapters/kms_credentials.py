"""Binding credentials in DynamoDB under KMS envelope encryption: one item per binding.

Secrets Manager costs $0.40 per secret and month ($400,000 a month at a million keys); here a key
costs its item (a few KB of DynamoDB storage) and one KMS request per read or write ($0.03 per
10,000), under one KMS key. It implements `bindings.ports.CredentialStore` with the semantics of
`SecretsManagerCredentialStore` (same stage names, same errors, same JSON inside the ciphertext).

**Envelope, not plain `kms:Encrypt`.** Encrypt takes at most 4,096 bytes of plaintext; an RSA-4096
PEM (~3.3 KB) plus the api key, a passphrase and the JSON around them comes close, and the API
accepts secrets of up to 8 KiB (`api.requests.MAX_SECRET`). So each write asks KMS for a fresh
AES-256 data key (`GenerateDataKey`), encrypts the serialised credentials locally with AES-256-GCM
and stores the KMS-encrypted data key beside the ciphertext; a read asks KMS to decrypt the data
key (`Decrypt`) and opens the ciphertext locally. Any size fits, and it is still one KMS call per
write and one per read.

**Context.** Every data key is bound to the KMS encryption context
`{"keyhealth:stack", "keyhealth:tenant", "keyhealth:binding_id"}`, taken from the store's stack and
the item's own tenant and binding id, and the AES-GCM associated data is the canonical JSON of that
context plus the item's credential id (its key). A ciphertext (or a whole item) copied onto another
binding, tenant, credential id or stack therefore fails to decrypt: `CredentialsUnreadable`, never
another binding's credentials. The context also lets the key policy say which stack may decrypt.

**Item** (table `CredentialsTable`, partition key `pk` = the credential id, TTL attribute
`expires_at`)::

    pk            S  the credential id: the `name` given to `create` (`<prefix><binding_id>`)
    tenant        S  } from create's tags; the encryption context, and what an orphan sweeper
    binding_id    S  } needs to find the binding
    create_token  S  the token of the create (a retried create with it is the same request)
    created_at    N  epoch seconds (the sweeper's minimum age)
    revision      N  + 1 on every write; every version write is conditional on the one read
    current       M  the AWSCURRENT version   } each: version (S, the token it was written with),
    pending       M  the AWSPENDING version   } key (B, the KMS-encrypted data key), nonce (B, 12
    previous      M  the AWSPREVIOUS version  } bytes), blob (B, AES-GCM ciphertext and tag)
    deleted_at    N  set while scheduled for deletion (epoch seconds)
    expires_at    N  deleted_at + the recovery window: DynamoDB's TTL deletes the item after it

**Versions.** `stage_pending` sets pending (replacing an older one, as Secrets Manager moves the
AWSPENDING label); `promote(v)` needs pending to be `v` and makes it current, the old current
previous, in one conditional UpdateItem (pending is then empty: Secrets Manager would keep the
AWSPENDING label on the promoted version until `discard_pending`, which nothing reads); `demote(v,
restore)` needs current `v` and previous `restore`, and swaps them; `discard_pending(v)` empties
pending if it is `v`. Each of these reads the item (strongly consistent), decides, and writes on the
condition that the revision is still the one read; when another writer got in between, it reads
again and decides again (`WRITE_ATTEMPTS` in all), so concurrent rotations never lose a version
and never act on a state they did not see. A version that is not where the call needs it (another
rotation displaced our pending, or promoted over what we demote) is `CredentialsConflict`; so is
a revision that kept moving. Both are StorageAdapterErrors, which every use case already handles
(a rotation undoes itself and answers 503; a failed discard or demote is logged).

**Deletion.** `schedule_deletion` sets `deleted_at` and `expires_at` (idempotent: a second call
changes nothing); from then on reads and version writes raise `CredentialsBeingDeleted`, and
`current_version` still answers (as DescribeSecret does). `restore` clears both, until the window
has passed (then the credentials are gone, as a deleted secret is). `delete_now` deletes the item.

**Listing.** `list_stored(prefix)` (the orphan sweeper's) is a paged Scan filtered on the prefix
and `describe` a GetItem, both projected to the metadata attributes: no version is fetched. A Scan
is still charged for the whole items it reads (1 RRU per 8 KB, eventually consistent: about a
million RRUs, some tens of cents, per daily sweep of a million keys); a keys-only index would cut
that if sweeps ever became frequent.

The plaintext data key is dropped (`del`) as soon as it has been used; Python cannot wipe the
bytes, but no reference outlives the call and nothing here logs. Errors carry operation names and
AWS error codes only, never AWS messages or plaintext.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from keyhealth.adapters.aws_errors import storage_call
from keyhealth.adapters.dynamodb_values import n, s
from keyhealth.adapters.secretsmanager_credentials import _deserialise, _serialise
from keyhealth.bindings.ports import BINDING_ID_TAG, TENANT_TAG, StoredCredential
from keyhealth.domain.credentials import Credentials
from keyhealth.domain.errors import (
    CredentialsBeingDeleted,
    CredentialsConflict,
    CredentialsUnreadable,
    StorageAdapterError,
)

#: The port's stage names and the item attribute that holds each.
STAGES = {"AWSCURRENT": "current", "AWSPENDING": "pending", "AWSPREVIOUS": "previous"}

#: KMS Decrypt answers that say the data key cannot be decrypted (wrong context, another key,
#: key disabled, pending deletion or gone, no permission): retrying would get the same answer.
#: Everything else (throttling, KMSInternalException, timeouts) is a transient StorageAdapterError.
UNREADABLE_CODES = frozenset(
    {
        "InvalidCiphertextException",
        "IncorrectKeyException",
        "DisabledException",
        "KMSInvalidStateException",
        "NotFoundException",
        "AccessDeniedException",
    }
)

#: Reads and conditional writes per version change before `CredentialsConflict`.
WRITE_ATTEMPTS = 3

#: Secrets Manager's bounds of a recovery window, kept so that both stores accept the same configs.
MIN_RECOVERY_DAYS, MAX_RECOVERY_DAYS = 7, 30

_DAY = 86_400
_NONCE_BYTES = 12
_CONDITION_FAILED = "ConditionalCheckFailedException"
_NOT_FOUND = "ResourceNotFoundException"

#: What `list_stored` and `describe` read of an item: never a version (no ciphertext is fetched).
_METADATA = "pk, #tenant, #binding, #created, #deleted"

# Attribute names through ExpressionAttributeNames (some, like CURRENT, are DynamoDB reserved words).
_NAMES = {
    "#current": "current",
    "#pending": "pending",
    "#previous": "previous",
    "#revision": "revision",
    "#deleted": "deleted_at",
    "#expires": "expires_at",
    "#tenant": "tenant",
    "#binding": "binding_id",
    "#created": "created_at",
}


@dataclass(frozen=True, repr=False)
class _Sealed:
    """One version, encrypted: what `current`, `pending` and `previous` hold."""

    version: str
    key: bytes  # the data key, encrypted by KMS under the context
    nonce: bytes
    blob: bytes  # AES-256-GCM ciphertext and tag

    def attribute(self) -> dict[str, Any]:
        return {
            "M": {
                "version": s(self.version),
                "key": {"B": self.key},
                "nonce": {"B": self.nonce},
                "blob": {"B": self.blob},
            }
        }

    @classmethod
    def of(cls, attribute: dict[str, Any]) -> _Sealed:
        fields = attribute["M"]
        return cls(fields["version"]["S"], fields["key"]["B"], fields["nonce"]["B"], fields["blob"]["B"])


@dataclass(frozen=True, repr=False)
class _Item:
    credential_id: str
    tenant: str
    binding_id: str
    create_token: str
    revision: int
    current: _Sealed
    pending: _Sealed | None
    previous: _Sealed | None
    deleted_at: int | None
    expires_at: int | None

    @classmethod
    def of(cls, item: dict[str, Any]) -> _Item:
        return cls(
            credential_id=item["pk"]["S"],
            tenant=item["tenant"]["S"],
            binding_id=item["binding_id"]["S"],
            create_token=item["create_token"]["S"],
            revision=int(item["revision"]["N"]),
            current=_Sealed.of(item["current"]),
            pending=_Sealed.of(item["pending"]) if "pending" in item else None,
            previous=_Sealed.of(item["previous"]) if "previous" in item else None,
            deleted_at=int(item["deleted_at"]["N"]) if "deleted_at" in item else None,
            expires_at=int(item["expires_at"]["N"]) if "expires_at" in item else None,
        )

    def stage(self, stage: str) -> _Sealed | None:
        slot = STAGES.get(stage)
        return getattr(self, slot) if slot else None

    def versions(self) -> set[str]:
        return {v.version for v in (self.current, self.pending, self.previous) if v is not None}


#: A version change: given the item as read, the UpdateExpression parts and values to write,
#: or None when the item is already as the call wants it (a retried call).
_Change = Callable[[_Item], tuple[str, dict[str, Any]] | None]


@contextmanager
def _decrypt_call(operation: str) -> Iterator[None]:
    """A KMS Decrypt: the answers in UNREADABLE_CODES become `CredentialsUnreadable`."""
    try:
        with storage_call(operation):
            yield
    except StorageAdapterError as error:
        if error.reason in UNREADABLE_CODES:
            raise CredentialsUnreadable(error.operation, error.reason) from None
        raise


class KmsCredentialStore:
    """`CredentialStore` on a DynamoDB table and a KMS key (see the module docstring)."""

    def __init__(
        self,
        dynamodb: Any,
        kms: Any,
        *,
        table_name: str,
        key_id: str,
        stack_name: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._dynamodb = dynamodb
        self._kms = kms
        self._table = table_name
        self._key_id = key_id
        self._stack = stack_name
        self._clock = clock

    # ------------------------------------------------------------------------ the port
    def create(self, name: str, credentials: Credentials, *, tags: dict[str, str], token: str) -> str:
        """Store the binding's first version under the id `name`, which is returned. A retried create
        (same token, same binding) is answered with the stored item; any other item under that id is
        `ResourceExistsException`, as Secrets Manager says it (it is never overwritten)."""
        try:
            tenant, binding_id = tags[TENANT_TAG], tags[BINDING_ID_TAG]
        except KeyError:
            raise ValueError(f"create needs the tags {TENANT_TAG} and {BINDING_ID_TAG}") from None
        sealed = self._seal(name, tenant, binding_id, token, credentials)
        item = {
            "pk": s(name),
            "tenant": s(tenant),
            "binding_id": s(binding_id),
            "create_token": s(token),
            "created_at": n(int(self._clock())),
            "revision": n(1),
            "current": sealed.attribute(),
        }
        operation = "dynamodb:PutItem(credentials)"
        try:
            with storage_call(operation):
                self._dynamodb.put_item(
                    TableName=self._table, Item=item, ConditionExpression="attribute_not_exists(pk)"
                )
        except StorageAdapterError as error:
            if error.reason != _CONDITION_FAILED:
                raise
            existing = self._get(name)
            if existing is None or (existing.create_token, existing.tenant, existing.binding_id) != (
                token,
                tenant,
                binding_id,
            ):
                raise StorageAdapterError(operation, "ResourceExistsException") from None
            if existing.deleted_at is not None:
                raise CredentialsBeingDeleted(operation, "scheduled for deletion") from None
        return name

    def read(self, secret_id: str, *, stage: str = "AWSCURRENT") -> Credentials:
        item = self._live(secret_id, "dynamodb:GetItem(credentials)")
        sealed = item.stage(stage)
        if sealed is None:  # no version has that label: Secrets Manager's answer too
            raise StorageAdapterError("dynamodb:GetItem(credentials)", _NOT_FOUND)
        return self._open(item, sealed)

    def stage_pending(self, secret_id: str, credentials: Credentials, *, token: str) -> str:
        """Write a version labelled AWSPENDING (replacing an older pending); returns its id, the
        token. A retried call (the token is a version already) writes nothing."""
        sealed: dict[tuple[str, str], _Sealed] = {}  # one data key per context, even over retries

        def change(item: _Item) -> tuple[str, dict[str, Any]] | None:
            if token in item.versions():
                return None
            context = (item.tenant, item.binding_id)
            if context not in sealed:
                sealed[context] = self._seal(secret_id, item.tenant, item.binding_id, token, credentials)
            return "SET #pending = :pending", {":pending": sealed[context].attribute()}

        self._change(secret_id, "stage_pending", change)
        return token

    def current_version(self, secret_id: str) -> str:
        """The AWSCURRENT version's id; answered for credentials scheduled for deletion too, as
        Secrets Manager's DescribeSecret does."""
        item = self._get(secret_id)
        if item is None:
            raise StorageAdapterError("dynamodb:GetItem(credentials)", _NOT_FOUND)
        return item.current.version

    def promote(self, secret_id: str, version_id: str) -> None:
        def change(item: _Item) -> tuple[str, dict[str, Any]] | None:
            if item.pending is not None and item.pending.version == version_id:
                return (
                    "SET #current = :pending, #previous = :current REMOVE #pending",
                    {":pending": item.pending.attribute(), ":current": item.current.attribute()},
                )
            if item.current.version == version_id:
                return None  # promoted already (a retried call)
            raise CredentialsConflict("dynamodb:UpdateItem(credentials)", "PendingVersionMismatch")

        self._change(secret_id, "promote", change)

    def demote(self, secret_id: str, version_id: str, *, restore_version_id: str) -> None:
        def change(item: _Item) -> tuple[str, dict[str, Any]] | None:
            if (
                item.current.version == version_id
                and item.previous is not None
                and item.previous.version == restore_version_id
            ):
                return (
                    "SET #current = :previous, #previous = :current",
                    {":previous": item.previous.attribute(), ":current": item.current.attribute()},
                )
            if item.current.version == restore_version_id:
                return None  # demoted already (a retried call)
            raise CredentialsConflict("dynamodb:UpdateItem(credentials)", "CurrentVersionMismatch")

        self._change(secret_id, "demote", change)

    def discard_pending(self, secret_id: str, version_id: str) -> None:
        def change(item: _Item) -> tuple[str, dict[str, Any]] | None:
            if item.pending is None or item.pending.version != version_id:
                return None  # not (or no longer) that version: nothing of ours to discard
            return "REMOVE #pending", {}

        self._change(secret_id, "discard_pending", change)

    def schedule_deletion(self, secret_id: str, *, recovery_days: int) -> None:
        """Idempotent: credentials already scheduled keep their first deletion date."""
        operation = "dynamodb:UpdateItem(credentials)"
        if not MIN_RECOVERY_DAYS <= recovery_days <= MAX_RECOVERY_DAYS:
            raise StorageAdapterError(operation, "InvalidParameterException")
        for _ in range(WRITE_ATTEMPTS):
            now = int(self._clock())
            try:
                with storage_call(operation):
                    self._dynamodb.update_item(
                        TableName=self._table,
                        Key={"pk": s(secret_id)},
                        UpdateExpression="SET #deleted = :now, #expires = :expires, #revision = #revision + :one",
                        ConditionExpression="attribute_exists(pk) AND attribute_not_exists(#deleted)",
                        ExpressionAttributeNames=_names("#deleted", "#expires", "#revision"),
                        ExpressionAttributeValues={
                            ":now": n(now),
                            ":expires": n(now + recovery_days * _DAY),
                            ":one": n(1),
                        },
                    )
                return
            except StorageAdapterError as error:
                if error.reason != _CONDITION_FAILED:
                    raise
            item = self._get(secret_id)
            if item is None:
                raise StorageAdapterError(operation, _NOT_FOUND)
            if item.deleted_at is not None:
                return  # a retried unbind: the state we want
        raise CredentialsConflict(operation, "ConcurrentUpdate")

    def restore(self, secret_id: str) -> None:
        """Cancel a scheduled deletion (a no-op for credentials not scheduled). Once the recovery
        window has passed, the credentials are gone: `ResourceNotFoundException`."""
        operation = "dynamodb:UpdateItem(credentials)"
        for _ in range(WRITE_ATTEMPTS):
            now = int(self._clock())
            try:
                with storage_call(operation):
                    self._dynamodb.update_item(
                        TableName=self._table,
                        Key={"pk": s(secret_id)},
                        UpdateExpression="REMOVE #deleted, #expires SET #revision = #revision + :one",
                        ConditionExpression="attribute_exists(#deleted) AND #expires > :now",
                        ExpressionAttributeNames=_names("#deleted", "#expires", "#revision"),
                        ExpressionAttributeValues={":now": n(now), ":one": n(1)},
                    )
                return
            except StorageAdapterError as error:
                if error.reason != _CONDITION_FAILED:
                    raise
            item = self._get(secret_id)
            if item is None or (item.expires_at is not None and item.expires_at <= now):
                raise StorageAdapterError(operation, _NOT_FOUND)  # gone, or past its window
            if item.deleted_at is None:
                return  # not scheduled (any more)
        raise CredentialsConflict(operation, "ConcurrentUpdate")

    def delete_now(self, secret_id: str) -> None:
        """Delete the item at once (bind compensation); idempotent."""
        with storage_call("dynamodb:DeleteItem(credentials)"):
            self._dynamodb.delete_item(TableName=self._table, Key={"pk": s(secret_id)})

    def list_stored(self, prefix: str) -> Iterator[StoredCredential]:
        """Every item whose credential id starts with `prefix`, those scheduled for deletion included
        (and marked so): a Scan, page by page, of the metadata attributes only (no version is read).
        A page that cannot be read raises `StorageAdapterError` where the iteration stands."""
        params: dict[str, Any] = {
            "TableName": self._table,
            "FilterExpression": "begins_with(pk, :prefix)",
            "ProjectionExpression": _METADATA,
            "ExpressionAttributeNames": _names("#tenant", "#binding", "#created", "#deleted"),
            "ExpressionAttributeValues": {":prefix": s(prefix)},
        }
        while True:
            with storage_call("dynamodb:Scan(credentials)"):
                page = self._dynamodb.scan(**params)
            for raw in page.get("Items") or []:
                if raw.get("pk", {}).get("S", "").startswith(prefix):
                    yield _stored(raw)
            last = page.get("LastEvaluatedKey")
            if not last:
                return
            params["ExclusiveStartKey"] = last

    def describe(self, secret_id: str) -> StoredCredential | None:
        """The item's metadata as it is now (None: it no longer exists); no version is read."""
        with storage_call("dynamodb:GetItem(credentials)"):
            raw = self._dynamodb.get_item(
                TableName=self._table,
                Key={"pk": s(secret_id)},
                ConsistentRead=True,
                ProjectionExpression=_METADATA,
                ExpressionAttributeNames=_names("#tenant", "#binding", "#created", "#deleted"),
            )
        return _stored(raw["Item"]) if "Item" in raw else None

    # ------------------------------------------------------------------------ internals
    def _get(self, secret_id: str) -> _Item | None:
        operation = "dynamodb:GetItem(credentials)"
        with storage_call(operation):
            raw = self._dynamodb.get_item(TableName=self._table, Key={"pk": s(secret_id)}, ConsistentRead=True)
        if "Item" not in raw:
            return None
        try:
            return _Item.of(raw["Item"])
        except (KeyError, TypeError, ValueError):
            raise CredentialsUnreadable(operation, "MalformedItem") from None

    def _live(self, secret_id: str, operation: str) -> _Item:
        """The item, which must exist and not be scheduled for deletion."""
        item = self._get(secret_id)
        if item is None:
            raise StorageAdapterError(operation, _NOT_FOUND)
        if item.deleted_at is not None:
            raise CredentialsBeingDeleted(operation, "scheduled for deletion")
        return item

    def _change(self, secret_id: str, call: str, change: _Change) -> None:
        """Read, decide, write on the condition that nobody wrote meanwhile; again if somebody did."""
        operation = f"dynamodb:UpdateItem(credentials.{call})"
        for _ in range(WRITE_ATTEMPTS):
            item = self._live(secret_id, operation)
            decided = change(item)
            if decided is None:
                return
            expression, values = decided
            expression = _with_revision(expression)
            try:
                with storage_call(operation):
                    self._dynamodb.update_item(
                        TableName=self._table,
                        Key={"pk": s(secret_id)},
                        UpdateExpression=expression,
                        ConditionExpression="#revision = :read AND attribute_not_exists(#deleted)",
                        ExpressionAttributeNames=_names(*(name for name in _NAMES if name in expression), "#deleted"),
                        ExpressionAttributeValues={**values, ":read": n(item.revision), ":next": n(item.revision + 1)},
                    )
                return
            except StorageAdapterError as error:
                if error.reason != _CONDITION_FAILED:
                    raise
        self._live(secret_id, operation)  # the last write may have lost to an unbind: say that first
        raise CredentialsConflict(operation, "ConcurrentUpdate")

    def _context(self, tenant: str, binding_id: str) -> dict[str, str]:
        return {"keyhealth:stack": self._stack, "keyhealth:tenant": tenant, "keyhealth:binding_id": binding_id}

    def _seal(
        self, credential_id: str, tenant: str, binding_id: str, version: str, credentials: Credentials
    ) -> _Sealed:
        context = self._context(tenant, binding_id)
        with storage_call("kms:GenerateDataKey"):
            answer = self._kms.generate_data_key(KeyId=self._key_id, KeySpec="AES_256", EncryptionContext=context)
        data_key = answer.pop("Plaintext")
        nonce = os.urandom(_NONCE_BYTES)
        plaintext = _serialise(credentials).encode("utf-8")
        try:
            blob = AESGCM(data_key).encrypt(nonce, plaintext, _associated_data(context, credential_id))
        finally:
            del data_key, plaintext
        return _Sealed(version, answer["CiphertextBlob"], nonce, blob)

    def _open(self, item: _Item, sealed: _Sealed) -> Credentials:
        context = self._context(item.tenant, item.binding_id)
        with _decrypt_call("kms:Decrypt"):
            answer = self._kms.decrypt(CiphertextBlob=sealed.key, EncryptionContext=context, KeyId=self._key_id)
        data_key = answer.pop("Plaintext")
        try:
            plaintext = AESGCM(data_key).decrypt(
                sealed.nonce, sealed.blob, _associated_data(context, item.credential_id)
            )
        except (InvalidTag, ValueError):  # ValueError: a nonce or data key of the wrong size
            raise CredentialsUnreadable("aes-gcm:decrypt", "InvalidTag") from None
        finally:
            del data_key
        try:
            return _deserialise(plaintext.decode("utf-8"))
        except (ValueError, KeyError, TypeError):  # authentic but not ours: written by something else
            raise CredentialsUnreadable("aes-gcm:decrypt", "MalformedPlaintext") from None
        finally:
            del plaintext


def _stored(raw: dict[str, Any]) -> StoredCredential:
    """An item's metadata, as the orphan sweeper wants it (attributes it lacks are None)."""
    created = raw.get("created_at", {}).get("N")
    return StoredCredential(
        secret_id=raw["pk"]["S"],
        name=raw["pk"]["S"],
        tenant=raw.get("tenant", {}).get("S"),
        binding_id=raw.get("binding_id", {}).get("S"),
        created_at=datetime.fromtimestamp(int(created), UTC) if created is not None else None,
        scheduled_for_deletion="deleted_at" in raw,
    )


def _associated_data(context: dict[str, str], credential_id: str) -> bytes:
    """The canonical JSON of the encryption context and the credential id."""
    bound = {**context, "keyhealth:credential_id": credential_id}
    return json.dumps(bound, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _with_revision(expression: str) -> str:
    """`expression` with `#revision = :next` added to its SET clause (or a SET clause of it)."""
    if expression.startswith("SET "):
        head, _, rest = expression.partition(" REMOVE ")
        return f"{head}, #revision = :next" + (f" REMOVE {rest}" if rest else "")
    return f"SET #revision = :next {expression}"


def _names(*placeholders: str) -> dict[str, str]:
    return {placeholder: _NAMES[placeholder] for placeholder in placeholders}
