"""`keyhealth webhook ...` and `keyhealth events` against an httpx MockTransport: what each command sends, what it
prints (a signing secret exactly once, and only where it is new), the paging of `events --all`, the exit codes."""

from __future__ import annotations

import json
import logging
from typing import Any

import httpx
import pytest

from keyhealth_cli import api, main

URL = "http://127.0.0.1:3000"
SECRET = "whsec_" + "S3cr3tS1gn1ngK3y" * 3
NEW_SECRET = "whsec_" + "N3wS1gn1ngK3y" * 3
HOOK = "https://platform.example/hooks/keyhealth"
ALL_EVENTS = list(main.WEBHOOK_EVENTS)


class Server:
    """Answers each (method, path) with the next of its queued (status, body) answers; records every request."""

    def __init__(self) -> None:
        self.answers: dict[tuple[str, str], list[tuple[int, Any]]] = {}
        self.seen: list[httpx.Request] = []

    def on(self, method: str, path: str, *answers: tuple[int, Any]) -> None:
        self.answers.setdefault((method, path), []).extend(answers)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        queued = self.answers.get((request.method, request.url.path))
        if not queued:
            return httpx.Response(404, json={"error": {"code": "no_route", "message": "not mocked"}})
        status, body = queued.pop(0)
        return httpx.Response(status) if body is None else httpx.Response(status, json=body)

    def body(self, index: int = -1) -> Any:
        content = self.seen[index].content
        return json.loads(content) if content else None


@pytest.fixture
def server(monkeypatch) -> Server:
    server = Server()
    monkeypatch.delenv("KEYHEALTH_PRINCIPAL", raising=False)
    monkeypatch.setattr(
        main, "ApiClient", lambda *a, **kw: api.ApiClient(*a, **kw, transport=httpx.MockTransport(server))
    )
    return server


def run(*argv: str) -> int:
    return main.main(["--api-url", URL, "--principal", "arn:aws:iam::111111111111:role/platform", *argv])


def webhook(**extra: Any) -> dict[str, Any]:
    return {
        "url": HOOK,
        "events": ALL_EVENTS,
        "created_at": "2025-03-01T10:00:00Z",
        "updated_at": "2025-03-01T10:00:00Z",
        **extra,
    }


def shown(**extra: Any) -> dict[str, Any]:
    health = {
        "failing_since": None,
        "last_error": None,
        "last_delivered_at": "2025-03-02T08:00:00Z",
        "dead_lettered": 0,
        "last_dead_lettered_at": None,
        "previous_secret_expires_at": None,
    }
    return webhook(**{**health, **extra})


def error(status: int, code: str, message: str, **extra: Any) -> tuple[int, Any]:
    return status, {"error": {"code": code, "message": message, **extra}}


def output(capsys) -> str:
    captured = capsys.readouterr()
    return captured.out + captured.err


# ---- webhook set -----------------------------------------------------------------------------------


def test_set_creates_the_webhook_and_shows_its_secret_exactly_once(server, capsys):
    events = ["binding.status_changed", "binding.deleted"]
    server.on("PUT", "/webhook", (200, webhook(events=events, secret=SECRET)))

    code = run("webhook", "set", HOOK, "--events", "binding.status_changed, binding.deleted")

    out = output(capsys)
    assert code == 0
    assert [(r.method, r.url.path, r.url.query) for r in server.seen] == [("PUT", "/webhook", b"")]
    assert server.body() == {"url": HOOK, "events": events}
    assert out.count(SECRET) == 1
    secret_line = next(line for line in out.splitlines() if SECRET in line)
    assert secret_line.split() == ["secret", SECRET]
    assert "shown once" in out
    assert "Keyhealth-Signature" in out
    assert "binding.status_changed, binding.deleted" in out


def test_set_sends_a_repeated_event_type_once(server, capsys):
    server.on("PUT", "/webhook", (200, webhook(events=["binding.deleted"])))

    assert run("webhook", "set", HOOK, "--events", "binding.deleted,binding.deleted") == 0

    assert server.body() == {"url": HOOK, "events": ["binding.deleted"]}


def test_set_without_events_leaves_them_to_the_server(server, capsys):
    server.on("PUT", "/webhook", (200, webhook(secret=SECRET)))

    assert run("webhook", "set", HOOK) == 0

    assert server.body() == {"url": HOOK}
    assert output(capsys).count(SECRET) == 1


