"""GET /bindings/{id}, GET /bindings and GET /egress-ips through the real handlers."""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from datetime import date

import pytest

from functions.bind import app as bind_function
from functions.read import app as read_function
from keyhealth import wiring
from keyhealth.domain.ids import new_binding_id
from keyhealth.domain.model import PlannedEgressIp
from tests.conftest import EGRESS_IP, PLANNED_EGRESS, PLANNED_EGRESS_IP, SECOND_EGRESS_IP
from tests.support.api import bind_body, bind_event, get_event, list_event
from tests.support.events import PLATFORM_A, PLATFORM_A_OTHER_SESSION, PLATFORM_B, api_event

# The contract's Binding, plus the exchange account id the API also documents.
BINDING_FIELDS = {
    "binding_id",
    "user_id",
    "exchange",
    "label",
    "key_type",
    "api_key_masked",
    "scopes",
    "status",
    "account_id",
    "created_at",
    "updated_at",
    "last_checked_at",
    "last_report",
}

# Bound in this order, so newest first is the reverse. (exchange, demo key label, user_id, status)
KEYS = [
    ("binance", "healthy", "u-alice", "healthy"),
    ("bitget", "healthy", "u-bob", "healthy"),
    ("bingx", "healthy spot and futures", "u-alice", "healthy"),
    ("binance", "withdraw-enabled", "u-bob", "degraded"),
    ("bitget", "no-ip-restriction", "u-alice", "degraded"),
    ("bingx", "withdraw enabled", "u-alice", "degraded"),
    ("bitget", "uta-healthy", "u-bob", "healthy"),
]


@pytest.fixture
def bound(stack) -> list[dict]:
    """The bindings of KEYS, as bind answered them, oldest first."""
    bindings = []
    for exchange, label, user_id, status in KEYS:
        key = stack.exchanges.key(exchange, label)
        response = stack.invoke(bind_function, bind_event(bind_body(key, user_id=user_id, label=label)))
        assert response.status == 201, response
        assert response.json["binding"]["status"] == status
        bindings.append(response.json["binding"])
    return bindings


def ids(bindings: list[dict]) -> list[str]:
    return [b["binding_id"] for b in bindings]


def newest_first(bound: list[dict], **expected: str) -> list[str]:
    return [b["binding_id"] for b in reversed(bound) if all(b[name] == value for name, value in expected.items())]


def list_all(stack, query: dict[str, str], principal: str | None = None) -> tuple[list[list[str]], list]:
    """Walk every page; return the ids per page and the cursors answered."""
    pages, cursors = [], []
    cursor = None
    for _ in range(20):  # more pages than any test needs: a cursor loop fails instead of hanging
        page_query = {**query, **({"cursor": cursor} if cursor else {})}
        kwargs = {"principal": principal} if principal else {}
        response = stack.invoke(read_function, list_event(page_query, **kwargs))
        assert response.status == 200, response
        pages.append(ids(response.json["items"]))
        cursor = response.json["next_cursor"]
        cursors.append(cursor)
        if cursor is None:
            return pages, cursors
    raise AssertionError(f"pagination did not end: {pages}")


# Each test binds KEYS again (about half a second), so related cases share one test and
# name themselves in their assertion messages.


def test_a_binding_is_read_with_its_last_report(stack, bound):
    created = bound[3]
    response = stack.invoke(read_function, get_event(created["binding_id"]))

    assert response.status == 200, response
    assert response.headers["content-type"] == "application/json"
    binding = response.json
    assert set(binding) == BINDING_FIELDS
    assert binding == created
    key = stack.exchanges.key("binance", "withdraw-enabled")
    assert binding["user_id"] == "u-bob"
    assert binding["exchange"] == "binance"
    assert binding["label"] == "withdraw-enabled"
    assert binding["api_key_masked"] == f"{key.api_key[:4]}...{key.api_key[-4:]}"
    assert binding["scopes"] == ["spot"]
    assert binding["status"] == "degraded"
    assert binding["created_at"].endswith("Z")
    report = binding["last_report"]
    assert report["status"] == "degraded"
    assert report["egress_ip"] == "127.0.0.2"
    assert report["permissions"]["withdraw"] is True
    assert [f["code"] for f in report["findings"]] == ["withdraw_enabled"]
    assert binding["last_checked_at"] == report["checked_at"]
    assert key.api_key not in response.text
    assert key.api_secret not in response.text

    # Every session of one role is one tenant.
    again = stack.invoke(read_function, get_event(created["binding_id"], principal=PLATFORM_A_OTHER_SESSION))
    assert again.status == 200
    assert again.json == binding


