"""Posts Block Kit payloads to a Slack incoming webhook, with bounded retries (httpx, no AWS).

Slack answers 200 `ok`; a 4xx other than 429 is a refusal with its reason as plain text (`invalid_blocks`,
`no_service`, `channel_is_archived`...) and retrying cannot help; 429 says how long to wait in `Retry-After`;
5xx and transport failures are worth retrying (https://api.slack.com/messaging/webhooks#handling_errors).
A retry after a timeout can post the same message twice: a duplicate is better than a lost alert.

The webhook URL is a credential (anyone holding it can post to the channel): it travels as a `Secret`,
is revealed only for the request, and httpx's own request log line is scrubbed of it.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from keyhealth.domain.credentials import Secret
from keyhealth.domain.http import retry_after_seconds
from keyhealth.notify.ports import Delivery

ERROR_TEXT_LIMIT = 200  # Slack's reasons are short words; anything longer is clipped


class WebhookSecretInvalid(ValueError):
    """The secret does not hold a webhook URL. The message never contains the secret's value."""


def webhook_url_from_secret(secret_string: str) -> Secret:
    """The secret holds the URL itself or JSON `{"url": ...}`."""
    text = secret_string.strip()
    if text.startswith("{"):
        try:
            text = str(json.loads(text).get("url") or "").strip()
        except (ValueError, AttributeError):
            raise WebhookSecretInvalid('the Slack webhook secret is JSON without a "url" string') from None
    try:
        url = httpx.URL(text)
    except httpx.InvalidURL:
        raise WebhookSecretInvalid("the Slack webhook secret does not hold a valid URL") from None
    if url.scheme not in ("https", "http") or not url.host:
        raise WebhookSecretInvalid('the Slack webhook secret must hold an https URL or JSON {"url": ...}')
    _hide_in_logs(text, str(url), url.path)
    return Secret(text)


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    base_delay: float = 1.0  # first backoff ceiling; doubles per retry
    max_delay: float = 8.0
    retry_after_cap: float = 15.0  # never wait longer than this on one 429, whatever Slack says
    request_timeout: float = 5.0
    min_attempt_time: float = 1.0  # no attempt starts with less time than this before the deadline

    def backoff(self, retry: int, jitter: float) -> float:
        """Exponential with "equal jitter": half the ceiling plus a random share of the other half."""
        ceiling = min(self.max_delay, self.base_delay * 2 ** (retry - 1))
        return ceiling / 2 + jitter * ceiling / 2


class SlackWebhook:
    """One instance per container: it holds the httpx client (built once, ~23 ms)."""

    def __init__(
        self,
        client: httpx.Client,
        policy: RetryPolicy | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        jitter: Callable[[], float] = random.random,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self.policy = policy or RetryPolicy()
        self._sleep = sleep
        self._clock = clock  # for deadlines and waits
        self._jitter = jitter
        self._wall_clock = wall_clock  # seconds since the epoch: what a Retry-After date is read against

    def deadline_in(self, seconds: float) -> float:
        """A deadline on this poster's clock, `seconds` from now."""
        return self._clock() + seconds

    def post(self, url: Secret, payload: dict[str, Any], *, deadline: float = math.inf) -> Delivery:
        policy = self.policy
        content = json.dumps(payload, separators=(",", ":")).encode()
        waits: list[float] = []
        status: int | None = None
        error: str | None = None
        for attempt in range(1, policy.max_attempts + 1):
            left = deadline - self._clock()
            if left < policy.min_attempt_time:
                return Delivery(False, attempt - 1, "deadline", status, error or "no time left", tuple(waits))
            retry_after: float | None = None
            try:
                response = self._client.post(
                    url.reveal(),
                    content=content,
                    headers={"Content-Type": "application/json"},
                    timeout=min(policy.request_timeout, left),
                )
            except httpx.TransportError as failure:  # connection, timeout, protocol: worth another try
                status, error = None, type(failure).__name__
            except (httpx.HTTPError, httpx.InvalidURL) as failure:  # str(failure) could echo the URL
                return Delivery(False, attempt, "refused", None, type(failure).__name__, tuple(waits))
            else:
                status, error = response.status_code, _error_text(response)
                if response.is_success:
                    return Delivery(True, attempt, "delivered", status, None, tuple(waits))
                if status == 429:
                    retry_after = retry_after_seconds(response.headers.get("Retry-After"), self._wall_clock())
                elif status < 500:
                    return Delivery(False, attempt, "refused", status, error, tuple(waits))
            if attempt == policy.max_attempts:
                break
            wait = (
                min(retry_after, policy.retry_after_cap)
                if retry_after is not None
                else policy.backoff(attempt, self._jitter())
            )
            if self._clock() + wait + policy.min_attempt_time > deadline:
                return Delivery(False, attempt, "deadline", status, error, tuple(waits))
            waits.append(wait)
            self._sleep(wait)
        return Delivery(False, policy.max_attempts, "retries_exhausted", status, error, tuple(waits))


def new_slack_client(timeout: float = 5.0) -> httpx.Client:
    return httpx.Client(
        timeout=httpx.Timeout(timeout, connect=min(timeout, 3.0)),
        headers={"User-Agent": "keyhealth-slack-notifier/1.0"},
        follow_redirects=False,  # a redirect would carry the payload somewhere Slack did not say
    )


def _error_text(response: httpx.Response) -> str | None:
    text = response.text.strip()
    if not text:
        return None
    return text if len(text) <= ERROR_TEXT_LIMIT else text[: ERROR_TEXT_LIMIT - 1] + "…"


# --- keeping the URL out of logs ------------------------------------------------------------------------------

_hidden_urls: set[str] = set()


class _HideWebhookUrls(logging.Filter):
    """httpx logs `HTTP Request: POST <url> ...` at INFO for every request; the URL is a credential."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not _hidden_urls:
            return True
        message = record.getMessage()
        scrubbed = message
        for url in sorted(_hidden_urls, key=len, reverse=True):
            scrubbed = scrubbed.replace(url, "<slack webhook>")
        if scrubbed != message:
            record.msg, record.args = scrubbed, ()
        return True


def _hide_in_logs(*forms: str) -> None:
    """Every spelling of the URL a log line could carry (as stored, as httpx prints it, its path)."""
    _hidden_urls.update(form for form in forms if len(form) > 8)


# httpx logs through this one logger (httpcore's loggers name hosts and methods, never paths).
logging.getLogger("httpx").addFilter(_HideWebhookUrls())
