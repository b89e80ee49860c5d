"""Request models and the input rules of the contract (section 2, "Bind request").

Pydantic checks types; `to_command` applies what pydantic cannot say alone: whitespace
trimming (reported as `whitespace_trimmed`), key shapes per exchange, passphrase rules.
Error messages name the field and the rule, never the value (it may be a secret).
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, SecretStr, StringConstraints

from keyhealth.api.rules import USER_ID_PATTERN, InvalidRequest
from keyhealth.bindings.model import BindCommand, RotateCommand
from keyhealth.domain.credentials import Credentials, KeyType, Secret
from keyhealth.domain.model import Scope
from keyhealth.exchanges import registry
from keyhealth.exchanges.registry import Exchange

UserId = Annotated[str, StringConstraints(pattern=USER_ID_PATTERN)]


# The shapes of real keys come from each exchange's spec (KeyRules): a value outside them is a
# paste error we can name before asking the exchange (and spending its rate limit). PEM
# private keys are the secret of Ed25519/RSA keys.
_PEM = re.compile(r"^-----BEGIN PRIVATE KEY-----\r?\n[A-Za-z0-9+/=\r\n]+-----END PRIVATE KEY-----$")


class CredentialsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Out of the repr: Powertools logs the validated request at DEBUG, and the full key is not
    # for logs (the masked form is).
    api_key: Annotated[str, Field(min_length=1, max_length=256, repr=False)]
    api_secret: Annotated[SecretStr, Field(min_length=1, max_length=8192)]
    passphrase: Annotated[SecretStr | None, Field(max_length=256)] = None
    key_type: KeyType = KeyType.HMAC


class BindRequest(CredentialsIn):
    user_id: UserId
    exchange: Exchange
    label: Annotated[str | None, Field(max_length=100)] = None
    scopes: Annotated[list[Scope], Field(min_length=1, max_length=2)]

    def to_command(self) -> BindCommand:
        if len(set(self.scopes)) != len(self.scopes):
            raise InvalidRequest("invalid_request", "scopes must not repeat a scope", "scopes")
        credentials, trimmed = credentials_for(self.exchange.value, self)
        return BindCommand(
            user_id=self.user_id,
            exchange=self.exchange.value,
            credentials=credentials,
            scopes=tuple(sorted(set(self.scopes))),
            label=self.label,
            trimmed_fields=trimmed,
        )


class RotateRequest(CredentialsIn):
    def to_command(self, exchange: str) -> RotateCommand:
        credentials, trimmed = credentials_for(exchange, self)
        return RotateCommand(credentials=credentials, trimmed_fields=trimmed)


def _trim(name: str, value: str, trimmed: list[str], *, multiline: bool = False) -> str:
    stripped = value.strip()
    if stripped != value:
        trimmed.append(name)
    # A PEM key's line breaks and its armor lines ("-----BEGIN PRIVATE KEY-----") are part of it.
    inner = "".join(ln for ln in stripped.splitlines() if not ln.startswith("-----")) if multiline else stripped
    if any(ch.isspace() for ch in inner):
        raise InvalidRequest("whitespace_in_credential", f"{name} contains whitespace", name)
    if not stripped:
        raise InvalidRequest("invalid_request", f"{name} is empty", name)
    return stripped


def credentials_for(exchange: str, request: CredentialsIn) -> tuple[Credentials, tuple[str, ...]]:
    """Validated, trimmed credentials for `exchange`, and the names of trimmed fields."""
    spec = registry.spec(exchange)
    rules, display_name = spec.keys, spec.display_name
    trimmed: list[str] = []
    if request.key_type not in rules.key_types:
        raise InvalidRequest(
            "key_type_not_supported", f"{display_name} keys cannot be {request.key_type.value}", "key_type"
        )
    api_key = _trim("api_key", request.api_key, trimmed)
    if not rules.api_key.fullmatch(api_key):
        raise InvalidRequest(
            "invalid_api_key_format", f"api_key does not have the shape of a {display_name} API key", "api_key"
        )
    pem = request.key_type is not KeyType.HMAC
    secret = _trim("api_secret", request.api_secret.get_secret_value(), trimmed, multiline=pem)
    if pem:
        _check_private_key(secret, request.key_type)
    elif not rules.hmac_secret.fullmatch(secret):
        raise InvalidRequest(
            "invalid_secret_format", "api_secret does not have the shape of an API secret", "api_secret"
        )

    passphrase = None
    if rules.passphrase is not None:
        if request.passphrase is None:
            raise InvalidRequest("passphrase_required", f"{display_name} keys need their passphrase", "passphrase")
        passphrase = _trim("passphrase", request.passphrase.get_secret_value(), trimmed)
        if not rules.passphrase.fullmatch(passphrase):
            raise InvalidRequest("invalid_passphrase_format", f"passphrase is {rules.passphrase_rule}", "passphrase")
    elif request.passphrase is not None:
        raise InvalidRequest("passphrase_not_allowed", f"{display_name} keys have no passphrase; omit it", "passphrase")
    credentials = Credentials(
        api_key=api_key,
        api_secret=Secret(secret),
        passphrase=Secret(passphrase) if passphrase is not None else None,
        key_type=request.key_type,
    )
    return credentials, tuple(trimmed)


def _check_private_key(pem: str, key_type: KeyType) -> None:
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    problem = InvalidRequest(
        "invalid_secret_format",
        f"api_secret must be the PEM (PKCS#8) private key of the {key_type.value} key",
        "api_secret",
    )
    if not _PEM.match(pem.replace("\r\n", "\n")):
        raise problem
    try:
        key = load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError):
        raise problem from None
    expected = ed25519.Ed25519PrivateKey if key_type is KeyType.ED25519 else rsa.RSAPrivateKey
    if not isinstance(key, expected):
        raise problem
