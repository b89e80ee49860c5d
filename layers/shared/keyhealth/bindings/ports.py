"""What binding management needs from the outside world: a binding repository, a credential
store, an alert publisher and one checker per exchange. Implementations live in
keyhealth.adapters (and keyhealth.exchanges), fakes in tests/support; keyhealth.wiring
chooses. Nothing here imports boto3 or httpx."""

from __future__ import annotations

import builtins
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from keyhealth.bindings.model import Binding, ListQuery, Page
from keyhealth.domain.credentials import Credentials
from keyhealth.domain.exchange import ExchangeChecker, ExchangeName
from keyhealth.notify.ports import AlertPublisher
from keyhealth.webhooks.ports import EventPublisher, NoEvents

#: The tags bind puts on every secret it creates (`<secret_prefix><binding_id>`): which tenant's binding
#: the secret backs. The orphan sweeper reads them (never the value) to find that binding.
TENANT_TAG = "keyhealth:tenant"
BINDING_ID_TAG = "keyhealth:binding_id"


class BindingRepository(Protocol):
    def get(self, tenant: str, binding_id: str) -> Binding | None: ...

    def find_by_api_key(self, tenant: str, exchange: ExchangeName, api_key_hash: str) -> str | None:
        """The id of the tenant's binding of this api key on this exchange, if any."""

    def create(self, binding: Binding) -> None:
        """Store a new binding; `AlreadyBound` if the tenant bound this key meanwhile."""

    def save(self, binding: Binding, *, previous: Binding) -> Binding:
        """Replace `previous` with `binding` (version + 1); `ConcurrentUpdate` if it changed meanwhile."""

    def delete(self, binding: Binding) -> None:
        """Remove `binding` and its markers as they were read, in one transaction conditional on
        its version; `ConcurrentUpdate` if it changed (or went) meanwhile."""

    def list(self, tenant: str, query: ListQuery) -> Page: ...

    # builtins.list: below `def list`, a bare `list` in this class's annotations is that method
    def bindings_of_account(self, tenant: str, exchange: ExchangeName, account_id: str) -> builtins.list[str]: ...


@dataclass(frozen=True)
class StoredCredential:
    """A secret as the credential store lists it: its id, name, bind's tags and its dates; never its value."""

    secret_id: str  # the ARN, as `Binding.secret_id` holds it
    name: str
    tenant: str | None  # TENANT_TAG (None: the secret does not carry it)
    binding_id: str | None  # BINDING_ID_TAG
    created_at: datetime | None  # aware (UTC); None when the store does not say
    scheduled_for_deletion: bool = False  # an unbind (or an earlier sweep) scheduled it: the store removes it


class CredentialStore(Protocol):
    def create(self, name: str, credentials: Credentials, *, tags: dict[str, str], token: str) -> str:
        """Create the secret; returns its id (ARN)."""

    def read(self, secret_id: str, *, stage: str = "AWSCURRENT") -> Credentials: ...

    def stage_pending(self, secret_id: str, credentials: Credentials, *, token: str) -> str:
        """Write a new version labelled AWSPENDING; returns its version id."""

    def promote(self, secret_id: str, version_id: str) -> None:
        """Make `version_id` AWSCURRENT (the old current becomes AWSPREVIOUS)."""

    def demote(self, secret_id: str, version_id: str, *, restore_version_id: str) -> None:
        """Undo `promote`: `restore_version_id` becomes AWSCURRENT again."""

    def discard_pending(self, secret_id: str, version_id: str) -> None: ...

    def current_version(self, secret_id: str) -> str: ...

    def schedule_deletion(self, secret_id: str, *, recovery_days: int) -> None:
        """Idempotent: a secret already scheduled for deletion is fine."""

    def restore(self, secret_id: str) -> None: ...

    def delete_now(self, secret_id: str) -> None:
        """Remove a secret that never backed a stored binding (bind compensation)."""

    def list_stored(self, prefix: str) -> Iterator[StoredCredential]:
        """Every secret whose name starts with `prefix`, those scheduled for deletion included (and
        marked so), read page by page from the listing (names, tags, dates: no value is read). A page
        that cannot be read raises `StorageAdapterError` where the iteration stands."""

    def describe(self, secret_id: str) -> StoredCredential | None:
        """The secret as it is now (None: it no longer exists), from its metadata, not its value."""


@dataclass
class Services:
    """Everything a binding use case may call; built by keyhealth.wiring, faked in tests."""

    checkers: Mapping[ExchangeName, ExchangeChecker]  # read-only: wiring builds them lazily
    bindings: BindingRepository
    secrets: CredentialStore
    alerts: AlertPublisher
    secret_prefix: str
    egress_ips: tuple[str, ...]
    now: Callable[[], datetime]
    recovery_window_days: int = 7
    #: the tenants' event feed and webhooks (keyhealth.webhooks): what the platform itself is told
    events: EventPublisher = field(default_factory=NoEvents)
