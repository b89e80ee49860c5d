"""What a use case can refuse or fail with; the API maps each to one HTTP answer."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from keyhealth.domain.exchange import CheckResult


class KeyhealthError(Exception):
    """Base: `code` is the stable error code a client can branch on."""

    code = "internal_error"


class BindingNotFound(KeyhealthError):
    code = "binding_not_found"


class AlreadyBound(KeyhealthError):
    code = "already_bound"

    def __init__(self, binding_id: str) -> None:
        super().__init__(f"this API key is already bound as {binding_id}")
        self.binding_id = binding_id


class KeyUnusable(KeyhealthError):
    """The exchange answered and the key cannot do what the platform needs (nothing stored)."""

    code = "key_failing"

    def __init__(self, result: CheckResult) -> None:
        super().__init__("the key failed its check on the exchange")
        self.result = result


class ExchangeUnreachable(KeyhealthError):
    """The exchange could not be asked (nothing stored); the client should retry later."""

    code = "exchange_unavailable"

    def __init__(self, result: CheckResult) -> None:
        super().__init__("the exchange could not answer; nothing was stored")
        self.result = result


class ConcurrentUpdate(KeyhealthError):
    """Another request changed the binding between our read and our write."""

    code = "concurrent_update"


class InvalidCursor(KeyhealthError):
    """A list cursor this service did not hand out (or for another query)."""

    code = "invalid_cursor"


class ExchangeMismatch(KeyhealthError):
    code = "exchange_mismatch"


class StorageUnavailable(KeyhealthError):
    """Use-case outcome: a storage call failed; whatever it left half-done was undone, so a
    retry is safe (the API answers 503 storage_unavailable)."""

    code = "storage_unavailable"

    def __init__(self, step: str) -> None:
        super().__init__(f"storage failed at {step}; nothing was left half-done, retry the request")
        self.step = step


@contextmanager
def storage_step(step: str) -> Iterator[None]:
    """One storage step of a use case: an adapter failure becomes `StorageUnavailable(step)`."""
    try:
        yield
    except StorageAdapterError as error:
        raise StorageUnavailable(step) from error


class StorageAdapterError(Exception):
    """Raised by a storage adapter (keyhealth.adapters) when a call fails (throttling, outage,
    permissions); use cases turn it into `StorageUnavailable` or a retry.

    Carries no AWS payload: botocore messages can echo request parameters.
    """

    def __init__(self, operation: str, reason: str) -> None:
        super().__init__(f"{operation} failed: {reason}")
        self.operation = operation
        self.reason = reason


class RequestInProgress(KeyhealthError):
    """A request with the same Idempotency-Key is still running."""

    code = "request_in_progress"


class IdempotencyKeyReused(KeyhealthError):
    """The Idempotency-Key was used before with a different body."""

    code = "idempotency_key_reused"


class CredentialsBeingDeleted(StorageAdapterError):
    """The credential store refused because the credentials are scheduled for deletion: an
    unbind of their binding is under way (or done). Not transient: the binding is going."""


class CredentialsUnreadable(StorageAdapterError):
    """The stored credentials cannot be decrypted: wrong context (a ciphertext copied from another
    binding or tenant), key disabled or deleted, or tampered with. Not transient: retrying gives the
    same answer until an operator acts (re-enable the key, restore the item, bind again)."""


class CredentialsConflict(StorageAdapterError):
    """The credential store's versions are not what the call expects: a concurrent rotation moved
    them (the pending version is another one, the current one is not the one being demoted), or
    they kept changing between our read and our write. Nothing was written by this call."""


class WebhookNotFound(KeyhealthError):
    """The tenant has no webhook (GET, DELETE, rotate the secret or test one first set with PUT /webhook)."""

    code = "webhook_not_found"
