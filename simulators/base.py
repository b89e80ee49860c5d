"""What the exchange simulators share: a real HTTP server on loopback, the peer address,
latency, rate-limit windows, fault modes and counters.

Each exchange module (`simulators.binance`, `.bitget`, `.bingx`) holds that exchange's
accounts and keys and answers like the real exchange: it verifies signatures over the
exact bytes sent, the TCP peer address against the key's whitelist, the timestamp window
and the rate limits, and replies with the real JSON shapes, HTTP statuses and codes.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qsl


@dataclass
class SimRequest:
    method: str
    path: str
    query: str  # the raw query string, exactly as sent (signatures cover these bytes)
    body: bytes
    headers: dict[str, str]  # lower-cased names
    peer_ip: str

    def params(self) -> dict[str, str]:
        return dict(parse_qsl(self.query, keep_blank_values=True))

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


@dataclass
class SimResponse:
    status: int
    body: Any  # JSON-serialisable, or bytes sent as they are
    headers: dict[str, str] = field(default_factory=dict)

    def encode(self) -> bytes:
        if isinstance(self.body, bytes):
            return self.body
        return json.dumps(self.body, separators=(",", ":")).encode()


class Fault(StrEnum):
    """Whole-exchange conditions a test or benchmark can switch on."""

    MAINTENANCE = "maintenance"  # the exchange's own maintenance answer
    UNAVAILABLE = "unavailable"  # 5xx from the exchange's front
    GEO_BLOCKED = "geo_blocked"  # HTTP 451: the caller's location is restricted
    RESET = "reset"  # the connection is closed without an answer


class FixedWindow:
    """Counts weight per key in fixed windows aligned to the clock (as the exchanges do:
    Binance's minute windows reset on the minute)."""

    def __init__(self, limit: int, seconds: float, clock: Callable[[], float]) -> None:
        self.limit = limit
        self.seconds = seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._windows: dict[str, tuple[int, int]] = {}  # key -> (window index, used)

    def _index(self) -> int:
        return int(self._clock() // self.seconds)

    def spend(self, key: str, weight: int = 1) -> tuple[bool, int]:
        """Spend `weight`; return (allowed, used in this window including this request).

        A refused request still counts, as on the real exchanges, so a client that keeps
        hammering stays over the limit.
        """
        with self._lock:
            index = self._index()
            window, used = self._windows.get(key, (index, 0))
            if window != index:
                used = 0
            used += weight
            self._windows[key] = (index, used)
            return used <= self.limit, used

    def used(self, key: str) -> int:
        with self._lock:
            window, used = self._windows.get(key, (self._index(), 0))
            return used if window == self._index() else 0

    def seconds_left(self) -> float:
        return self.seconds - (self._clock() % self.seconds)


class ExchangeSimulator:
    """Base of the three simulators: configuration and the request pipeline."""

    name = "exchange"

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        time_offset_ms: int = 0,
        latency: tuple[float, float] = (0.0, 0.0),
        window_scale: float = 1.0,
        seed: int = 7,
    ) -> None:
        self.clock = clock
        self.time_offset_ms = time_offset_ms  # the exchange's clock minus real time
        self.latency = latency
        self.window_scale = window_scale
        self.fault: Fault | None = None
        #: Peers refused outright (TCP peer address -> HTTP status: 451 a restricted location, 403 a WAF
        #: block, 418 a ban), as an exchange refuses one egress IP while it serves the others.
        self.blocked_peers: dict[str, int] = {}
        self.stats: Counter[str] = Counter()
        self._rng = random.Random(seed)
        self._rng_lock = threading.Lock()

    def server_time_ms(self) -> int:
        return int(self.clock() * 1000) + self.time_offset_ms

    def window(self, seconds: float) -> float:
        """A rate-limit window, scaled for benchmarks (limits stay, windows shrink)."""
        return seconds * self.window_scale

    def delay(self) -> float:
        low, high = self.latency
        if high <= 0:
            return 0.0
        with self._rng_lock:
            return self._rng.uniform(low, high)

    def handle(self, request: SimRequest) -> SimResponse:
        raise NotImplementedError

    def __call__(self, request: SimRequest) -> SimResponse | None:
        self.stats["requests"] += 1
        if self.fault is Fault.RESET:
            return None
        if (status := self.blocked_peers.get(request.peer_ip)) is not None:
            self.stats[f"http_{status}"] += 1
            self.stats[f"blocked:{request.peer_ip}"] += 1
            return SimResponse(status, b"Forbidden", {"Content-Type": "text/plain"})
        response = self.handle(request)
        self.stats[f"http_{response.status}"] += 1
        return response


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like the real exchanges' fronts
    disable_nagle_algorithm = True  # otherwise every keep-alive answer waits ~40 ms
    simulator: ExchangeSimulator  # set on the per-server subclass

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - signature is http.server's
        return  # the simulators are quiet; tests read `stats`

    def _serve(self) -> None:
        path, _, query = self.path.partition("?")
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        request = SimRequest(
            method=self.command,
            path=path,
            query=query,
            body=body,
            headers={k.lower(): v for k, v in self.headers.items()},
            peer_ip=self.client_address[0],
        )
        pause = self.simulator.delay()
        if pause:
            time.sleep(pause)  # the simulated network and matching-engine latency
        response = self.simulator(request)
        if response is None:
            self.close_connection = True
            return
        payload = response.encode()
        self.send_response(response.status)
        content_type = "application/json" if not isinstance(response.body, bytes) else "text/html"
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_DELETE = _serve  # noqa: N815 - http.server's names


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256


class ThreadedHttpServer:
    """An `http.server` handler class served on a background thread; a context manager.

    The simulators, the local API gateway and the test receivers all run this way.
    """

    def __init__(self, handler: type[BaseHTTPRequestHandler], host: str, port: int, *, name: str) -> None:
        self._server = _Server((host, port), handler)
        self._thread = threading.Thread(
            # A short poll interval: stopping waits for it (the default 0.5 s slows every test).
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=name,
            daemon=True,
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class SimulatorServer(ThreadedHttpServer):
    """Runs a simulator as a real HTTP server on loopback; use as a context manager.

    It binds 127.0.0.1 by default; clients may connect from any 127.x.y.z source address
    (httpx `local_address`), which the simulator sees as the peer IP.
    """

    def __init__(self, simulator: ExchangeSimulator, host: str = "127.0.0.1", port: int = 0) -> None:
        handler = type(f"{simulator.name.title()}Handler", (_Handler,), {"simulator": simulator})
        super().__init__(handler, host, port, name=f"sim-{simulator.name}")
        self.simulator = simulator


@dataclass(frozen=True)
class DemoKey:
    """A seeded key with what keyhealth should say about it (used by `make run` and tests).

    Plain strings on purpose: the simulators share no code with keyhealth, so that they
    check its adapters independently.
    """

    exchange: str
    label: str
    api_key: str
    api_secret: str
    scopes: tuple[str, ...]
    expected_status: str
    expected_codes: tuple[str, ...]
    passphrase: str | None = None
    key_type: str = "hmac"
