"""Schemathesis hooks for `make fuzz` (scripts/fuzz.py loads them with SCHEMATHESIS_HOOKS).

What the document cannot give a generator, and what the local stack needs:

- the caller: the local stack takes the IAM principal from `X-Keyhealth-Principal` (no SigV4);
  every case gets the fuzz tenant, which scripts/fuzz.py bound every usable demo key for;
- real keys: the exchange simulators know only the demo keys, so a generated key is checked and
  refused (422). Some positive binds are replaced by a demo key's body (for a fresh tenant each
  time, so that it is not already bound), some operations on one binding get a bound id, and
  some rotations the demo credentials of that binding's own exchange: the 2xx paths run too;
- the PEM private keys the document's `format`s name: real PKCS#8 keys of each type.

And two checks in place of schemathesis' own `not_a_server_error` and
`positive_data_acceptance`, which cannot know the document's words: the exceptions they allow
are exactly the ones the document states (see `_SEMANTIC`).
"""

from __future__ import annotations

import itertools
import json
import os
import re
from typing import Any

import schemathesis
from hypothesis import strategies as st

STATE = json.loads(os.environ.get("KEYHEALTH_FUZZ_STATE", "{}"))
PRINCIPAL_HEADER = "X-Keyhealth-Principal"
PRINCIPAL: str = STATE.get("principal", "arn:aws:iam::555555555555:user/fuzz")
STATEFUL_PRINCIPAL = "arn:aws:iam::555555555555:user/fuzz-stateful"
DEMO_BINDS: list[dict[str, Any]] = STATE.get("demo_binds", [])  # usable demo keys, as bind bodies
BOUND: list[dict[str, Any]] = STATE.get("bound", [])  # {binding_id, exchange, rotate_body}
MAX_BODY_BYTES = 16 * 1024
_UNIQUE = itertools.count(1)  # tenants and Idempotency-Keys that no other case uses
BINDING_ID = re.compile(r"bnd_[0-9A-HJKMNP-TV-Z]{26}")
BINDING_ROUTES = ("/bindings/{binding_id}", "/bindings/{binding_id}/verify", "/bindings/{binding_id}/credentials")


# Real private keys for the document's PEM formats, made by scripts/fuzz.py (which checks that the
# stack never prints them): an RSA key takes ~50 ms to generate, too slow per example.
_PEMS: dict[str, list[str]] = STATE.get("pem_keys") or {"ed25519": [], "rsa": []}
_REAL_PEMS = {pem for typed in _PEMS.values() for pem in typed}
for _type, _keys in _PEMS.items():
    if _keys:
        schemathesis.openapi.format(f"{_type}-private-key-pem", st.sampled_from(_keys))


def _derived(case: Any, **changes: Any) -> Any:
    derived = case.derive()
    for name, value in changes.items():
        if name == "headers":
            for header, text in value.items():
                derived.headers[header] = text
        else:
            setattr(derived, name, value)
    return derived


def _is_positive(case: Any) -> bool:
    meta = case.meta
    return meta is not None and meta.generation.mode.is_positive


def _phase(case: Any) -> str | None:
    meta = case.meta
    return str(meta.phase.name) if meta is not None else None


def _fresh_tenant(case: Any) -> Any:
    """Some positive binds become a demo key's bind, for a tenant of their own (not yet bound)."""
    fresh = st.sampled_from(DEMO_BINDS).map(
        lambda b: _derived(
            case, body=dict(b), headers={PRINCIPAL_HEADER: f"arn:aws:iam::555555555555:user/fuzz-{next(_UNIQUE)}"}
        )
    )
    return st.one_of(st.just(case), fresh)


