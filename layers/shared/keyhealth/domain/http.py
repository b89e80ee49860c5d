"""HTTP as plain values: what an exchange adapter or a webhook client sends and receives.

The exchange modules build `HttpRequest`s and read `HttpResponse`s; an `HttpTransport`
(keyhealth.adapters.http_transport, on httpx) carries them. So an exchange module imports
no HTTP library and can be read, type-checked and imported (for its spec) anywhere.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, Protocol
from urllib.parse import urlsplit


@dataclass(frozen=True)
class HttpRequest:
    method: str
    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes | None = None

    @property
    def path(self) -> str:
        return urlsplit(self.url).path


@dataclass(frozen=True)
class HttpResponse:
    status_code: int
    headers: Mapping[str, str]  # names in lower case
    content: bytes = b""

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    @property
    def is_success(self) -> bool:
        return 200 <= self.status_code < 300

    def json(self) -> Any:
        """The decoded body; ValueError when it is not JSON (or not UTF-8)."""
        return json.loads(self.content)


class TransportTimeout(Exception):
    """The peer did not answer in time (connect or read)."""


class TransportFailure(Exception):
    """The connection could not be made or broke (refused, reset, TLS, DNS)."""


class HttpTransport(Protocol):
    def send(self, request: HttpRequest) -> HttpResponse:
        """Send one request; raise `TransportTimeout` or `TransportFailure`, never an HTTP status."""
        ...


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """`Retry-After` in seconds from either of its forms (delta-seconds or an HTTP date), or None.

    `now` is the caller's clock (seconds since the epoch), so an HTTP date is read against it.
    """
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None  # "nan" and "inf" say nothing
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - now)
