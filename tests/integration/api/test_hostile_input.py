"""Bodies no client should send, through the real handlers: each is a clear 400 with a stable
code, nothing is stored, and no exchange is asked. Never a 5xx for anything a client sent."""

from __future__ import annotations

import base64
import json

import pytest

from functions.bind import app as bind_function
from tests.support.api import bind_body, bind_event, created, rotate_body, rotate_event
from tests.support.events import api_event

NOT_UTF8 = b'{"user_id": "u-\xff\xfe"}'
DEEP = "[" * 1000 + "]" * 1000
BIG_INTEGER = '{"user_id": "u", "label": ' + "9" * 5000 + "}"


def _raw(method: str, path: str, body: str | bytes, *, content_type: str = "application/json", **kwargs) -> dict:
    event = api_event(method, path, headers={"Content-Type": content_type}, **kwargs)
    event["multiValueHeaders"]["Content-Type"] = [content_type]
    if isinstance(body, bytes):
        event["body"], event["isBase64Encoded"] = base64.b64encode(body).decode(), True
    else:
        event["body"] = body
    return event


def _requests(binding_id: str, body: str | bytes, content_type: str = "application/json") -> dict[str, dict]:
    return {
        "bind": _raw("POST", "/bindings", body, content_type=content_type),
        "rotate": _raw(
            "PUT",
            f"/bindings/{binding_id}/credentials",
            body,
            content_type=content_type,
            resource="/bindings/{binding_id}/credentials",
            path_parameters={"binding_id": binding_id},
        ),
    }


@pytest.mark.parametrize(
    ("name", "body", "code"),
    [
        ("not UTF-8", NOT_UTF8, "invalid_json"),
        ("a lone surrogate", '{"user_id": "\udcff"}', "invalid_json"),
        ("nested 1,000 deep", DEEP, "invalid_json"),
        ("an integer of 5,000 digits", BIG_INTEGER, "invalid_json"),
        ("a key twice", '{"user_id": "a", "user_id": "b"}', "duplicate_key"),
        ("NaN", '{"user_id": NaN}', "invalid_json"),
    ],
)
@pytest.mark.parametrize("binding", ["existing", "missing"])
def test_a_hostile_body_is_a_400_and_changes_nothing(stack, name, body, code, binding):
    binding_id = (
        created(stack, stack.exchanges.key("binance", "healthy"))["binding_id"]
        if binding == "existing"
        else "bnd_01J00000000000000000000000"
    )
    items, secrets, credential_items = stack.table_items(), stack.secret_names(), stack.credential_items()
    asked = {n: sim.stats.get("requests", 0) for n, sim in stack.exchanges.simulators.items()}
    for route, event in _requests(binding_id, body).items():
        answer = stack.invoke(bind_function, event)
        assert answer.status == 400, (name, route, answer)
        assert answer.json["error"]["code"] == code, (name, route, answer)
    assert stack.table_items() == items
    assert stack.secret_names() == secrets
    assert stack.credential_items() == credential_items
    assert {n: sim.stats.get("requests", 0) for n, sim in stack.exchanges.simulators.items()} == asked


@pytest.mark.parametrize(
    "content_type",
    ["multipart/form-data; boundary=xyz", "application/x-www-form-urlencoded", "text/plain", "application/xml"],
)
def test_a_body_that_is_not_json_is_refused_as_such(stack, content_type):
    form = '--xyz\r\nContent-Disposition: form-data; name="user_id"\r\n\r\nu-42\r\n--xyz--\r\n'
    for route, event in _requests("bnd_01J00000000000000000000000", form, content_type).items():
        answer = stack.invoke(bind_function, event)
        assert answer.status == 400, (content_type, route, answer)
        assert answer.json["error"]["code"] == "unsupported_content_type", (content_type, route, answer)
    assert stack.table_items() == []


@pytest.mark.parametrize(
    "passphrase",
    ["рassphrase", "pass\udcffphrase", "pass\x00phrase", "pass\x7fphrase", "pass\u00e9", "x" * 65],
)
def test_a_bitget_passphrase_outside_visible_ascii_is_a_400_on_bind_and_rotate(stack, passphrase):
    key = stack.exchanges.key("bitget", "healthy")
    binding = created(stack, key)
    before = stack.table_items()
    bind = stack.invoke(bind_function, bind_event(bind_body(key, passphrase=passphrase)))
    rotate = stack.invoke(bind_function, rotate_event(binding["binding_id"], rotate_body(key, passphrase=passphrase)))
    for answer in (bind, rotate):
        assert answer.status == 400, answer
        assert answer.json["error"]["code"] == "invalid_passphrase_format", answer
        assert passphrase not in answer.text
    assert stack.table_items() == before
    if stack.store == "kms":
        [item] = stack.credential_items()
        assert "pending" not in item, "no pending version was left"
        return
    secret = next(s for s in stack.secretsmanager.list_secrets()["SecretList"] if binding["binding_id"] in s["Name"])
    stages = stack.secretsmanager.describe_secret(SecretId=secret["ARN"])["VersionIdsToStages"]
    assert not any("AWSPENDING" in labels for labels in stages.values()), "no pending version was left"


def test_the_valid_bodies_still_pass(stack):
    key = stack.exchanges.key("binance", "healthy")
    answer = stack.invoke(bind_function, bind_event(json.dumps(bind_body(key))))
    assert answer.status == 201, answer


@pytest.mark.parametrize(
    "principal",
    ["arn:aws:iam::111111111111:user/" + "a" * 10_000, "arn:aws:iam::111111111111:user/x\n", "arn:aws:iam::1:user/x"],
)
def test_a_principal_iam_could_not_have_authenticated_is_a_403_not_a_storage_error(stack, principal):
    from functions.read import app as read_function

    answer = stack.invoke(read_function, api_event("GET", "/bindings", principal=principal))
    assert answer.status == 403, answer
    assert answer.json["error"]["code"] == "forbidden"