def test_set_on_an_existing_webhook_keeps_its_secret_and_prints_none(server, capsys):
    server.on("PUT", "/webhook", (200, webhook(url="https://platform.example/v2/hooks")))

    assert run("webhook", "set", "https://platform.example/v2/hooks") == 0

    out = output(capsys)
    assert "whsec_" not in out
    assert "secret is kept" in out
    assert "https://platform.example/v2/hooks" in out


def test_set_json_prints_the_answer_with_the_secret_once(server, capsys):
    server.on("PUT", "/webhook", (200, webhook(secret=SECRET)))

    assert run("webhook", "set", HOOK, "--json") == 0

    captured = capsys.readouterr()
    assert json.loads(captured.out)["secret"] == SECRET
    assert (captured.out + captured.err).count(SECRET) == 1


@pytest.mark.parametrize("events", ["binding.exploded", "ping", " , "])
def test_set_refuses_an_unknown_or_empty_event_list_before_any_request(server, capsys, events):
    assert run("webhook", "set", HOOK, "--events", events) == 2

    assert server.seen == []
    assert "--events" in capsys.readouterr().err


def test_a_refused_url_prints_the_servers_reason_and_exits_2(server, capsys):
    reason = "the URL must be https and resolve to a public address (10.0.0.5 is private)"
    server.on("PUT", "/webhook", error(400, "invalid_webhook_url", reason, field="url"))

    assert run("webhook", "set", "https://10.0.0.5/hook") == 2

    err = capsys.readouterr().err
    assert "invalid_webhook_url" in err
    assert reason in err


def test_an_unexpected_status_carrying_a_secret_never_prints_it(server, capsys):
    server.on("PUT", "/webhook", (201, webhook(secret=SECRET)))

    assert run("webhook", "set", HOOK) == 2

    assert SECRET not in output(capsys)


# ---- webhook show ----------------------------------------------------------------------------------


def test_show_prints_a_healthy_webhook_without_any_secret(server, capsys):
    server.on("GET", "/webhook", (200, shown(secret=SECRET)))  # a server bug: show must not print it either

    assert run("webhook", "show") == 0

    out = output(capsys)
    assert [(r.method, r.url.path, r.content) for r in server.seen] == [("GET", "/webhook", b"")]
    assert HOOK in out
    assert "delivery     healthy" in out
    assert "dead-letter  none" in out
    assert SECRET not in out
    assert "whsec_" not in out


def test_show_prints_a_failing_webhook_with_its_error_and_dead_letters(server, capsys):
    server.on(
        "GET",
        "/webhook",
        (
            200,
            shown(
                failing_since="2025-03-02T09:15:00Z",
                last_error="HTTP 503 from the endpoint",
                dead_lettered=4,
                last_dead_lettered_at="2025-03-03T09:15:00Z",
                previous_secret_expires_at="2025-03-02T12:00:00Z",
            ),
        ),
    )

    assert run("webhook", "show") == 0

    out = output(capsys)
    assert "FAILING since 2025-03-02T09:15:00Z: HTTP 503 from the endpoint" in out
    assert "4 event(s) given up" in out
    assert "2025-03-03T09:15:00Z" in out
    assert "until 2025-03-02T12:00:00Z" in out


def test_show_json_after_the_subcommand(server, capsys):
    server.on("GET", "/webhook", (200, shown(secret=SECRET)))

    assert run("webhook", "show", "--json") == 0

    out = capsys.readouterr().out
    assert json.loads(out) == shown()


def test_show_without_a_webhook_says_how_to_register_one(server, capsys):
    server.on("GET", "/webhook", error(404, "webhook_not_found", "no webhook is set: PUT /webhook first"))

    assert run("webhook", "show") == 2

    captured = capsys.readouterr()
    assert captured.out == ""
    assert "no webhook is registered: keyhealth webhook set URL" in captured.err


# ---- webhook test, delete, rotate-secret -----------------------------------------------------------


