"""POSTs webhook events to the URLs tenants registered, SSRF-safe (httpx; keyhealth.webhooks.ports' sender).

The URL is the tenant's input, so every call is vetted (keyhealth.webhooks.urls) on the addresses its host
resolves to at that moment, and the connection goes to the vetted address itself: httpx never resolves the
name again, so a DNS answer that changes between the check and the connect (rebinding) cannot redirect it.
TLS still checks the certificate against the host name (SNI), not the address. Redirects are not followed:
a 3xx could point anywhere, the metadata service included.

Nothing here logs the body, the headers (they carry the signature) or the URL's path and query.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any

import httpx

from keyhealth.webhooks.ports import SendOutcome
from keyhealth.webhooks.urls import WebhookUrl, WebhookUrlRefused, parse_webhook_url, refusal_of_resolved

DEFAULT_DEADLINE_SECONDS = 10.0
DEFAULT_MAX_ANSWER_BYTES = 1024
_TLS_REASON_LIMIT = 120


def resolve_host(host: str, port: int) -> list[str]:
    """The distinct addresses `host` resolves to, in the resolver's order."""
    try:
        answers = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise WebhookUrlRefused(f"{host} does not resolve") from None
    addresses: list[str] = []
    for family, _type, _proto, _name, sockaddr in answers:
        if family in (socket.AF_INET, socket.AF_INET6) and (address := str(sockaddr[0])) not in addresses:
            addresses.append(address)
    return addresses


class PinnedWebhookSender:
    """One per container: it holds the httpx client (built once, ~23 ms).

    An injected `client` must be this sender's alone: its default headers and cookies would go to every
    tenant's receiver.
    """

    def __init__(
        self,
        *,
        resolve: Callable[[str, int], Sequence[str]] = resolve_host,
        allow_loopback_http: bool = False,
        deadline_seconds: float = DEFAULT_DEADLINE_SECONDS,
        max_answer_bytes: int = DEFAULT_MAX_ANSWER_BYTES,
        monotonic: Callable[[], float] = time.monotonic,
        verify: ssl.SSLContext | bool = True,
        user_agent: str = "keyhealth-webhooks/1",
        client: httpx.Client | None = None,
    ) -> None:
        self._resolve = resolve
        self._allow_loopback = allow_loopback_http
        self._deadline_seconds = deadline_seconds
        self._max_answer_bytes = max_answer_bytes
        self._monotonic = monotonic
        self._user_agent = user_agent
        self._client = client if client is not None else new_webhook_client(verify)

    def vet(self, url: str) -> None:
        self._vetted(url)

    def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> SendOutcome:
        started = self._monotonic()
        deadline = started + self._deadline_seconds

        def outcome(status_code: int | None, error: str | None) -> SendOutcome:
            return SendOutcome(status_code, error, max(0.0, self._monotonic() - started))

        try:
            # Vetted again here, not trusted from PUT /webhook: the name may resolve elsewhere by now.
            target, address = self._vetted(url)
        except WebhookUrlRefused as refused:
            return outcome(None, f"refused: {refused.reason}")
        if deadline - self._monotonic() <= 0:  # the resolver alone took the whole budget
            return outcome(None, self._timeout_text)
        watchdog = _Watchdog()
        token = _sending.set(True)
        try:
            status = self._send(target, address, body, headers, deadline, watchdog)
        except httpx.TimeoutException:
            return outcome(None, self._timeout_text)
        except (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError, OSError) as failure:
            if watchdog.fired:
                return outcome(None, self._timeout_text)
            return outcome(None, _failure_text(failure))
        finally:
            watchdog.cancel()
            _sending.reset(token)
        if 200 <= status < 300:
            return outcome(status, None)
        if 300 <= status < 400:
            return outcome(status, f"redirect {status} not followed")
        return outcome(status, f"http {status}")

    def close(self) -> None:
        self._client.close()

    @property
    def _timeout_text(self) -> str:
        return f"timeout after {self._deadline_seconds:g} s"

    def _vetted(self, url: str) -> tuple[WebhookUrl, str]:
        """The parsed URL and the address to connect to; raises `WebhookUrlRefused`."""
        target = parse_webhook_url(url, allow_loopback_http=self._allow_loopback)
        if target.is_ip_literal:
            return target, target.host
        try:
            addresses = list(self._resolve(target.host, target.port))
        except (OSError, UnicodeError):
            raise WebhookUrlRefused(f"{target.host} does not resolve") from None
        if not addresses:
            raise WebhookUrlRefused(f"{target.host} does not resolve")
        # Every address, not only the one used: a name that resolves to one private address among public
        # ones is a probe, and which address a later resolution puts first is the resolver's choice.
        for address in addresses:
            if reason := refusal_of_resolved(target.host, address, allow_loopback=self._allow_loopback):
                raise WebhookUrlRefused(reason)
        return target, addresses[0]

    def _send(
        self,
        target: WebhookUrl,
        address: str,
        body: bytes,
        headers: Mapping[str, str],
        deadline: float,
        watchdog: _Watchdog,
    ) -> int:
        """The answer's status; raises httpx's errors for a request that got none."""
        request_headers = httpx.Headers({"User-Agent": self._user_agent})
        for name, value in headers.items():
            if name.lower() != "host":
                request_headers[name] = value
        request_headers["Host"] = target.host_header  # the name the receiver serves, not the pinned address
        extensions: dict[str, Any] = {"trace": watchdog.trace}
        if target.scheme == "https" and not target.is_ip_literal:
            extensions["sni_hostname"] = target.host
        remaining = deadline - self._monotonic()
        # httpx's timeouts bound each connect, write and read; the watchdog bounds their sum (an answer
        # trickled a byte at a time would restart the read timeout forever).
        watchdog.start(remaining)
        with self._client.stream(
            "POST",
            target.url_for(address),
            content=body,
            headers=request_headers,
            extensions=extensions,
            timeout=httpx.Timeout(remaining),
            follow_redirects=False,
        ) as response:
            if not 300 <= response.status_code < 400:  # a redirect's body is of no interest
                self._read_some(response, deadline)
            # Leaving the block closes the response; unread, its connection is dropped, not drained.
            return response.status_code

    def _read_some(self, response: httpx.Response, deadline: float) -> None:
        """Read a little of the answer, politely: the status already says what happened, so a slow or
        broken body only ends the reading."""
        read = 0
        try:
            # Raw bytes: a compressed answer is never inflated (a small gzip can hold gigabytes).
            for chunk in response.iter_raw():
                read += len(chunk)
                if read >= self._max_answer_bytes or self._monotonic() >= deadline:
                    return
        except (httpx.HTTPError, httpx.StreamError, OSError):
            return


