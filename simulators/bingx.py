"""A BingX simulator: the key-check endpoints, answered as BingX answers them.

An independent implementation (nothing from `keyhealth`), written from docs/exchanges.md
section 3, so that it checks our adapter rather than mirroring it. Served endpoints:

- `GET /openApi/swap/v2/server/time` (public, market IP group)
- `GET /openApi/v1/account/apiPermissions` (signed, Read, 2/s per UID, account IP group)
- `GET /openApi/account/v1/uid` (signed, Read, 10/s per UID, account IP group)

Pipeline of a request, in the order BingX most plausibly applies it:
fault -> IP ban (418) -> IP group limits (429; a gateway counts every request before looking at
the key) -> key header and format -> key exists (after the 14-day inactivity sweep) -> IP binding vs
the TCP peer -> timestamp window -> signature over the bytes sent -> frozen -> permission ->
per-UID limit (100410) -> answer. Business errors are HTTP 200 with `{"code","msg","timestamp"}`.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from simulators.base import DemoKey, ExchangeSimulator, Fault, FixedWindow, SimRequest, SimResponse

SERVER_TIME = "/openApi/swap/v2/server/time"
API_PERMISSIONS = "/openApi/v1/account/apiPermissions"
UID = "/openApi/account/v1/uid"

# Permission codes (exchanges.md 3.1); 6 exists but is undocumented.
SPOT, READ, FUTURES, UNIVERSAL_TRANSFER, WITHDRAW, INTERNAL_TRANSFER = 1, 2, 3, 4, 5, 7
KNOWN_PERMISSIONS = frozenset({1, 2, 3, 4, 5, 6, 7})
# Unbound keys with any of these are deleted after 14 idle days (exchanges.md 3.5).
INACTIVITY_PERMISSIONS = frozenset({SPOT, FUTURES, UNIVERSAL_TRANSFER, INTERNAL_TRANSFER})
INACTIVITY_SECONDS = 14 * 86400

MAX_IPS_PER_KEY = 20  # exchanges.md 3.5
MAX_KEYS_PER_ACCOUNT = 20
DEFAULT_RECV_WINDOW_MS = 5000
MAX_RECV_WINDOW_MS = 60000
# How far ahead of the server clock a timestamp may be. BingX documents only the "sent earlier"
# side; 1 s ahead is Binance's rule, taken as a plausible tolerance [U].
FUTURE_TOLERANCE_MS = 1000
RESTRICTION_SECONDS = 300.0  # "restrict the request and recover after 5 minutes" (exchanges.md 3.4)

API_KEY_FORMAT = re.compile(r"[A-Za-z0-9]{64}")

# Texts from exchanges.md 3.3.
MSG_NULL_KEY = "Null apiKey"
MSG_BAD_KEY = "Incorrect apiKey, please check your valid api key in https://bingx.com/en/account/api"
MSG_BAD_SIGNATURE = "Signature verification failed"
MSG_IP = (
    "your current request IP is {ip} does not match IP whitelist , "
    "please go to https://bingx.com/en/account/api/ to verify the ip you have set"
)
MSG_TIMESTAMP = "Null timestamp or timestamp mismatch"
MSG_ABNORMAL = "The account is abnormal, please contact customer service."
MSG_PERMISSION = (
    "Permission denied as the API key was created without the permission，this api need {name} permission，"
    " please config it in https://bingx.com/en/account/api"
)
MSG_THROTTLE = "throttle"
MSG_BUSY = "The server is busy, please try again later"


@dataclass
class SimKey:
    api_key: str
    secret: str
    uid: int
    permissions: tuple[int, ...]
    ip_addresses: tuple[str, ...]
    note: str = ""
    frozen: bool = False
    last_used: float = 0.0  # epoch seconds of the key's last trading use (the inactivity rule)


@dataclass
class _Route:
    group: str  # "market" or "account": BingX's IP groups (exchanges.md 3.4)
    signed: bool
    permission: int | None = None
    uid_limit: int | None = None  # requests per second per UID
    interface: str = field(default="")


class BingXSimulator(ExchangeSimulator):
    name = "bingx"

    def __init__(
        self,
        *,
        envelope: bool = False,
        read_calls_reset_inactivity: bool = False,
        account_group_limit: int = 2000,
        interface_limit: int = 300,
        market_group_limit: int = 500,
        **kwargs: Any,  # clock, time_offset_ms, latency, window_scale, seed: see ExchangeSimulator
    ) -> None:
        super().__init__(**kwargs)
        # JKorf's SDK reads apiPermissions raw (no {code,data}); other SDKs expect the envelope [U].
        self.envelope = envelope
        # Whether our read-only checks count as "use" for the 14-day rule is unknown (exchanges.md
        # 3.5); by default they do not, which is the case the warning exists for.
        self.read_calls_reset_inactivity = read_calls_reset_inactivity
        self.keys: dict[str, SimKey] = {}
        self.accounts: dict[int, list[str]] = {}
        self._next_uid = 10_000_001
        self._lock = threading.Lock()
        ten_seconds = self.window(10.0)
        self._account_group = FixedWindow(account_group_limit, ten_seconds, self.clock)
        self._interface = FixedWindow(interface_limit, ten_seconds, self.clock)
        self._market_group = FixedWindow(market_group_limit, ten_seconds, self.clock)
        self._restricted_until: dict[str, float] = {}
        self._routes: dict[str, _Route] = {
            SERVER_TIME: _Route(group="market", signed=False),
            API_PERMISSIONS: _Route(group="account", signed=True, permission=READ, uid_limit=2),
            UID: _Route(group="account", signed=True, permission=READ, uid_limit=10),
        }
        self._uid_limits = {
            path: FixedWindow(route.uid_limit, self.window(1.0), self.clock)
            for path, route in self._routes.items()
            if route.uid_limit
        }

    # ------------------------------------------------------------------ accounts and keys
    def add_key(
        self,
        *,
        uid: int | None = None,
        api_key: str | None = None,
        secret: str | None = None,
        permissions: Iterable[int] = (READ,),
        ip_addresses: Iterable[str] = (),
        note: str = "",
        frozen: bool = False,
        last_used: float | None = None,
    ) -> SimKey:
        """Create a key as BingX's API management page would (new keys default to read-only)."""
        perms = tuple(sorted(set(permissions)))
        ips = tuple(ip_addresses)
        with self._lock:
            if uid is None:
                uid = self._next_uid
                self._next_uid += 1
            if api_key is None:
                api_key = self._random_token(64)
            if secret is None:
                secret = self._random_token(64)
            if not API_KEY_FORMAT.fullmatch(api_key):
                raise ValueError("a BingX API key is 64 letters and digits")
            if api_key in self.keys:
                raise ValueError("this API key already exists")
            if not set(perms) <= KNOWN_PERMISSIONS:
                raise ValueError(f"unknown permission codes {sorted(set(perms) - KNOWN_PERMISSIONS)}")
            if WITHDRAW in perms and not ips:
                raise ValueError("API keys with withdrawal permissions must be linked to an IP address")
            if len(ips) > MAX_IPS_PER_KEY:
                raise ValueError(f"each API key can be linked up to {MAX_IPS_PER_KEY} IP addresses")
            account = self.accounts.setdefault(uid, [])
            if len(account) >= MAX_KEYS_PER_ACCOUNT:
                raise ValueError(f"each account can keep at most {MAX_KEYS_PER_ACCOUNT} API keys")
            key = SimKey(
                api_key=api_key,
                secret=secret,
                uid=uid,
                permissions=perms,
                ip_addresses=ips,
                note=note,
                frozen=frozen,
                last_used=self.clock() if last_used is None else last_used,
            )
            account.append(api_key)
            self.keys[api_key] = key
            return key

    def delete_key(self, api_key: str) -> None:
        with self._lock:
            key = self.keys.pop(api_key, None)
            if key is not None:
                self.accounts[key.uid].remove(api_key)

    def touch(self, api_key: str) -> None:
        """Record a trading use of the key (resets the 14-day inactivity timer)."""
        self.keys[api_key].last_used = self.clock()

    def _random_token(self, length: int) -> str:
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
        with self._rng_lock:
            return "".join(self._rng.choice(alphabet) for _ in range(length))

    def _lookup(self, api_key: str) -> SimKey | None:
        with self._lock:
            key = self.keys.get(api_key)
            if key is None:
                return None
            idle = self.clock() - key.last_used
            if not key.ip_addresses and INACTIVITY_PERMISSIONS & set(key.permissions) and idle > INACTIVITY_SECONDS:
                # BingX deletes unbound trading keys after 14 idle days: afterwards they are unknown.
                del self.keys[api_key]
                self.accounts[key.uid].remove(api_key)
                self.stats["keys_deleted_inactive"] += 1
                return None
            return key

    # ------------------------------------------------------------------ request pipeline
    def handle(self, request: SimRequest) -> SimResponse:
        if self.fault is Fault.MAINTENANCE:
            return SimResponse(503, self._error_body(100503, MSG_BUSY))
        if self.fault is Fault.UNAVAILABLE:
            return SimResponse(502, b"<html><body><h1>502 Bad Gateway</h1></body></html>")
        if self.fault is Fault.GEO_BLOCKED:
            return SimResponse(451, b"<html><body><h1>451 Unavailable For Legal Reasons</h1></body></html>")
        route = self._routes.get(request.path)
        if route is None or request.method != "GET":
            return SimResponse(404, b"404 page not found")
        limited, headers = self._ip_gate(request, route)
        if limited is not None:
            return limited
        if not route.signed:
            response = SimResponse(200, {"code": 0, "msg": "", "data": {"serverTime": self.server_time_ms()}})
        else:
            response = self._signed(request, route)
        response.headers.update(headers)
        return response

    def _ip_gate(self, request: SimRequest, route: _Route) -> tuple[SimResponse | None, dict[str, str]]:
        """BingX's per-IP group limits. A breach answers 429 and restricts the IP for 5 minutes;
        a client that keeps sending while restricted gets 418 (exchanges.md 3.3, 3.4)."""
        ip = request.peer_ip
        now = self.clock()
        with self._lock:
            until = self._restricted_until.get(ip)
            if until is not None and now >= until:
                del self._restricted_until[ip]
                until = None
        if until is not None:
            self.stats[f"ip_418:{ip}"] += 1
            expire = {"X-RateLimit-Requests-Remain": "0", "X-RateLimit-Requests-Expire": str(int(until * 1000))}
            return SimResponse(418, b"IP banned: too many requests", expire), {}
        if route.group == "market":
            checks = [(self._market_group, ip)]
        else:
            checks = [(self._account_group, ip), (self._interface, f"{ip} {request.path}")]
        allowed = True
        remain: int | None = None
        for limiter, key in checks:
            ok, used = limiter.spend(key)
            allowed = allowed and ok
            left = max(0, limiter.limit - used)
            remain = left if remain is None else min(remain, left)
        window_end_ms = int((now + checks[0][0].seconds_left()) * 1000)
        headers = {"X-RateLimit-Requests-Remain": str(remain), "X-RateLimit-Requests-Expire": str(window_end_ms)}
        if not allowed:
            with self._lock:
                self._restricted_until[ip] = now + self.window(RESTRICTION_SECONDS)
            self.stats[f"ip_429:{ip}"] += 1
            expire = str(int((now + self.window(RESTRICTION_SECONDS)) * 1000))
            return SimResponse(
                429,
                b"Too Many Requests",
                {"X-RateLimit-Requests-Remain": "0", "X-RateLimit-Requests-Expire": expire},
            ), {}
        return None, headers

    def _signed(self, request: SimRequest, route: _Route) -> SimResponse:
        api_key = request.header("X-BX-APIKEY")
        if not api_key:
            return self._error(100413, MSG_NULL_KEY)
        key = self._lookup(api_key) if API_KEY_FORMAT.fullmatch(api_key) else None
        if key is None:
            return self._error(100413, MSG_BAD_KEY)
        if key.ip_addresses and request.peer_ip not in key.ip_addresses:
            return self._error(100419, MSG_IP.format(ip=request.peer_ip))
        params = request.params()
        if not self._timestamp_ok(params):
            return self._error(100421, MSG_TIMESTAMP)
        if not self._signature_ok(request, key.secret):
            return self._error(100001, MSG_BAD_SIGNATURE)
        if key.frozen:
            return self._error(100414, MSG_ABNORMAL)
        if route.permission is not None and route.permission not in key.permissions:
            return self._error(100004, MSG_PERMISSION.format(name="Read"))
        limiter = self._uid_limits.get(request.path)
        if limiter is not None:
            allowed, _ = limiter.spend(str(key.uid))
            if not allowed:
                self.stats["uid_throttled"] += 1
                return self._error(100410, MSG_THROTTLE)
        if self.read_calls_reset_inactivity:
            key.last_used = self.clock()
        if request.path == API_PERMISSIONS:
            answer = {
                "apiKey": key.api_key,
                "permissions": list(key.permissions),
                "ipAddresses": list(key.ip_addresses),
                "note": key.note,
            }
            if self.envelope:
                return SimResponse(200, {"code": 0, "msg": "", "timestamp": self.server_time_ms(), "data": answer})
            return SimResponse(200, answer)
        return SimResponse(200, {"code": 0, "msg": "", "timestamp": self.server_time_ms(), "data": {"uid": key.uid}})

    def _timestamp_ok(self, params: dict[str, str]) -> bool:
        try:
            timestamp = int(params["timestamp"])
            recv_window = int(params.get("recvWindow") or DEFAULT_RECV_WINDOW_MS)
        except (KeyError, ValueError):
            return False
        if recv_window <= 0 or recv_window > MAX_RECV_WINDOW_MS:
            return False
        server = self.server_time_ms()
        return timestamp <= server + FUTURE_TOLERANCE_MS and server - timestamp <= recv_window

    def _signature_ok(self, request: SimRequest, secret: str) -> bool:
        """HMAC-SHA256 hex over the raw `k=v&...` string. The server checks the string as sent
        (the 2023 swap example signs an unsorted string) and clients that sort also pass, since
        what they sort is what they send; both readings are accepted (exchanges.md 3.2)."""
        pairs: list[tuple[str, str]] = []
        sent: str | None = None
        for part in request.query.split("&"):
            name, _, value = part.partition("=")
            if name == "signature":
                sent = value
                continue
            if part:
                pairs.append((unquote(name), unquote(value)))
        if not sent:
            return False
        body = unquote(request.body.decode("utf-8", "replace")) if request.body else ""
        as_sent = "&".join(f"{k}={v}" for k, v in pairs) + body
        sorted_ = "&".join(f"{k}={v}" for k, v in sorted(pairs)) + body
        for payload in {as_sent, sorted_}:
            expected = hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
            if hmac.compare_digest(expected, sent.lower()):
                return True
        return False

    def _error_body(self, code: int, msg: str) -> dict[str, object]:
        return {"code": code, "msg": msg, "timestamp": self.server_time_ms()}

    def _error(self, code: int, msg: str) -> SimResponse:
        self.stats[f"code_{code}"] += 1
        return SimResponse(200, self._error_body(code, msg))