@schemathesis.hook
def flatmap_case(context: Any, case: Any) -> Any:
    path, method = case.operation.path, case.method.upper()
    is_bind = method == "POST" and path == "/bindings" and _is_positive(case) and bool(DEMO_BINDS)
    if _phase(case) == "stateful":
        # A scenario's steps share one tenant (its links pass the bound id on); one with no
        # binding yet, so that a demo key's bind creates one (201) for the steps that follow.
        case = _derived(case, headers={PRINCIPAL_HEADER: STATEFUL_PRINCIPAL})
        if is_bind:
            # Each its own Idempotency-Key: a generated one ("0") comes back in later scenarios with
            # the same demo body, and the API replays the first 201 (as documented), for a binding
            # that a scenario has unbound since: schemathesis would call that a lost resource.
            demo = st.sampled_from(DEMO_BINDS).map(
                lambda b: _derived(case, body=dict(b), headers={"Idempotency-Key": f"fuzz-{next(_UNIQUE)}"})
            )
            return st.one_of(st.just(case), demo)
        return st.just(case)
    case = _derived(case, headers={PRINCIPAL_HEADER: PRINCIPAL})
    if is_bind:
        return _fresh_tenant(case)
    if path in BINDING_ROUTES and BOUND and _matches_a_binding_id(case):
        bound = st.sampled_from(BOUND)
        with_id = bound.map(lambda b: _derived(case, path_parameters={"binding_id": b["binding_id"]}))
        choices = [st.just(case), with_id]
        if method == "PUT" and _is_positive(case):
            choices.append(
                bound.map(
                    lambda b: _derived(
                        case, path_parameters={"binding_id": b["binding_id"]}, body=dict(b["rotate_body"])
                    )
                )
            )
        return st.one_of(*choices)
    return st.just(case)


def _matches_a_binding_id(case: Any) -> bool:
    """The generated id has the documented shape (so the path is not what a negative case spoils)."""
    value = case.path_parameters.get("binding_id")
    return isinstance(value, str) and BINDING_ID.fullmatch(value) is not None


def _error(response: Any) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body.get("error", {}) if isinstance(body, dict) else {}


def _exchange_could_not_answer(response: Any) -> bool:
    """503 `exchange_unavailable` whose report has only transient problems: the exchange's state
    (a simulator's rate limit, e.g. Bitget's one check per second per account), not ours."""
    if response.status_code != 503 or _error(response).get("code") != "exchange_unavailable":
        return False
    findings = response.json().get("report", {}).get("findings", [])
    return all(f.get("severity") in ("transient", "info") for f in findings)


@schemathesis.check
def keyhealth_not_a_server_error(ctx: Any, response: Any, case: Any) -> bool | None:
    """Any 5xx fails, except a 503 that says the exchange could not answer."""
    if response.status_code >= 500 and not _exchange_could_not_answer(response):
        raise AssertionError(f"server error {response.status_code}: {response.text[:300]}")
    return None


def _body_bytes(response: Any) -> int:
    body = response.request.body
    return len(body) if body else 0


# A request valid by the document that the API still refuses, as the document says in words:
# (method, path template) -> {status: {codes}}; None: any method or path.
_SEMANTIC: dict[tuple[str, str] | None, dict[int, set[str]]] = {
    # The key is checked live: a generated key is unknown to the exchange (the check's report says so).
    ("POST", "/bindings"): {422: {"key_failing", "idempotency_key_reused"}},
    ("PUT", "/bindings/{binding_id}/credentials"): {
        422: {"key_failing", "idempotency_key_reused"},
        # Valid for some exchange, not for the binding's (the request cannot say which it is on).
        400: {
            "invalid_api_key_format",
            "invalid_secret_format",
            "passphrase_required",
            "passphrase_not_allowed",
            "invalid_passphrase_format",
            "key_type_not_supported",
        },
    },
    # The cursor is opaque: only one this API handed out is valid.
    ("GET", "/bindings"): {400: {"invalid_cursor"}},
}


@schemathesis.check
def keyhealth_positive_data_acceptance(ctx: Any, response: Any, case: Any) -> bool | None:
    """A request valid by the document is answered 2xx, 404 (no such binding) or 409 (already
    bound, changed meanwhile), or refused only as the document says it can be."""
    if not _is_positive(case):
        return None
    status = response.status_code
    if 200 <= status < 300 or status in (404, 409) or _exchange_could_not_answer(response):
        return None
    code = _error(response).get("code")
    if status == 400 and code == "body_too_large" and _body_bytes(response) > MAX_BODY_BYTES:
        return None
    # A PEM private key's `format` says it must parse as a key of that type; the coverage phase
    # draws values from the pattern alone, which a real key cannot be derived from.
    body = case.body if isinstance(case.body, dict) else {}
    pem = body.get("key_type") in ("ed25519", "rsa")
    if status == 400 and code == "invalid_secret_format" and pem and body.get("api_secret") not in _REAL_PEMS:
        return None
    allowed = _SEMANTIC.get((case.method.upper(), case.operation.path), {}).get(status, set())
    if code in allowed:
        return None
    raise AssertionError(f"a request valid by the document was refused: {status} {code}: {response.text[:300]}")
