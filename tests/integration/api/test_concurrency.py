"""Many Lambda containers at once: the same key bound by 20 requests together, and 20 retries
of one request with one Idempotency-Key. The requests are made to meet where it matters (a
barrier just before the write), so the race is forced every run, not hoped for."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from functions.bind import app as bind_function
from tests.support.api import bind_body, bind_event

CONTAINERS = 20


def _meet_before(client, operation: str, parties: int, *, table: str | None = None) -> threading.Barrier:
    """Every caller of `operation` (on `table` only, if given) waits until `parties` of them have arrived,
    then all go."""
    barrier = threading.Barrier(parties, timeout=60)
    client.every[operation] = barrier.wait
    if table is not None:
        client.every_table[operation] = table
    client.atomic()
    return barrier


def _all_at_once(stack, events: list[dict]) -> list:
    with ThreadPoolExecutor(max_workers=len(events)) as pool:
        return list(pool.map(lambda event: stack.invoke(bind_function, event), events))


def test_twenty_concurrent_binds_of_one_key_store_exactly_one_binding(stack):
    # Given 20 containers binding the same key, all past their "is it bound already?" read and
    # all reaching their write together
    key = stack.exchanges.key("binance", "healthy")
    _meet_before(stack.dynamodb, "transact_write_items", CONTAINERS)
    stack.secretsmanager.atomic()
    # When they write
    answers = _all_at_once(stack, [bind_event(bind_body(key)) for _ in range(CONTAINERS)])
    stack.dynamodb.every.clear()
    # Then exactly one bound it; every other one was told who did, and left nothing behind
    created = [a for a in answers if a.status == 201]
    assert len(created) == 1, [a.status for a in answers]
    winner = created[0].json["binding"]["binding_id"]
    refused = [a for a in answers if a.status != 201]
    assert {a.status for a in refused} == {409}
    assert {a.json["error"]["code"] for a in refused} == {"already_bound"}
    assert {a.json["error"]["binding_id"] for a in refused} == {winner}
    bindings = [i for i in stack.table_items() if i["sk"]["S"].startswith("B#")]
    markers = [i for i in stack.table_items() if i["sk"]["S"].startswith("K#")]
    assert [b["binding_id"]["S"] for b in bindings] == [winner]
    assert [m["binding_id"]["S"] for m in markers] == [winner]
    assert stack.secret_names() == [f"keyhealth/test-stack/{winner}"]  # the losers' secrets were removed


def test_twenty_retries_with_one_idempotency_key_bind_once_and_answer_alike(stack):
    # Given 20 containers sending the same request with the same Idempotency-Key, all reaching
    # the idempotency record's first write together
    key = stack.exchanges.key("bingx", "healthy spot and futures")
    # (the idempotency record's put only: the KMS store puts its credentials item too)
    _meet_before(stack.dynamodb, "put_item", CONTAINERS, table="keyhealth-idempotency")
    headers = {"Idempotency-Key": "retry-0001"}
    answers = _all_at_once(stack, [bind_event(bind_body(key), headers=headers) for _ in range(CONTAINERS)])
    stack.dynamodb.every.clear()
    # Then one binding; the request that ran answered 201 and the others were told it is in
    # progress (409, Retry-After) or given the same answer
    assert {a.status for a in answers} <= {201, 409}, [a.status for a in answers]
    created = [a for a in answers if a.status == 201]
    assert created, [a.status for a in answers]
    assert len({a.text for a in created}) == 1  # identical answers
    in_progress = [a for a in answers if a.status == 409]
    assert all(a.json["error"]["code"] == "request_in_progress" for a in in_progress)
    assert all(a.headers.get("retry-after") == "1" for a in in_progress)
    bindings = [i for i in stack.table_items() if i["sk"]["S"].startswith("B#")]
    assert len(bindings) == 1
    # And a retry after it finished gets the very same answer back, binding nothing more
    again = stack.invoke(bind_function, bind_event(bind_body(key), headers=headers))
    assert (again.status, again.text) == (201, created[0].text)
    assert len([i for i in stack.table_items() if i["sk"]["S"].startswith("B#")]) == 1