def test_test_sends_a_ping_and_prints_its_event_id(server, capsys):
    server.on("POST", "/webhook/test", (202, {"event_id": "evt_01JNB6Z8Q3T5V7X9Z1B3D5F7H9"}))

    assert run("webhook", "test") == 0

    out = output(capsys)
    assert [(r.method, r.url.path, r.content) for r in server.seen] == [("POST", "/webhook/test", b"")]
    assert "Content-Type" not in server.seen[0].headers
    assert "ping evt_01JNB6Z8Q3T5V7X9Z1B3D5F7H9 is on its way" in out


def test_delete_removes_the_webhook(server, capsys):
    server.on("DELETE", "/webhook", (204, None))

    assert run("webhook", "delete") == 0

    assert [(r.method, r.url.path) for r in server.seen] == [("DELETE", "/webhook")]
    assert "webhook deleted" in capsys.readouterr().out


@pytest.mark.parametrize("action", [("delete",), ("test",), ("rotate-secret",)])
def test_the_actions_on_a_missing_webhook_exit_2(server, capsys, action):
    for method, path in (("DELETE", "/webhook"), ("POST", "/webhook/test"), ("POST", "/webhook/secret")):
        server.on(method, path, error(404, "webhook_not_found", "no webhook is set"))

    assert run("webhook", *action) == 2

    assert "no webhook is registered: keyhealth webhook set URL" in capsys.readouterr().err


def test_rotate_secret_prints_the_new_secret_once_and_when_the_old_one_stops(server, capsys):
    server.on(
        "POST", "/webhook/secret", (200, {"secret": NEW_SECRET, "previous_secret_expires_at": "2025-03-04T10:00:00Z"})
    )

    assert run("webhook", "rotate-secret") == 0

    out = output(capsys)
    assert [(r.method, r.url.path, r.content) for r in server.seen] == [("POST", "/webhook/secret", b"")]
    assert out.count(NEW_SECRET) == 1
    assert "shown once" in out
    assert "second v1= signature, until 2025-03-04T10:00:00Z" in out


