"""Malformed input to POST /bindings and PUT /bindings/{id}/credentials: 400 with a stable
`error.code`, nothing stored, the exchange never asked, and the secret never echoed.

Every case is a valid body with one thing wrong (the last tests show the valid bodies are
accepted), so each code is caused by that one thing. Cases share a stack per group (a stack
costs a third of a second) and name themselves in assertion messages.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from functions.bind import app as bind_function
from tests.support.api import bind_body, bind_event, rotate_body, rotate_event

BINANCE = ("binance", "healthy")
BINANCE_ED25519 = ("binance", "healthy-ed25519")
BINANCE_RSA = ("binance", "healthy-rsa")
BITGET = ("bitget", "healthy")
BINGX = ("bingx", "healthy spot and futures")

DROP = object()  # an override that removes the field


def _pkcs8(key: Any) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


ED25519_PEM = _pkcs8(ed25519.Ed25519PrivateKey.from_private_bytes(bytes(range(32))))
EC_PEM = _pkcs8(ec.derive_private_key(123456789, ec.SECP256R1()))
RSA_PEM = _pkcs8(rsa.generate_private_key(public_exponent=65537, key_size=1024))  # noqa: S505 - never signs
ED25519_PUBLIC_PEM = (
    ed25519.Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    .public_key()
    .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    .decode()
)


def _rsa_pkcs1(pem_pkcs8: str) -> str:
    """The same RSA key in the older `BEGIN RSA PRIVATE KEY` (PKCS#1) armour."""
    key = serialization.load_pem_private_key(pem_pkcs8.encode(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    ).decode()


@dataclass
class Case:
    name: str
    key: tuple[str, str]  # the demo key whose valid body is spoiled
    change: dict[str, Any] | Callable[[dict[str, Any]], Any]  # overrides, or body -> new body (dict or raw)
    code: str
    headers: dict[str, str] = field(default_factory=dict)

    def body(self, valid: dict[str, Any]) -> Any:
        if callable(self.change):
            return self.change(dict(valid))
        spoiled = {**valid, **self.change}
        return {k: v for k, v in spoiled.items() if v is not DROP}


def _space_inside(value: str) -> str:
    return value[:10] + " " + value[10:]


def _space_in_pem_line(pem: str) -> str:
    lines = pem.split("\n")
    lines[1] = lines[1][:5] + " " + lines[1][5:]
    return "\n".join(lines)


def _raw(text: str | None) -> Callable[[dict[str, Any]], str | None]:
    return lambda _body: text


def _padded_to_17_kib(body: dict[str, Any]) -> str:
    """A valid body, made 17 KiB with whitespace between the JSON tokens."""
    text = json.dumps(body)
    return text[:-1] + " " * (17 * 1024 - len(text)) + "}"


BIND_CASES: dict[str, list[Case]] = {
    "wrong types": [
        Case("scopes is not a list", BINANCE, {"scopes": "spot"}, "invalid_request"),
        Case("user_id is a number", BINANCE, {"user_id": 42}, "invalid_request"),
        Case("api_key is a number", BINGX, {"api_key": 1234567890123456789012345678901234}, "invalid_request"),
        Case(
            "api_secret is an object", BINANCE, lambda b: {**b, "api_secret": {"v": b["api_secret"]}}, "invalid_request"
        ),
        Case("passphrase is a number", BITGET, {"passphrase": 12345678}, "invalid_request"),
        Case("label is a list", BINANCE, {"label": ["grid"]}, "invalid_request"),
        Case("the body is a JSON array", BINANCE, lambda b: json.dumps([b]), "invalid_request"),
        Case("the body is a JSON string", BINANCE, _raw('"bind me"'), "invalid_request"),
    ],
    "schema": [
        Case("unknown exchange", BINANCE, {"exchange": "kraken"}, "invalid_request"),
        Case("empty scopes", BINANCE, {"scopes": []}, "invalid_request"),
        Case("unknown scope", BINANCE, {"scopes": ["spot", "margin"]}, "invalid_request"),
        Case("read is implied, not a scope", BINANCE, {"scopes": ["read"]}, "invalid_request"),
        Case("a scope twice", BINANCE, {"scopes": ["spot", "spot"]}, "invalid_request"),
        Case("extra unknown field", BINANCE, {"withdraw": True}, "invalid_request"),
        Case("missing user_id", BINANCE, {"user_id": DROP}, "invalid_request"),
        Case("missing api_secret", BINANCE, {"api_secret": DROP}, "invalid_request"),
        Case("empty api_secret", BINANCE, {"api_secret": ""}, "invalid_request"),
        Case("unknown key_type", BINANCE, {"key_type": "dsa"}, "invalid_request"),
        Case("user_id with bad characters", BINANCE, {"user_id": "u 42/../x"}, "invalid_request"),
        Case("user_id too long", BINANCE, {"user_id": "u" * 129}, "invalid_request"),
        Case("label too long", BINANCE, {"label": "x" * 101}, "invalid_request"),
    ],
    "credential rules": [
        Case("Bitget without passphrase", BITGET, {"passphrase": DROP}, "passphrase_required"),
        Case("Bitget with a null passphrase", BITGET, {"passphrase": None}, "passphrase_required"),
        Case("Binance with a passphrase", BINANCE, {"passphrase": "DemoPass2024"}, "passphrase_not_allowed"),
        Case("BingX with a passphrase", BINGX, {"passphrase": "DemoPass2024"}, "passphrase_not_allowed"),
        Case("Bitget passphrase too long", BITGET, {"passphrase": "p" * 65}, "invalid_passphrase_format"),
        Case(
            "whitespace inside api_key",
            BINANCE,
            lambda b: {**b, "api_key": _space_inside(b["api_key"])},
            "whitespace_in_credential",
        ),
        Case(
            "tab inside api_secret",
            BINGX,
            lambda b: {**b, "api_secret": b["api_secret"][:9] + "\t" + b["api_secret"][9:]},
            "whitespace_in_credential",
        ),
        Case(
            "newline inside an HMAC secret",
            BITGET,
            lambda b: {**b, "api_secret": b["api_secret"][:30] + "\n" + b["api_secret"][30:]},
            "whitespace_in_credential",
        ),
        Case("whitespace inside passphrase", BITGET, {"passphrase": "Demo Pass2024"}, "whitespace_in_credential"),
        Case(
            "a space inside a PEM line",
            BINANCE_ED25519,
            lambda b: {**b, "api_secret": _space_in_pem_line(b["api_secret"])},
            "whitespace_in_credential",
        ),
        Case(
            "Binance key too short",
            BINANCE,
            {"api_key": "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duA4G"},
            "invalid_api_key_format",
        ),
        Case(
            "Binance key with symbols",
            BINANCE,
            lambda b: {**b, "api_key": b["api_key"][:-1] + "-"},
            "invalid_api_key_format",
        ),
        Case("Bitget key without bg_", BITGET, lambda b: {**b, "api_key": b["api_key"][3:]}, "invalid_api_key_format"),
        Case("a Binance key for Bitget", BITGET, lambda b: {**b, "api_key": "a" * 64}, "invalid_api_key_format"),
        Case("BingX key too short", BINGX, {"api_key": "Ab3" * 10}, "invalid_api_key_format"),
        Case(
            "HMAC secret with symbols",
            BINANCE,
            lambda b: {**b, "api_secret": b["api_secret"][:-2] + "+/"},
            "invalid_secret_format",
        ),
        Case("HMAC secret too short", BITGET, {"api_secret": "0123456789abcde"}, "invalid_secret_format"),
        Case("Ed25519 for BingX", BINGX, {"key_type": "ed25519"}, "key_type_not_supported"),
        Case("RSA for BingX", BINGX, {"key_type": "rsa"}, "key_type_not_supported"),
        Case("Ed25519 for Bitget", BITGET, {"key_type": "ed25519"}, "key_type_not_supported"),
    ],
    "private keys": [
        Case(
            "a public key instead of the private key",
            BINANCE_ED25519,
            {"api_secret": ED25519_PUBLIC_PEM},
            "invalid_secret_format",
        ),
        Case(
            "an RSA private key for an Ed25519 key", BINANCE_ED25519, {"api_secret": RSA_PEM}, "invalid_secret_format"
        ),
        Case(
            "an Ed25519 private key for an RSA key", BINANCE_RSA, {"api_secret": ED25519_PEM}, "invalid_secret_format"
        ),
        Case("an EC private key", BINANCE_ED25519, {"api_secret": EC_PEM}, "invalid_secret_format"),
        Case(
            "a PKCS#1 RSA key",
            BINANCE_RSA,
            lambda b: {**b, "api_secret": _rsa_pkcs1(b["api_secret"])},
            "invalid_secret_format",
        ),
        Case(
            "armour around garbage",
            BINANCE_ED25519,
            {"api_secret": "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----"},
            "invalid_secret_format",
        ),
        Case("an HMAC secret for an Ed25519 key", BINANCE_ED25519, {"api_secret": "a" * 64}, "invalid_secret_format"),
        Case(
            "a truncated PEM",
            BINANCE_RSA,
            lambda b: {**b, "api_secret": b["api_secret"][:200] + "\n-----END PRIVATE KEY-----"},
            "invalid_secret_format",
        ),
    ],
    "body": [
        Case("a 17 KiB label", BINANCE, {"label": "x" * 17 * 1024}, "body_too_large"),
        Case("a valid body padded to 17 KiB", BINANCE, _padded_to_17_kib, "body_too_large"),
        Case("not JSON", BINANCE, lambda b: json.dumps(b)[:-1], "invalid_json"),
        Case("single-quoted pseudo JSON", BINANCE, lambda b: str(b), "invalid_json"),
        Case("no body", BINANCE, _raw(None), "invalid_request"),
        Case("an empty body", BINANCE, _raw(""), "invalid_request"),
        Case("JSON null", BINANCE, _raw("null"), "invalid_request"),
        Case("a text/plain body", BINANCE, json.dumps, "unsupported_content_type", {"Content-Type": "text/plain"}),
    ],
}


def valid_bind_body(stack, key: tuple[str, str]) -> dict[str, Any]:
    return bind_body(stack.exchanges.key(*key))


def secrets_in(*bodies: Any) -> list[str]:
    """The secret values (and their whitespace-separated pieces) in request bodies, raw or not."""
    found: list[str] = []
    for body in bodies:
        if isinstance(body, str):
            try:
                body = json.loads(body)
            except ValueError:
                continue
        if not isinstance(body, dict):
            continue
        for name in ("api_secret", "passphrase"):
            value = body.get(name)
            for text in value.values() if isinstance(value, dict) else [value]:
                if isinstance(text, str):
                    found += [text, *text.split()]
    # PEM armour lines and short pieces are not secret; the base64 lines of a key are.
    return [v for v in found if len(v) >= 8 and not v.startswith("-----")]


def exchange_requests(stack) -> int:
    return sum(sim.stats["requests"] for sim in stack.exchanges.simulators.values())


def assert_refused(response, case: Case, valid: dict[str, Any], submitted: Any) -> None:
    assert response.status == 400, (case.name, response)
    assert response.json["error"]["code"] == case.code, (case.name, response)
    assert response.json["error"]["message"], case.name
    assert set(response.json) == {"error"}, case.name  # no report: nothing was checked
    echoed = response.text + json.dumps(response.headers)
    secrets = secrets_in(valid, submitted)
    assert secrets, case.name
    for secret in secrets:
        assert secret not in echoed, (case.name, "the response echoes the secret")


@pytest.mark.parametrize("group", list(BIND_CASES))
def test_malformed_binds_are_400_and_store_nothing(stack, group):
    for number, case in enumerate(BIND_CASES[group]):
        valid = valid_bind_body(stack, case.key)
        submitted = case.body(valid)
        headers = {"Idempotency-Key": f"malformed-{number}", **case.headers}
        response = stack.invoke(bind_function, bind_event(submitted, headers=headers))

        assert_refused(response, case, valid, submitted)
        assert stack.secretsmanager.list_secrets(IncludePlannedDeletion=True)["SecretList"] == [], case.name
        assert stack.credential_items() == [], case.name
        assert stack.table_items() == [], case.name
        assert stack.table_items("keyhealth-idempotency") == [], case.name
        assert exchange_requests(stack) == 0, (case.name, "a malformed request reached the exchange")
        assert stack.alerts() == [], case.name


def test_the_valid_bodies_the_cases_spoil_are_accepted(stack):
    keys = {case.key for cases in BIND_CASES.values() for case in cases}
    assert keys == {BINANCE, BINANCE_ED25519, BINANCE_RSA, BITGET, BINGX}
    for key in sorted(keys):
        response = stack.invoke(bind_function, bind_event(valid_bind_body(stack, key)))
        assert response.status == 201, (key, response)


ROTATE_CASES: list[Case] = [
    Case("api_secret is a number", BINANCE, {"api_secret": 1234567890123456}, "invalid_request"),
    Case("api_key is null", BINANCE, {"api_key": None}, "invalid_request"),
    Case("missing api_key", BINGX, {"api_key": DROP}, "invalid_request"),
    Case("unknown key_type", BINANCE, {"key_type": "dsa"}, "invalid_request"),
    Case("the exchange cannot change", BINANCE, {"exchange": "bingx"}, "invalid_request"),
    Case("the user cannot change", BINANCE, {"user_id": "u-43"}, "invalid_request"),
    Case("extra unknown field", BITGET, {"note": "x"}, "invalid_request"),
    Case("Bitget without passphrase", BITGET, {"passphrase": DROP}, "passphrase_required"),
    Case("Binance with a passphrase", BINANCE, {"passphrase": "DemoPass2024"}, "passphrase_not_allowed"),
    Case("BingX with a passphrase", BINGX, {"passphrase": "DemoPass2024"}, "passphrase_not_allowed"),
    Case(
        "whitespace inside api_key",
        BITGET,
        lambda b: {**b, "api_key": _space_inside(b["api_key"])},
        "whitespace_in_credential",
    ),
    Case(
        "whitespace inside api_secret",
        BINANCE,
        lambda b: {**b, "api_secret": _space_inside(b["api_secret"])},
        "whitespace_in_credential",
    ),
    Case("a Bitget key for a Binance binding", BINANCE, {"api_key": "bg_" + "0" * 32}, "invalid_api_key_format"),
    Case("a Binance key for a Bitget binding", BITGET, {"api_key": "a" * 64}, "invalid_api_key_format"),
    Case(
        "HMAC secret with symbols",
        BINGX,
        lambda b: {**b, "api_secret": b["api_secret"][:-1] + "!"},
        "invalid_secret_format",
    ),
    Case("Ed25519 for BingX", BINGX, {"key_type": "ed25519", "api_secret": ED25519_PEM}, "key_type_not_supported"),
    Case(
        "Ed25519 key_type with a public key",
        BINANCE,
        {"key_type": "ed25519", "api_secret": ED25519_PUBLIC_PEM},
        "invalid_secret_format",
    ),
    Case(
        "RSA key_type with an Ed25519 key",
        BINANCE,
        {"key_type": "rsa", "api_secret": ED25519_PEM},
        "invalid_secret_format",
    ),
    Case("a 17 KiB body", BINANCE, _padded_to_17_kib, "body_too_large"),
    Case("not JSON", BINANCE, lambda b: json.dumps(b)[:-1], "invalid_json"),
    Case("no body", BINANCE, _raw(None), "invalid_request"),
]


def test_malformed_rotations_are_400_and_change_nothing(stack):
    bound = {}
    for key in (BINANCE, BITGET, BINGX):
        response = stack.invoke(bind_function, bind_event(bind_body(stack.exchanges.key(*key))))
        assert response.status == 201, response
        bound[key] = response.json["binding"]["binding_id"]
    secrets = {key: f"keyhealth/test-stack/{binding_id}" for key, binding_id in bound.items()}

    def state() -> tuple:
        # moto answers LastAccessedDate with the current time: it says nothing about changes.
        if stack.store == "kms":  # the credential items themselves: their versions are attributes
            return stack.table_items(), stack.table_items("keyhealth-idempotency"), stack.credential_items()
        versions = {
            key: [
                (v["VersionId"], v["VersionStages"])
                for v in stack.secretsmanager.list_secret_version_ids(SecretId=name)["Versions"]
            ]
            for key, name in secrets.items()
        }
        return stack.table_items(), stack.table_items("keyhealth-idempotency"), versions

    before, requests_before = state(), exchange_requests(stack)
    for number, case in enumerate(ROTATE_CASES):
        valid = rotate_body(stack.exchanges.key(*case.key))
        submitted = case.body(valid)
        headers = {"Idempotency-Key": f"rotate-{number}", **case.headers}
        response = stack.invoke(bind_function, rotate_event(bound[case.key], submitted, headers=headers))

        assert_refused(response, case, valid, submitted)
        assert state() == before, (case.name, "a malformed rotation changed what is stored")
        assert exchange_requests(stack) == requests_before, (case.name, "a malformed rotation reached the exchange")

    # Well-formed bodies rotate (to another key of the same exchange: Bitget allows one check
    # per second per account, and the binding was just checked).
    for key, other in {
        BINANCE: ("binance", "healthy-ed25519"),
        BITGET: ("bitget", "legacy-trade"),
        BINGX: ("bingx", "no IP binding, trading"),
    }.items():
        response = stack.invoke(bind_function, rotate_event(bound[key], rotate_body(stack.exchanges.key(*other))))
        assert response.status == 200, (key, response)
