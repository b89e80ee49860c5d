"""Credentials as types that cannot leak by accident.

A stray `logger.info(credentials)`, an f-string in an exception or a dataclass repr must
never print a secret, so secrets are wrapped and only unwrapped at the moment of signing.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Secret:
    """A string whose repr/str hide it. Call `reveal()` only where the value is used."""

    __slots__ = ("_value",)
    _value: str  # set once in __init__ (through object.__setattr__: __setattr__ refuses)

    def __init__(self, value: str) -> None:
        object.__setattr__(self, "_value", value)

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Secret is immutable")

    def __reduce__(self) -> tuple[object, ...]:
        # Pickling would be a way to serialise the clear value without noticing.
        raise TypeError("Secret cannot be pickled")


class KeyType(StrEnum):
    HMAC = "hmac"
    ED25519 = "ed25519"
    RSA = "rsa"


def mask_api_key(api_key: str) -> str:
    """`vmPU...A4Ge`: enough for a person to recognise a key, not enough to use it."""
    if len(api_key) <= 12:
        return api_key[:2] + "..." if len(api_key) > 2 else "..."
    return f"{api_key[:4]}...{api_key[-4:]}"


@dataclass(frozen=True, repr=False)
class Credentials:
    api_key: str
    api_secret: Secret
    passphrase: Secret | None = None
    key_type: KeyType = KeyType.HMAC

    @property
    def masked_api_key(self) -> str:
        return mask_api_key(self.api_key)

    def __repr__(self) -> str:
        return f"Credentials(api_key={self.masked_api_key!r}, key_type={self.key_type.value!r})"

    __str__ = __repr__
