"""SSRF: a webhook URL that points inside (loopback, private, link-local such as the instance metadata
address, or a name resolving there) is refused at PUT /webhook and again at delivery; redirects are never
followed. In deployed mode (the stack's default); the local stack's loopback exception is tested too."""

from __future__ import annotations

from dataclasses import replace

import pytest

from keyhealth import wiring
from tests.support.webhooks import start_receiver

#: The names the tests resolve, as DNS would answer (deployed mode asks the resolver for every name).
DNS = {
    "internal.example.test": ["10.0.0.5"],
    "metadata.example.test": ["169.254.169.254"],
    "mixed.example.test": ["93.184.216.34", "192.168.1.10"],
    "hooks.example.test": ["93.184.216.34"],
}


def deployed(hooks, dns=None) -> None:
    """The handlers on the stack's container as deployed: https only, public addresses only."""
    current = wiring.container()
    answers = dns or DNS

    def resolve(host: str, port: int) -> list[str]:
        if host not in answers:
            raise OSError("no such name")
        found = answers[host]
        return list(found() if callable(found) else found)

    settings = replace(current.settings, webhook_allow_loopback_http=False)
    wiring.use(wiring.Container(replace(current.environment, settings=settings, resolve_host=resolve)))


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/hook",
        "https://10.0.0.1/hook",
        "https://169.254.169.254/latest/meta-data/",
        "https://[::1]/hook",
        "https://[::ffff:127.0.0.1]/hook",
        "https://internal.example.test/hook",  # resolves to a private address
        "https://metadata.example.test/hook",  # resolves to the metadata address
        "https://mixed.example.test/hook",  # one of its addresses is private
        "https://nowhere.example.test/hook",  # does not resolve
        "http://hooks.example.test/hook",  # not https
        "https://user:pass@hooks.example.test/hook",
    ],
)
def test_put_webhook_refuses_urls_that_point_inside_and_stores_nothing(hooks, url):
    deployed(hooks)
    answer = hooks.call("PUT", "/webhook", body={"url": url})
    assert answer.status == 400, answer
    assert answer.json["error"]["code"] == "invalid_webhook_url"
    assert answer.json["error"]["field"] == "url"
    assert "/hook" not in answer.json["error"]["message"]  # the path (and a token in it) is not echoed
    assert hooks.call("GET", "/webhook").status == 404


def test_a_public_https_url_is_accepted_in_deployed_mode(hooks):
    deployed(hooks)
    answer = hooks.call("PUT", "/webhook", body={"url": "https://hooks.example.test/hook"})
    assert answer.status == 200, answer
    assert answer.json["secret"].startswith("whsec_")


def test_a_name_that_resolves_inside_at_delivery_is_refused_then_dns_rebinding(hooks):
    answers = iter([["93.184.216.34"], ["127.0.0.1"]])
    deployed(hooks, {"rebind.example.test": lambda: next(answers)})
    assert hooks.call("PUT", "/webhook", body={"url": "https://rebind.example.test/hook"}).status == 200
    hooks.call("POST", "/webhook/test")
    hooks.deliveries.round()
    webhook = hooks.call("GET", "/webhook").json
    assert webhook["last_error"].startswith("refused: ")
    assert "127.0.0.1" in webhook["last_error"]
    assert webhook["failing_since"] is not None
    assert hooks.receiver.requests == []


def test_the_local_stack_accepts_http_on_loopback_only(hooks):
    assert hooks.call("PUT", "/webhook", body={"url": hooks.receiver.url}).status == 200
    for url in ("http://10.0.0.1/hook", "http://169.254.169.254/latest/meta-data/", "http://hooks.example.test/"):
        answer = hooks.call("PUT", "/webhook", body={"url": url})
        assert (answer.status, answer.json["error"]["code"]) == (400, "invalid_webhook_url"), url
    deployed(hooks)
    answer = hooks.call("PUT", "/webhook", body={"url": hooks.receiver.url})
    assert (answer.status, answer.json["error"]["code"]) == (400, "invalid_webhook_url")


def test_a_redirect_is_not_followed_even_to_a_receiver_that_would_answer(hooks, monkeypatch):
    target = start_receiver()  # where the redirect points: it must never be asked
    try:
        receiver = hooks.receiver
        receiver.redirect_to = target.url + "/stolen"
        receiver.script = [302]
        hooks.register()
        hooks.call("POST", "/webhook/test")
        hooks.deliveries.round()
        assert len(receiver.requests) == 1
        assert target.requests == []
        assert hooks.call("GET", "/webhook").json["last_error"] == "redirect 302 not followed"
    finally:
        target.server.stop()