def test_unknown_malformed_and_other_tenants_ids_are_the_same_404(stack, bound):
    never_created = new_binding_id()
    cases = {
        "never created": (never_created, PLATFORM_A),
        "too short": ("bnd_01J", PLATFORM_A),
        "not an id": ("not-a-binding-id", PLATFORM_A),
        "U is no Crockford digit": ("bnd_01JXXXXXXXXXXXXXXXXXXXXXXU", PLATFORM_A),
        "another tenant's": (bound[0]["binding_id"], PLATFORM_B),
    }
    for case, (binding_id, principal) in cases.items():
        response = stack.invoke(read_function, get_event(binding_id, principal=principal))
        assert response.status == 404, (case, response)
        # Another tenant's binding answers exactly as one that does not exist.
        assert response.json == {"error": {"code": "binding_not_found", "message": "no such binding"}}, case


def test_the_list_is_every_binding_newest_first_and_nothing_else(stack, bound):
    response = stack.invoke(read_function, list_event())

    assert response.status == 200, response
    assert response.json["next_cursor"] is None
    items = response.json["items"]
    assert ids(items) == newest_first(bound)
    assert items == list(reversed(bound))
    assert all(set(item) == BINDING_FIELDS for item in items)
    # The table also holds api-key and account markers; they are never listed.
    kinds = {item["sk"]["S"][:2] for item in stack.table_items()}
    assert {"B#", "K#", "A#"} <= kinds


FILTERS = [
    {"user_id": "u-alice"},
    {"user_id": "u-bob"},
    {"exchange": "bitget"},
    {"exchange": "bingx"},
    {"status": "degraded"},
    {"status": "healthy"},
    {"user_id": "u-alice", "exchange": "bitget"},
    {"user_id": "u-alice", "status": "healthy"},
    {"exchange": "binance", "status": "degraded"},
    {"user_id": "u-bob", "exchange": "binance", "status": "degraded"},
]


def test_filters_alone_and_combined(stack, bound):
    for query in FILTERS:
        response = stack.invoke(read_function, list_event(query))
        assert response.status == 200, (query, response)
        expected = newest_first(bound, **query)
        assert expected, query  # every query here matches something, and not everything
        assert len(expected) < len(bound), query
        assert ids(response.json["items"]) == expected, query
        assert response.json["next_cursor"] is None, query

    nobody = stack.invoke(read_function, list_event({"user_id": "u-carol"}))
    assert nobody.status == 200
    assert nobody.json == {"items": [], "next_cursor": None}


def test_pages_of_two_walk_every_binding_exactly_once(stack, bound):
    pages, cursors = list_all(stack, {"limit": "2"})

    assert pages == [newest_first(bound)[i : i + 2] for i in range(0, len(bound), 2)]
    assert [len(p) for p in pages] == [2, 2, 2, 1]
    assert all(cursors[:-1])
    assert cursors[-1] is None
    assert len(set(cursors[:-1])) == len(cursors) - 1

    # A page that ends exactly with the last binding says so: no cursor to an empty page.
    whole, _ = list_all(stack, {"limit": str(len(bound))})
    assert whole == [newest_first(bound)]


def test_pagination_combined_with_filters(stack, bound):
    for query in (
        {"user_id": "u-alice", "limit": "2"},
        {"exchange": "bitget", "limit": "2"},
        {"status": "healthy", "limit": "1"},
        {"user_id": "u-bob", "status": "healthy", "limit": "1"},
    ):
        limit = int(query["limit"])
        filters = {k: v for k, v in query.items() if k != "limit"}
        pages, cursors = list_all(stack, query)
        expected = newest_first(bound, **filters)
        assert len(expected) > limit, query  # more than one page
        assert [i for page in pages for i in page] == expected, query
        assert all(0 < len(page) <= limit for page in pages), (query, pages)
        assert cursors[-1] is None, query


