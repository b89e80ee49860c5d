"""The webhook poster's retry rules, Retry-After, deadlines and the webhook secret's forms (httpx.MockTransport)."""

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from keyhealth.adapters.slack_webhook import RetryPolicy, SlackWebhook, WebhookSecretInvalid, webhook_url_from_secret
from keyhealth.config import ConfigError, Settings
from keyhealth.domain.credentials import Secret
from tests.support.clock import FakeClock

URL = Secret("https://hooks.slack.com/services/T000/B000/secretsecretsecret")
NOW = datetime(2026, 11, 21, 2, 0, tzinfo=UTC)


def poster(*answers, policy: RetryPolicy | None = None, jitter: float = 0.5, wall_clock: float | None = None):
    """A poster whose transport plays `answers` in order: a Response, or an exception to raise."""
    script = list(answers)
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = script.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    clock = FakeClock(0.0)
    client = httpx.Client(transport=httpx.MockTransport(handle))
    webhook = SlackWebhook(
        client,
        policy,
        sleep=clock.sleep,
        clock=clock,
        jitter=lambda: jitter,
        wall_clock=lambda: NOW.timestamp() if wall_clock is None else wall_clock,
    )
    return webhook, clock, seen


def test_ok_is_delivered_once():
    webhook, clock, seen = poster(httpx.Response(200, text="ok"))
    delivery = webhook.post(URL, {"text": "hi", "blocks": []})
    assert (delivery.delivered, delivery.attempts, delivery.reason, clock.sleeps) == (True, 1, "delivered", [])
    assert seen[0].headers["Content-Type"] == "application/json"


def test_a_429_without_retry_after_backs_off():
    webhook, clock, _ = poster(httpx.Response(429), httpx.Response(200, text="ok"))
    assert webhook.post(URL, {}).delivered
    assert clock.sleeps == [0.75]


def test_timeouts_and_connection_errors_are_retried():
    webhook, clock, _ = poster(httpx.ConnectTimeout("t"), httpx.ConnectError("c"), httpx.Response(200, text="ok"))
    delivery = webhook.post(URL, {})
    assert (delivery.delivered, delivery.attempts) == (True, 3)
    assert clock.sleeps == [0.75, 1.5]


def test_the_last_transport_failure_is_named_without_its_text():
    webhook, _, _ = poster(*[httpx.ReadTimeout(f"timed out reading {URL.reveal()}")] * 5)
    delivery = webhook.post(URL, {})
    assert (delivery.reason, delivery.status_code, delivery.error) == ("retries_exhausted", None, "ReadTimeout")


@pytest.mark.parametrize("status", [400, 403, 404, 410, 302])
def test_other_answers_are_refusals_and_not_retried(status):
    webhook, clock, seen = poster(httpx.Response(status, text="no_service"))
    delivery = webhook.post(URL, {})
    assert (delivery.delivered, delivery.reason, delivery.status_code, len(seen)) == (False, "refused", status, 1)
    assert delivery.webhook_gone is (status in (403, 404, 410))
    assert clock.sleeps == []


def test_no_attempt_starts_past_the_deadline():
    webhook, _, seen = poster()
    delivery = webhook.post(URL, {}, deadline=webhook.deadline_in(0.5))
    assert (delivery.reason, delivery.attempts, seen) == ("deadline", 0, [])


def test_a_backoff_that_would_overrun_the_deadline_is_not_slept():
    webhook, clock, seen = poster(httpx.Response(502), httpx.Response(502))
    delivery = webhook.post(URL, {}, deadline=webhook.deadline_in(1.5))
    assert (delivery.reason, delivery.status_code, len(seen), clock.sleeps) == ("deadline", 502, 1, [])


@pytest.mark.parametrize(("jitter", "retry", "wait"), [(0.0, 1, 0.5), (1.0, 1, 1.0), (0.0, 3, 2.0), (1.0, 10, 8.0)])
def test_backoff_is_exponential_with_jitter_and_capped(jitter, retry, wait):
    assert RetryPolicy().backoff(retry, jitter) == wait


@pytest.mark.parametrize(
    ("header", "waited"),
    [
        ("3", 3.0),
        (" 1.5 ", 1.5),
        ("-4", 0.0),
        (format_datetime(NOW + timedelta(seconds=10), usegmt=True), 10.0),  # read against the wall clock
        ("120", 15.0),  # capped
        ("soon", 0.75),  # unreadable: the back-off
        ("nan", 0.75),  # not a number of seconds: the back-off
        (None, 0.75),  # none: the back-off
    ],
)
def test_a_429_waits_what_retry_after_says_seconds_or_an_http_date(header, waited):
    # Given Slack rate-limits the first post, saying how long to wait (or not)
    headers = {} if header is None else {"Retry-After": header}
    webhook, clock, seen = poster(httpx.Response(429, headers=headers), httpx.Response(200, text="ok"))
    # When
    delivery = webhook.post(URL, {})
    # Then
    assert (delivery.delivered, delivery.attempts, len(seen)) == (True, 2, 2)
    assert clock.sleeps == [waited]


@pytest.mark.parametrize(
    "secret",
    [URL.reveal(), f"  {URL.reveal()}\n", f'{{"url": "{URL.reveal()}"}}'],
    ids=["url", "padded url", "json"],
)
def test_the_webhook_secret_holds_the_url_or_json(secret):
    assert webhook_url_from_secret(secret) == URL


@pytest.mark.parametrize(
    "secret",
    ["", "hooks.slack.com/services/T/B/secretsecret", "ftp://x/secretsecret", '{"uri": "x"}', "{not json secretsecret"],
)
def test_a_wrong_webhook_secret_is_refused_without_echoing_it(secret):
    with pytest.raises(WebhookSecretInvalid) as raised:
        webhook_url_from_secret(secret)
    assert "secretsecret" not in str(raised.value)


def test_slack_settings_come_from_the_environment():
    arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:slack-AbCdEf"
    queue = "https://sqs.eu-west-1.amazonaws.com/123456789012/keyhealth-slack-dlq"
    settings = Settings.from_env(
        {
            "SLACK_WEBHOOK_SECRET_ARN": arn,
            "SLACK_DLQ_URL": queue,
            "SLACK_MAX_ATTEMPTS": "3",
            "SLACK_RETRY_AFTER_CAP": "9",
        }
    )
    assert (settings.slack_webhook_secret_arn, settings.slack_dlq_url) == (arn, queue)
    assert (settings.slack_max_attempts, settings.slack_retry_after_cap) == (3, 9.0)
    assert Settings.from_env({}).slack_webhook_secret_arn == ""  # no Slack


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"SLACK_WEBHOOK_SECRET_ARN": "slack-webhook"}, "SLACK_WEBHOOK_SECRET_ARN"),
        ({"SLACK_DLQ_URL": "keyhealth-slack-dlq"}, "SLACK_DLQ_URL"),
        ({"SLACK_MAX_ATTEMPTS": "0"}, "SLACK_MAX_ATTEMPTS"),
        ({"SLACK_RETRY_AFTER_CAP": "forever"}, "SLACK_RETRY_AFTER_CAP"),
    ],
)
def test_wrong_slack_settings_name_the_variable(env, named):
    with pytest.raises(ConfigError, match=named):
        Settings.from_env(env)