# ---------------------------------------------------------------------- demo accounts
DEMO_SECRET_SEED = "keyhealth-bingx-demo"
NOT_OUR_IP = "203.0.113.10"  # TEST-NET-3: never the egress


def _demo_token(seed: str, label: str, prefix: str = "") -> str:
    digest = hashlib.sha256(f"{seed}/{label}".encode()).hexdigest()
    return (prefix + digest)[:64]


def seed_demo(
    sim: BingXSimulator,
    egress_ip: str,
    *,
    secret_prefix: str = "",
    other_egress_ips: Sequence[str] = (),
    planned_ips: Sequence[str] = (),
) -> list[DemoKey]:
    """One key per per-key outcome keyhealth can report on BingX, checked from `egress_ip`.

    Keys and secrets are deterministic (derived from fixed labels) so the README can show them;
    `secret_prefix` lets a test plant a recognisable canary at the start of every secret. With the
    stack's `other_egress_ips` (and announced `planned_ips`) the bound keys list them all, and a key
    listing only `egress_ip` (or lacking the planned ones) shows the whitelist findings.
    """
    demos: list[DemoKey] = []

    def add(
        label: str,
        scopes: tuple[str, ...],
        status: str,
        codes: tuple[str, ...],
        *,
        register: bool = True,
        given_secret: str | None = None,
        **key_fields: object,
    ) -> None:
        api_key = _demo_token("key", label)
        secret = _demo_token(DEMO_SECRET_SEED, label, secret_prefix)
        if register:
            sim.add_key(api_key=api_key, secret=secret, note=label, **key_fields)
        demos.append(
            DemoKey(
                exchange="bingx",
                label=label,
                api_key=api_key,
                api_secret=given_secret or secret,
                scopes=scopes,
                expected_status=status,
                expected_codes=codes,
            )
        )

    ours = (egress_ip, *other_egress_ips)
    bound = {"ip_addresses": (*ours, *planned_ips)}
    if other_egress_ips:
        add(
            "whitelists one egress IP of several",
            ("spot",),
            "failing",
            ("ip_whitelist_incomplete",),
            permissions=(READ, SPOT),
            ip_addresses=(egress_ip, *planned_ips),
        )
    if planned_ips:
        add(
            "lacks the planned egress IP",
            ("spot",),
            "degraded",
            ("planned_ip_missing",),
            permissions=(READ, SPOT),
            ip_addresses=ours,
        )
    add("healthy spot and futures", ("spot", "futures"), "healthy", (), permissions=(READ, SPOT, FUTURES), **bound)
    add(
        "withdraw enabled",
        ("spot",),
        "degraded",
        ("withdraw_enabled",),
        permissions=(READ, SPOT, WITHDRAW),
        **bound,
    )
    add(
        "no IP binding, trading",
        ("spot", "futures"),
        "degraded",
        ("no_ip_restriction", "inactivity_deletion_risk"),
        permissions=(READ, SPOT, FUTURES),
    )
    add("no IP binding, read only", ("spot",), "failing", ("scope_not_permitted", "no_ip_restriction"))
    add(
        "spot only, futures needed",
        ("spot", "futures"),
        "failing",
        ("scope_not_permitted",),
        permissions=(READ, SPOT),
        **bound,
    )
    add(
        "read permission missing",
        ("spot",),
        "failing",
        ("scope_not_permitted",),
        permissions=(SPOT,),
        **bound,
    )
    add(
        "egress IP not whitelisted",
        ("spot",),
        "failing",
        ("ip_not_whitelisted",),
        permissions=(READ, SPOT),
        ip_addresses=(NOT_OUR_IP,),
    )
    add(
        "wrong secret",
        ("spot",),
        "failing",
        ("invalid_secret",),
        given_secret=_demo_token(DEMO_SECRET_SEED, "wrong secret, as pasted", secret_prefix),
        permissions=(READ, SPOT),
        **bound,
    )
    add("unknown key", ("spot",), "failing", ("invalid_api_key",), register=False)
    add(
        "frozen account",
        ("spot",),
        "failing",
        ("account_restricted",),
        permissions=(READ, SPOT),
        frozen=True,
        **bound,
    )
    add(
        "deleted after 14 idle days",
        ("futures",),
        "failing",
        ("invalid_api_key",),
        permissions=(READ, FUTURES),
        last_used=sim.clock() - INACTIVITY_SECONDS - 3600,
    )
    return demos


#: The simulator class of this exchange (see simulators/__init__.py).
SIMULATOR = BingXSimulator
