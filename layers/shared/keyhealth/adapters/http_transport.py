"""The HTTP transport of the exchange adapters, on httpx (keyhealth.domain.http's port).

One client per process: building one costs ~23 ms (its SSL context), so the composition
root builds it once and every adapter shares it.
"""

from __future__ import annotations

import logging

import httpx

from keyhealth.domain.http import HttpRequest, HttpResponse, TransportFailure, TransportTimeout

# httpx/httpcore log request lines and headers at DEBUG (our api key header among them).
for _name in ("httpx", "httpcore"):
    logging.getLogger(_name).setLevel(logging.WARNING)

DEFAULT_CONNECT_TIMEOUT = 3.0
DEFAULT_READ_TIMEOUT = 5.0


def new_http_client(
    *,
    source_address: str | None = None,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    read_timeout: float = DEFAULT_READ_TIMEOUT,
    max_connections: int = 64,
) -> httpx.Client:
    """The one client the exchange adapters share.

    `source_address` pins the local address outbound calls leave from: in the local stack
    a loopback alias such as 127.0.0.2 stands in for the NAT gateway's Elastic IP.
    """
    transport = httpx.HTTPTransport(
        local_address=source_address,
        retries=0,  # retrying is a decision per exchange (clock, rate budget), not the transport's
        limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
    )
    return httpx.Client(
        transport=transport,
        timeout=httpx.Timeout(read_timeout, connect=connect_timeout),
        headers={"User-Agent": "keyhealth/1.0"},
        follow_redirects=False,
    )


class HttpxTransport:
    """Sends `HttpRequest`s with an httpx client; network failures become the port's two errors."""

    def __init__(self, client: httpx.Client) -> None:
        self.client = client

    def send(self, request: HttpRequest) -> HttpResponse:
        try:
            response = self.client.request(
                request.method, request.url, headers=dict(request.headers), content=request.body
            )
        except httpx.TimeoutException:
            raise TransportTimeout(request.path) from None
        except httpx.TransportError:
            raise TransportFailure(request.path) from None
        return HttpResponse(
            status_code=response.status_code,
            headers={name.lower(): value for name, value in response.headers.items()},
            content=response.content,
        )
