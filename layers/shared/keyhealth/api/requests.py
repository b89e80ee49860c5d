"""Request models and the input rules of the contract (section 2, "Bind request").

Pydantic checks types; `to_command` applies what pydantic cannot say alone: whitespace
trimming (reported as `whitespace_trimmed`), key shapes per exchange, passphrase rules.
Error messages name the field and the rule, never the value (it may be a secret).

The OpenAPI document states the same rules, from the same exchange specs (`bind_request_schema`,
`rotate_request_schema`): one schema per exchange and key type, so that a request valid by the
document passes `to_command`, and one it refuses breaks a rule `to_command` enforces.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, GetJsonSchemaHandler, SecretStr, StringConstraints
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from keyhealth.api.rules import USER_ID_PATTERN, InvalidRequest
from keyhealth.bindings.model import BindCommand, RotateCommand
from keyhealth.domain.credentials import Credentials, KeyType, Secret
from keyhealth.domain.exchange import ExchangeSpec
from keyhealth.domain.model import Scope
from keyhealth.exchanges import registry
from keyhealth.exchanges.registry import Exchange
from keyhealth.webhooks.model import SUBSCRIBABLE

UserId = Annotated[str, StringConstraints(pattern=USER_ID_PATTERN)]


# The shapes of real keys come from each exchange's spec (KeyRules): a value outside them is a
# paste error we can name before asking the exchange (and spending its rate limit). PEM
# private keys are the secret of Ed25519/RSA keys.
_PEM = re.compile(r"^-----BEGIN PRIVATE KEY-----\r?\n[A-Za-z0-9+/=\r\n]+-----END PRIVATE KEY-----$")

_ARMOR = re.compile(r"-----[A-Z0-9 ]+-----")

MAX_API_KEY = 256
MAX_SECRET = 8192  # a PEM private key fits
MAX_PASSPHRASE = 256
MAX_LABEL = 100


class CredentialsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Out of the repr: Powertools logs the validated request at DEBUG, and the full key is not
    # for logs (the masked form is).
    api_key: Annotated[str, Field(min_length=1, max_length=MAX_API_KEY, repr=False)]
    api_secret: Annotated[SecretStr, Field(min_length=1, max_length=MAX_SECRET)]
    passphrase: Annotated[SecretStr | None, Field(max_length=MAX_PASSPHRASE)] = None
    key_type: KeyType = KeyType.HMAC


class BindRequest(CredentialsIn):
    user_id: UserId
    exchange: Exchange
    label: Annotated[str | None, Field(max_length=MAX_LABEL)] = None
    scopes: Annotated[list[Scope], Field(min_length=1, max_length=2)]

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        return bind_request_schema()

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
    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        return rotate_request_schema()

    def to_command(self, exchange: str) -> RotateCommand:
        credentials, trimmed = credentials_for(exchange, self)
        return RotateCommand(credentials=credentials, trimmed_fields=trimmed)


def _trim(name: str, value: str, trimmed: list[str], *, multiline: bool = False) -> str:
    stripped = value.strip()
    if stripped != value:
        trimmed.append(name)
    # A PEM key's line breaks and its armor ("-----BEGIN PRIVATE KEY-----") are part of it, wherever
    # the armor is: glued to a base64 line, it is a malformed key (invalid_secret_format), not whitespace.
    inner = _ARMOR.sub("", stripped).replace("\r", "").replace("\n", "") if multiline else stripped
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


# ------------------------------------------------------------------ the document's schemas
#: What `str.strip()` removes around a credential (Python's 29 whitespace characters), as a
#: character class that JSON Schema (ECMA-262) and Python read alike.
TRIMMED_SPACE = r"[\t-\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
_TRIMMED_NOTE = "; surrounding whitespace is trimmed (and reported as the `whitespace_trimmed` finding)"
#: The `format` of a PEM private key's `api_secret`, per key type: no JSON Schema can say "a PKCS#8
#: key of this type that parses", so the format names the rule the code checks.
PEM_FORMATS = {KeyType.ED25519: "ed25519-private-key-pem", KeyType.RSA: "rsa-private-key-pem"}


def trimmed(pattern: str) -> str:
    """`pattern` (anchored, ^...$) with the whitespace `_trim` removes allowed around the value."""
    inner = pattern.removeprefix("^").removesuffix("$")
    return f"^{TRIMMED_SPACE}*(?:{inner}){TRIMMED_SPACE}*$"


def _secret_schema(spec: ExchangeSpec, key_type: KeyType) -> dict[str, Any]:
    if key_type is KeyType.HMAC:
        return {
            "type": "string",
            "maxLength": MAX_SECRET,
            "pattern": trimmed(spec.keys.hmac_secret.pattern),
            "format": "password",
            "writeOnly": True,
            "description": f"the {spec.display_name} API secret{_TRIMMED_NOTE}",
        }
    return {
        "type": "string",
        "maxLength": MAX_SECRET,
        "pattern": trimmed(_PEM.pattern),
        "format": PEM_FORMATS[key_type],
        "writeOnly": True,
        "description": (
            f"the PEM (PKCS#8, unencrypted) private key of the {key_type.value} key; one that does not parse, "
            f"or is of another key type, answers 400 `invalid_secret_format`{_TRIMMED_NOTE}"
        ),
    }


def _credential_properties(spec: ExchangeSpec, key_type: KeyType) -> tuple[dict[str, Any], list[str]]:
    """The credential fields of one (exchange, key type), and which of them are required."""
    rules = spec.keys
    properties: dict[str, Any] = {
        "api_key": {
            "type": "string",
            "maxLength": MAX_API_KEY,
            "pattern": trimmed(rules.api_key.pattern),
            "description": f"the {spec.display_name} API key{_TRIMMED_NOTE}",
        },
        "api_secret": _secret_schema(spec, key_type),
    }
    required = ["api_key", "api_secret"]
    if rules.passphrase is not None:
        properties["passphrase"] = {
            "type": "string",
            "maxLength": MAX_PASSPHRASE,
            "pattern": trimmed(rules.passphrase.pattern),
            "format": "password",
            "writeOnly": True,
            "description": f"the key's passphrase: {rules.passphrase_rule}{_TRIMMED_NOTE}",
        }
        required.append("passphrase")
    else:
        properties["passphrase"] = {
            "type": "null",
            "description": f"{spec.display_name} keys have no passphrase: omit it (or send null)",
        }
    if key_type is KeyType.HMAC:
        properties["key_type"] = {"type": "string", "enum": [KeyType.HMAC.value], "default": KeyType.HMAC.value}
    else:
        properties["key_type"] = {"type": "string", "const": key_type.value}
        required.append("key_type")
    return properties, required


def _shapes() -> list[tuple[ExchangeSpec, KeyType]]:
    order = list(KeyType)
    return [(spec, key_type) for spec in registry.SPECS for key_type in sorted(spec.keys.key_types, key=order.index)]


def bind_request_schema() -> dict[str, Any]:
    """The bind request as the OpenAPI document states it: one object per exchange and key type."""
    branches = []
    for spec, key_type in _shapes():
        credentials, required = _credential_properties(spec, key_type)
        properties = {
            "user_id": {
                "type": "string",
                "pattern": USER_ID_PATTERN,
                "description": "the platform's own id for its end user",
            },
            "exchange": {"type": "string", "const": spec.name},
            "label": {"anyOf": [{"type": "string", "maxLength": MAX_LABEL}, {"type": "null"}]},
            "scopes": {
                "type": "array",
                "items": {"type": "string", "enum": [s.value for s in Scope]},
                "minItems": 1,
                "maxItems": len(Scope),
                "uniqueItems": True,
                "description": "what the platform needs to do with the key (`read` is always implied)",
            },
            **credentials,
        }
        branches.append(
            {
                "title": f"{spec.name}, {key_type.value} key",
                "type": "object",
                "properties": properties,
                "required": ["user_id", "exchange", "scopes", *required],
                "additionalProperties": False,
            }
        )
    return {
        "title": "BindRequest",
        "description": "A key to check and store: the fields and shapes depend on `exchange` and `key_type`.",
        "oneOf": branches,
    }


def rotate_request_schema() -> dict[str, Any]:
    """The rotate request: the credentials of the binding's exchange, which only the stored binding
    knows; the document lists every exchange's shapes."""
    branches = []
    for spec, key_type in _shapes():
        properties, required = _credential_properties(spec, key_type)
        branches.append(
            {
                "title": f"{spec.name}, {key_type.value} key",
                "type": "object",
                "properties": properties,
                "required": required,
                "additionalProperties": False,
            }
        )
    return {
        "title": "RotateRequest",
        "description": (
            "The new credentials, in the shape of the binding's own exchange (one of these): credentials "
            "of another exchange's shape answer 400 (`invalid_api_key_format`, `invalid_secret_format`, "
            "`passphrase_required`, `passphrase_not_allowed`, `invalid_passphrase_format`, "
            "`key_type_not_supported`)."
        ),
        "anyOf": branches,
    }


#: What a webhook can subscribe to (keyhealth.webhooks.model.SUBSCRIBABLE; `ping` is always sent).
WebhookEventType = Literal[
    "binding.status_changed",
    "binding.trading_permission_expiring",
    "binding.unreachable",
    "binding.deleted",
    "binding.planned_ip_missing",
]


class WebhookRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Out of the repr: a platform may put a token in its URL's query.
    url: Annotated[
        str, Field(min_length=8, max_length=2048, repr=False, description="the https:// URL events are POSTed to")
    ]
    events: Annotated[
        list[WebhookEventType] | None,
        Field(min_length=1, max_length=5, description="the event types to send; omitted: all of them"),
    ] = None

    def event_types(self) -> tuple[str, ...]:
        if self.events is None:
            return SUBSCRIBABLE
        if len(set(self.events)) != len(self.events):
            raise InvalidRequest("invalid_request", "events must not repeat a type", "events")
        return tuple(t for t in SUBSCRIBABLE if t in self.events)