def new_webhook_client(verify: ssl.SSLContext | bool = True) -> httpx.Client:
    """The sender's own client: one TLS context, no proxy or certificate settings from the environment."""
    transport = httpx.HTTPTransport(
        verify=verify,
        trust_env=False,
        retries=0,  # a retry is the deliverer's decision (back-off), not the transport's
        # No keep-alive: the pool is keyed by address, and two tenants' hosts behind one address must not
        # share a connection whose certificate was checked for one of them.
        limits=httpx.Limits(max_connections=64, max_keepalive_connections=0),
    )
    return httpx.Client(
        transport=transport,
        trust_env=False,
        follow_redirects=False,
        # A cookie one tenant's receiver sets must never be sent to another's (the jar is keyed by address).
        cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
    )


class _Watchdog:
    """Shuts the connection's socket at the deadline: a blocked read or handshake then fails at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._socket: socket.socket | None = None
        self._timer: threading.Timer | None = None
        self._done = False
        self.fired = False

    def trace(self, event: str, info: Mapping[str, Any]) -> None:
        # httpcore reports the stream it connected (and the TLS one it wrapped it in) through `trace`.
        if event in ("connection.connect_tcp.complete", "connection.start_tls.complete"):
            stream = info.get("return_value")
            sock = stream.get_extra_info("socket") if stream is not None else None
            if isinstance(sock, socket.socket):
                with self._lock:
                    self._socket = sock
                    fire_now = self.fired
                if fire_now:
                    self._shut()

    def start(self, seconds: float) -> None:
        self._timer = threading.Timer(max(0.0, seconds), self._fire)
        self._timer.daemon = True
        self._timer.start()

    def cancel(self) -> None:
        with self._lock:
            self._done = True
        if self._timer is not None:
            self._timer.cancel()

    def _fire(self) -> None:
        with self._lock:
            if self._done:
                return
            self.fired = True
        self._shut()

    def _shut(self) -> None:
        with self._lock:
            if self._done or self._socket is None:
                return
            # The plain socket's shutdown, also for an SSLSocket: SSLSocket.shutdown drops its TLS state,
            # which the thread blocked in recv is still using. OSError: the socket closed meanwhile.
            with contextlib.suppress(OSError):
                socket.socket.shutdown(self._socket, socket.SHUT_RDWR)


def _failure_text(failure: BaseException) -> str:
    tls = _tls_error(failure)
    if tls is not None:
        return f"tls: {_tls_reason(tls)}"
    if isinstance(failure, httpx.RemoteProtocolError):
        return "connection closed without a valid http answer"
    if isinstance(failure, httpx.ProtocolError):
        return "protocol error"
    if isinstance(failure, httpx.InvalidURL):
        return "invalid URL"
    return "connection failed"


def _tls_error(failure: BaseException) -> ssl.SSLError | None:
    """The TLS error under an httpx error (httpx wraps httpcore's, which wraps the ssl module's)."""
    seen: set[int] = set()
    current: BaseException | None = failure
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _tls_reason(error: ssl.SSLError) -> str:
    if isinstance(error, ssl.SSLCertVerificationError) and error.verify_message:
        reason = str(error.verify_message)
    elif error.reason:
        reason = str(error.reason).lower().replace("_", " ")
    else:
        reason = type(error).__name__
    reason = reason.rstrip(".")
    return reason if len(reason) <= _TLS_REASON_LIMIT else reason[: _TLS_REASON_LIMIT - 1] + "…"


# httpx logs `HTTP Request: POST <url>` at INFO for every request: the URL's path and query may hold the
# tenant's token, so its lines are dropped while this sender sends (same thread: a context variable).
_sending: contextvars.ContextVar[bool] = contextvars.ContextVar("keyhealth_webhook_sending", default=False)


class _DropWhileSending(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not _sending.get()


logging.getLogger("httpx").addFilter(_DropWhileSending())
