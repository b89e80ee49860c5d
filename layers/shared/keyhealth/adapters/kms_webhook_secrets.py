"""Webhook signing secrets encrypted with KMS (webhooks.ports.SecretCipher): the secret is a few dozen bytes,
so KMS encrypts it directly (no data key). The encryption context binds each ciphertext to its tenant: one
copied onto another tenant's webhook does not decrypt, and the deliverer's key policy allows Decrypt for the
`webhook-signing` purpose only.

Decrypted secrets are kept in memory for a few minutes (by ciphertext): a burst of deliveries to one tenant
costs one Decrypt, not one each.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from keyhealth.adapters.aws_errors import storage_call
from keyhealth.domain.credentials import Secret

PURPOSE = "webhook-signing"


class KmsSecretCipher:
    def __init__(
        self,
        client: Any,
        key_id: str,
        *,
        cache_seconds: float = 300.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._kms = client
        self._key_id = key_id
        self._cache_seconds = cache_seconds
        self._monotonic = monotonic
        self._cache: dict[tuple[str, bytes], tuple[float, Secret]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _context(tenant: str) -> dict[str, str]:
        return {"keyhealth:purpose": PURPOSE, "keyhealth:tenant": tenant}

    def encrypt(self, tenant: str, secret: Secret) -> bytes:
        with storage_call("kms:Encrypt(webhook secret)"):
            answer = self._kms.encrypt(
                KeyId=self._key_id, Plaintext=secret.reveal().encode(), EncryptionContext=self._context(tenant)
            )
        return bytes(answer["CiphertextBlob"])

    def decrypt(self, tenant: str, ciphertext: bytes) -> Secret:
        now = self._monotonic()
        with self._lock:
            cached = self._cache.get((tenant, ciphertext))
        if cached is not None and now - cached[0] < self._cache_seconds:
            return cached[1]
        with storage_call("kms:Decrypt(webhook secret)"):
            answer = self._kms.decrypt(
                CiphertextBlob=ciphertext, KeyId=self._key_id, EncryptionContext=self._context(tenant)
            )
        secret = Secret(answer.pop("Plaintext").decode())
        with self._lock:
            if len(self._cache) > 1000:
                self._cache.clear()
            self._cache[(tenant, ciphertext)] = (now, secret)
        return secret
