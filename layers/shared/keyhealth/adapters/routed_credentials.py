"""Both credential stores behind one `CredentialStore`: new credentials go to the configured one,
everything else to the store the binding's stored secret id names.

A binding's `secret_id` says where its credentials are: Secrets Manager answers a secret's ARN
(`arn:aws:secretsmanager:<region>:<account>:secret:<name>-<6 random characters>`), the KMS store the
credential id itself (`<secret_prefix><binding_id>`). The deploy-time choice (`CREDENTIAL_STORE`)
therefore only says where `create` writes: a stack switched from one store to the other keeps
reading, rotating and unbinding every binding where it is, and `keyhealth migrate-credentials`
moves them one by one by rewriting `secret_id` (conditionally on the binding's version).

**Reads fall back during a migration.** A reader may have read a binding just before the migration
switched it and scheduled the old copy's deletion; its read of the old copy then finds the copy
scheduled for deletion (or gone). Such a read is retried once in the other store, under the same
name: Secrets Manager takes a secret's name wherever it takes its ARN, and the KMS store's id is
that name. The other store's copy was written from the same binding's credentials (and a KMS copy
decrypts only under that binding's tenant and id), so the fallback never reads another binding's
secret. Writes never fall back: a rotation that started on the old copy fails on it (or loses
its conditional binding write) and undoes itself, as for any concurrent change.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping

from keyhealth.bindings.ports import CredentialStore, StoredCredential
from keyhealth.config import CREDENTIAL_STORES
from keyhealth.domain.credentials import Credentials
from keyhealth.domain.errors import CredentialsBeingDeleted, StorageAdapterError

STORES = CREDENTIAL_STORES  # the values CREDENTIAL_STORE takes, one name per store
SECRETS_MANAGER, KMS = STORES

_ARN_SUFFIX = 7  # "-" and the six random characters Secrets Manager appends to a secret's name
_GONE = "ResourceNotFoundException"


def store_of(secret_id: str) -> str:
    """Which store holds the credentials `secret_id` names."""
    return SECRETS_MANAGER if secret_id.startswith("arn:") and ":secretsmanager:" in secret_id else KMS


def name_of(secret_id: str) -> str:
    """The credential's name (`<secret_prefix><binding_id>`), whichever store's id `secret_id` is."""
    if store_of(secret_id) == KMS:
        return secret_id
    return secret_id.split(":secret:", 1)[1][:-_ARN_SUFFIX]


class RoutedCredentialStore:
    """`CredentialStore` over the Secrets Manager and KMS stores (see the module docstring)."""

    def __init__(self, stores: Mapping[str, Callable[[], CredentialStore | None]], *, new_in: str) -> None:
        """`stores`: each store's factory, by name (STORES), called on the store's first use: a stack
        on one store never builds the other (nor pays for its client). A factory answers None for a
        store this process is not configured for: ids of that store are refused, never fallen back on."""
        if set(stores) != set(STORES) or new_in not in STORES:
            raise ValueError(f"stores and new_in must name the stores {STORES}")
        self._factories = dict(stores)
        self._built: dict[str, CredentialStore | None] = {}
        self._lock = threading.Lock()
        self.new_in = new_in

    def store(self, name: str) -> CredentialStore:
        """The store `name` (SECRETS_MANAGER or KMS); `StorageAdapterError` if it is not configured."""
        store = self._configured(name)
        if store is None:
            raise StorageAdapterError(f"credentials:{name}", "StoreNotConfigured")
        return store

    def _configured(self, name: str) -> CredentialStore | None:
        if name not in self._built:
            with self._lock:
                if name not in self._built:
                    self._built[name] = self._factories[name]()
        return self._built[name]

    def _of(self, secret_id: str) -> CredentialStore:
        return self.store(store_of(secret_id))

    def create(self, name: str, credentials: Credentials, *, tags: dict[str, str], token: str) -> str:
        return self.store(self.new_in).create(name, credentials, tags=tags, token=token)

    def read(self, secret_id: str, *, stage: str = "AWSCURRENT") -> Credentials:
        try:
            return self._of(secret_id).read(secret_id, stage=stage)
        except StorageAdapterError as error:
            other = self._configured(KMS if store_of(secret_id) == SECRETS_MANAGER else SECRETS_MANAGER)
            if other is None or not _moved_away(error):
                raise
            try:
                return other.read(name_of(secret_id), stage=stage)
            except StorageAdapterError:
                raise error from None  # not moved after all: the first store's answer stands

    def stage_pending(self, secret_id: str, credentials: Credentials, *, token: str) -> str:
        return self._of(secret_id).stage_pending(secret_id, credentials, token=token)

    def promote(self, secret_id: str, version_id: str) -> None:
        self._of(secret_id).promote(secret_id, version_id)

    def demote(self, secret_id: str, version_id: str, *, restore_version_id: str) -> None:
        self._of(secret_id).demote(secret_id, version_id, restore_version_id=restore_version_id)

    def discard_pending(self, secret_id: str, version_id: str) -> None:
        self._of(secret_id).discard_pending(secret_id, version_id)

    def current_version(self, secret_id: str) -> str:
        return self._of(secret_id).current_version(secret_id)

    def schedule_deletion(self, secret_id: str, *, recovery_days: int) -> None:
        self._of(secret_id).schedule_deletion(secret_id, recovery_days=recovery_days)

    def restore(self, secret_id: str) -> None:
        self._of(secret_id).restore(secret_id)

    def delete_now(self, secret_id: str) -> None:
        self._of(secret_id).delete_now(secret_id)

    def list_stored(self, prefix: str) -> Iterator[StoredCredential]:
        """Both stores' credentials under `prefix` (the one new credentials go to first; a store this
        process is not configured for holds none of its bindings)."""
        for name in sorted(STORES, key=lambda name: name != self.new_in):
            store = self._configured(name)
            if store is not None:
                yield from store.list_stored(prefix)

    def describe(self, secret_id: str) -> StoredCredential | None:
        return self._of(secret_id).describe(secret_id)


def _moved_away(error: StorageAdapterError) -> bool:
    """Whether a read failed because the copy is scheduled for deletion or gone (a migration may have
    moved the binding meanwhile), not for a transient or permission reason."""
    return isinstance(error, CredentialsBeingDeleted) or error.reason == _GONE
