"""A rotate racing an unbind, at every step one of them can be interrupted by the other.

The interleaving is forced, not hoped for: the whole of one request runs inside the other,
just before the other's chosen AWS call (FaultyClient's `before` hook). Whatever the order,
the binding ends either fully present and readable, or fully absent with no marker left (so
both keys can be bound again); the answers are 200/204, 404 or 409, never a 5xx.
"""

from __future__ import annotations

import pytest

from functions.bind import app as bind_function
from functions.read import app as read_function
from functions.unbind import app as unbind_function
from tests.support.api import (
    assert_fully_present,
    bind_body,
    bind_event,
    created,
    current_api_key,
    delete_event,
    get_event,
    rotate_body,
    rotate_event,
)
from tests.support.stack import SECRET_PREFIX

# Every AWS call a rotate makes after reading the binding, and every one an unbind makes.
ROTATE_STEPS = [
    ("secretsmanager", "put_secret_value"),  # stage the new credentials as AWSPENDING
    ("secretsmanager", "get_secret_value"),  # read back what was staged
    ("secretsmanager", "describe_secret"),  # find AWSCURRENT before promoting
    ("secretsmanager", "update_secret_version_stage"),  # promote
    ("dynamodb", "transact_write_items"),  # the binding and its key marker, in one transaction
]
UNBIND_STEPS = [
    ("secretsmanager", "delete_secret"),  # schedule the secret's deletion
    ("dynamodb", "transact_write_items"),  # the binding and its markers, conditional on the version read
]


def _assert_consistent(stack, binding_id: str, keys: list) -> None:
    """Present and readable, or absent with nothing left that names it."""
    answer = stack.invoke(read_function, get_event(binding_id))
    assert answer.status in (200, 404), answer
    if answer.status == 200:
        masked = answer.json["api_key_masked"]
        key = next(k for k in keys if f"{k.api_key[:4]}...{k.api_key[-4:]}" == masked)
        assert_fully_present(stack, binding_id, key.api_key)
        other = next(k for k in keys if k is not key)
        markers = [i for i in stack.table_items() if i["sk"]["S"].startswith("K#")]
        assert len(markers) == 1, "only the current key has a marker"
        # The other key is free again.
        again = stack.invoke(bind_function, bind_event(bind_body(other)))
        assert again.status == 201, again
        return
    assert [i for i in stack.table_items() if binding_id in str(i)] == []
    assert not [i for i in stack.table_items() if i["sk"]["S"].startswith(("K#", "A#"))], "no marker left"
    assert f"{SECRET_PREFIX}{binding_id}" not in stack.secret_names()
    assert stack.invoke(unbind_function, delete_event(binding_id)).status == 404
    for key in keys:  # neither key is held by a binding that does not exist
        again = stack.invoke(bind_function, bind_event(bind_body(key)))
        assert again.status == 201, again


@pytest.mark.parametrize(("client", "operation"), ROTATE_STEPS)
def test_an_unbind_inside_a_rotate_leaves_the_binding_whole_or_gone(stack, client, operation):
    old, new = stack.exchanges.key("binance", "healthy"), stack.exchanges.key("binance", "withdraw-enabled")
    binding_id = created(stack, old, scopes=["spot"])["binding_id"]
    unbound = []

    def unbind_now() -> None:
        unbound.append(stack.invoke(unbind_function, delete_event(binding_id)))

    faulty, operation = stack.fault_point(client, operation)
    faulty.before[operation] = unbind_now
    rotated = stack.invoke(bind_function, rotate_event(binding_id, rotate_body(new)))

    assert len(unbound) == 1
    assert unbound[0].status == 204, unbound[0]  # the unbind ran first, on the binding as it was
    assert rotated.status in (404, 409), rotated  # never a transient 503 for a binding that is gone
    if rotated.status == 409:
        assert rotated.json["error"]["code"] == "concurrent_update"
    _assert_consistent(stack, binding_id, [old, new])


@pytest.mark.parametrize(("client", "operation"), UNBIND_STEPS)
def test_a_rotate_inside_an_unbind_leaves_the_binding_whole_or_gone(stack, client, operation):
    old, new = stack.exchanges.key("binance", "healthy"), stack.exchanges.key("binance", "withdraw-enabled")
    binding_id = created(stack, old, scopes=["spot"])["binding_id"]
    rotated = []

    def rotate_now() -> None:
        rotated.append(stack.invoke(bind_function, rotate_event(binding_id, rotate_body(new))))

    faulty, operation = stack.fault_point(client, operation)
    faulty.before[operation] = rotate_now
    unbound = stack.invoke(unbind_function, delete_event(binding_id))

    assert len(rotated) == 1
    assert rotated[0].status in (200, 409), rotated[0]
    assert unbound.status in (204, 409), unbound
    if unbound.status == 204:
        # The unbind saw the rotate's commit, read the binding again and removed it as it is
        # now: the rotated key's marker went with it.
        _assert_consistent(stack, binding_id, [old, new])
    else:
        assert unbound.json["error"]["code"] == "concurrent_update"
        _assert_consistent(stack, binding_id, [old, new])


def test_two_unbinds_racing_answer_204_then_404(stack):
    key = stack.exchanges.key("binance", "healthy")
    binding_id = created(stack, key)["binding_id"]
    inner = []
    stack.dynamodb.before["transact_write_items"] = lambda: inner.append(
        stack.invoke(unbind_function, delete_event(binding_id))
    )
    outer = stack.invoke(unbind_function, delete_event(binding_id))
    assert [inner[0].status, outer.status] == [204, 404]
    _assert_consistent(stack, binding_id, [key, stack.exchanges.key("binance", "withdraw-enabled")])


def test_a_rotate_committed_before_the_unbind_reads_is_undone_with_the_binding(stack):
    old, new = stack.exchanges.key("binance", "healthy"), stack.exchanges.key("binance", "withdraw-enabled")
    binding_id = created(stack, old, scopes=["spot"])["binding_id"]
    assert stack.invoke(bind_function, rotate_event(binding_id, rotate_body(new))).status == 200
    assert current_api_key(stack, binding_id) == new.api_key
    assert stack.invoke(unbind_function, delete_event(binding_id)).status == 204
    _assert_consistent(stack, binding_id, [old, new])