def test_another_tenant_sees_none_of_them(stack, bound):
    for query in ({}, {"user_id": "u-alice"}, {"exchange": "binance"}, {"status": "healthy"}):
        response = stack.invoke(read_function, list_event(query, principal=PLATFORM_B))
        assert response.status == 200, query
        assert response.json == {"items": [], "next_cursor": None}, query

    # Nor by replaying a cursor another tenant was given.
    cursor = stack.invoke(read_function, list_event({"limit": "2"})).json["next_cursor"]
    assert cursor
    stolen = stack.invoke(read_function, list_event({"limit": "2", "cursor": cursor}, principal=PLATFORM_B))
    assert stolen.status == 200
    assert stolen.json == {"items": [], "next_cursor": None}


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def test_a_cursor_we_did_not_issue_is_400_invalid_cursor(stack):
    for cursor in (
        "not a cursor",
        "!!!!",
        _b64("not json"),
        _b64(json.dumps({"before": "bnd_01JAAAAAAAAAAAAAAAAAAAAAAA"})),
        _b64(json.dumps({"after": "not-a-binding-id"})),
        _b64(json.dumps({"after": 42})),
        _b64(json.dumps(["after"])),
    ):
        response = stack.invoke(read_function, list_event({"cursor": cursor}))
        assert response.status == 400, (cursor, response)
        assert response.json["error"]["code"] == "invalid_cursor", cursor


def test_bad_query_parameters_are_400_invalid_request(stack):
    for query in (
        {"limit": "0"},
        {"limit": "101"},
        {"limit": "-1"},
        {"limit": "abc"},
        {"user_id": "u 42"},
        {"user_id": "u/42"},
        {"user_id": "u-42;drop"},
        {"user_id": "x" * 129},
        {"exchange": "kraken"},
        {"status": "broken"},
    ):
        response = stack.invoke(read_function, list_event(query))
        assert response.status == 400, (query, response)
        assert response.json["error"]["code"] == "invalid_request", query
        assert next(iter(query)) in response.json["error"]["message"], (query, response)

    for limit in ("1", "100"):
        assert stack.invoke(read_function, list_event({"limit": limit})).status == 200, limit


def test_egress_ips_are_the_configured_addresses(stack):
    response = stack.invoke(read_function, api_event("GET", "/egress-ips"))
    assert response.status == 200, response
    assert response.json == {"egress_ips": ["127.0.0.2"], "planned": [], "canary": {}}  # the canary has not run


def with_settings(stack, **changes) -> None:
    """Run the handlers on the stack's container rebuilt with these settings (as a deploy with other parameters)."""
    current = wiring.container()
    wiring.use(wiring.Container(replace(current.environment, settings=replace(current.settings, **changes))))


def test_egress_ips_list_every_address_and_the_planned_ones_with_their_day(stack):
    with_settings(
        stack,
        egress_ips=(EGRESS_IP, SECOND_EGRESS_IP),
        planned_egress_ips=(PLANNED_EGRESS, PlannedEgressIp("2001:db8::20", date(2027, 2, 1))),
    )
    response = stack.invoke(read_function, api_event("GET", "/egress-ips"))
    assert response.status == 200, response
    assert response.json == {
        "egress_ips": [EGRESS_IP, SECOND_EGRESS_IP],
        "planned": [
            {"ip": PLANNED_EGRESS_IP, "effective_at": "2027-01-15"},
            {"ip": "2001:db8::20", "effective_at": "2027-02-01"},
        ],
        "canary": {},
    }


def test_a_bound_key_lacking_a_planned_ip_is_stored_degraded_with_the_ip_and_the_day(stack):
    with_settings(stack, planned_egress_ips=(PLANNED_EGRESS,))
    key = stack.exchanges.key("bitget", "healthy")  # whitelists the egress IP only
    response = stack.invoke(bind_function, bind_event(bind_body(key)))
    assert response.status == 201, response
    report = response.json["report"]
    assert (report["status"], [f["code"] for f in report["findings"]]) == ("degraded", ["planned_ip_missing"])
    [finding] = report["findings"]
    assert finding["severity"] == "warning"
    assert finding["audience"] == "user"
    assert finding["remedy"].startswith(
        f"Before 2027-01-15, add {PLANNED_EGRESS_IP} to the key's IP whitelist on Bitget"
    )