def test_no_secret_reaches_a_log_even_at_debug(server, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    server.on("PUT", "/webhook", (200, webhook(secret=SECRET)))
    server.on("POST", "/webhook/secret", (200, {"secret": NEW_SECRET, "previous_secret_expires_at": "x"}))

    assert run("webhook", "set", HOOK) == 0
    assert run("webhook", "rotate-secret") == 0

    assert SECRET not in caplog.text
    assert NEW_SECRET not in caplog.text
    assert all(b"whsec_" not in r.content and "whsec_" not in str(r.url) for r in server.seen)
    assert output(capsys).count("whsec_") == 2  # one line per command


@pytest.mark.parametrize(("status", "code"), [(500, 3), (503, 3), (409, 2), (400, 2)])
def test_api_errors_end_with_the_documented_exit_code(server, capsys, status, code):
    server.on("GET", "/webhook", error(status, "some_error", "it went wrong"))

    assert run("webhook", "show") == code

    assert f"{status} some_error: it went wrong" in capsys.readouterr().err


def test_an_unreachable_api_exits_3(monkeypatch, capsys):
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    monkeypatch.setattr(
        main, "ApiClient", lambda *a, **kw: api.ApiClient(*a, **kw, transport=httpx.MockTransport(refuse))
    )

    assert run("webhook", "show") == 3

    assert "cannot reach the API" in capsys.readouterr().err


# ---- events ----------------------------------------------------------------------------------------


def event(n: int, kind: str = "ping", **fields: Any) -> dict[str, Any]:
    return {
        "id": f"evt_01JNB6Z8Q3T5V7X9Z1B3D5F7{n:02d}",
        "type": kind,
        "created_at": f"2025-03-0{n}T10:00:00Z",
        **fields,
    }


BINDING = {"binding_id": "bnd_1", "user_id": "u-42", "exchange": "binance", "api_key_masked": "abcd...wxyz"}


def test_events_prints_a_table_with_a_summary_per_type_and_the_last_id(server, capsys):
    items = [
        event(1, "binding.status_changed", previous_status="healthy", status="failing", findings=[], **BINDING),
        event(2, "binding.trading_permission_expiring", expires_at="2025-03-09T00:00:00Z", days_left=7, **BINDING),
        event(3, "binding.unreachable", status="unknown", unknown_streak=3, **BINDING),
        event(4, "binding.deleted", deleted_at="2025-03-04T10:00:00Z", **BINDING),
        event(5, "ping", message="A test event sent by POST /webhook/test."),
    ]
    server.on("GET", "/events", (200, {"items": items, "has_more": False}))

    assert run("events", "--after", "evt_01JNB6Z8Q3T5V7X9Z1B3D5F700", "--limit", "5") == 0

    out = capsys.readouterr().out
    assert [(r.method, r.url.path) for r in server.seen] == [("GET", "/events")]
    assert server.seen[0].url.params == httpx.QueryParams({"after": "evt_01JNB6Z8Q3T5V7X9Z1B3D5F700", "limit": "5"})
    lines = out.splitlines()
    assert lines[0].split() == ["id", "created_at", "type", "binding_id", "summary"]
    assert "healthy -> failing" in lines[2]
    assert "bnd_1" in lines[2]
    assert "7 days left" in lines[3]
    assert "unknown 3 checks in a row" in lines[4]
    assert "unbound" in lines[5]
    assert "test event" in lines[6]
    assert f"last event: {items[-1]['id']}  (resume: keyhealth events --after {items[-1]['id']})" in out
    assert "more:" not in out


def test_events_without_options_sends_no_query_and_hints_at_more(server, capsys):
    server.on("GET", "/events", (200, {"items": [event(1)], "has_more": True}))

    assert run("events") == 0

    assert server.seen[0].url.query == b""
    out = capsys.readouterr().out
    assert f"last event: {event(1)['id']}  (more: keyhealth events --after {event(1)['id']}, or --all)" in out


def test_events_all_follows_has_more_from_the_last_id_of_each_page(server, capsys):
    server.on(
        "GET",
        "/events",
        (200, {"items": [event(1), event(2)], "has_more": True}),
        (200, {"items": [event(3), event(4)], "has_more": True}),
        (200, {"items": [event(5)], "has_more": False}),
    )

    assert run("events", "--all", "--limit", "2", "--json") == 0

    assert [dict(r.url.params) for r in server.seen] == [
        {"limit": "2"},
        {"after": event(2)["id"], "limit": "2"},
        {"after": event(4)["id"], "limit": "2"},
    ]
    printed = json.loads(capsys.readouterr().out)
    assert [e["id"] for e in printed["items"]] == [event(n)["id"] for n in range(1, 6)]
    assert printed["has_more"] is False
    assert printed["last_event_id"] == event(5)["id"]


def test_events_all_stops_on_an_empty_page(server, capsys):
    server.on("GET", "/events", (200, {"items": [], "has_more": True}))

    assert run("events", "--all", "--after", "evt_01JNB6Z8Q3T5V7X9Z1B3D5F799") == 0

    assert len(server.seen) == 1
    out = capsys.readouterr().out
    assert "no events after evt_01JNB6Z8Q3T5V7X9Z1B3D5F799" in out
    assert "last event: evt_01JNB6Z8Q3T5V7X9Z1B3D5F799" in out


def test_events_json_without_all_is_the_page_with_the_last_id(server, capsys):
    items = [event(1, "binding.status_changed", previous_status="failing", status="healthy", findings=[])]
    server.on("GET", "/events", (200, {"items": items, "has_more": False}))

    assert run("--json", "events") == 0

    assert json.loads(capsys.readouterr().out) == {"items": items, "has_more": False, "last_event_id": items[0]["id"]}


@pytest.mark.parametrize(("limit", "code", "requests"), [("0", 2, 0), ("501", 2, 0), ("500", 0, 1), ("1", 0, 1)])
def test_events_limit_is_1_to_500(server, capsys, limit, code, requests):
    server.on("GET", "/events", (200, {"items": [], "has_more": False}))

    assert run("events", "--limit", limit) == code

    assert len(server.seen) == requests


def test_list_limit_is_still_1_to_100(server, capsys):
    assert run("list", "--limit", "101") == 2

    assert server.seen == []
    assert "between 1 and 100" in capsys.readouterr().err


def test_a_bad_after_is_the_servers_400(server, capsys):
    server.on("GET", "/events", error(400, "invalid_request", "after: not an event id", field="after"))

    assert run("events", "--after", "nope") == 2

    assert "after: not an event id" in capsys.readouterr().err
