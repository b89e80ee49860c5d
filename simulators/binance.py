"""A Binance simulator for the endpoints keyhealth uses (facts: docs/exchanges.md section 1).

Independent of `keyhealth` on purpose: it implements Binance's rules a second time, so
that the adapter is checked against the exchange's behaviour rather than against itself.

Served on one server (the local stack may run two, one per base URL):
`/api/v3/time`, `/api/v3/ping`, `/api/v3/account`, `/sapi/v1/system/status`,
`/sapi/v1/account/apiRestrictions`, `/fapi/v1/time`, `/fapi/v1/accountConfig`.

Order of checks on a request:
1. whole-exchange faults (maintenance, 5xx, 451, reset) and the WAF (403);
2. the IP's ban (418), a request sent while told to back off (-> ban, 418), the IP's
   weight in that pool (429). Weight is counted for every request, before the key is
   looked at, because Binance limits "are based on the IPs, not the API keys" (1.4);
3. for signed endpoints: key format (-2014), key exists (-2015), IP whitelist against
   the TCP peer (-2015), timestamp window (-1021; recvWindow > 60000: -1131), signature
   over the exact bytes received before `&signature=` plus the body (-1022), locked
   keys on the account (-2017), then the endpoint's own permission (fapi: -2015).

Choices where exchanges.md is silent, documented here:
- maintenance answers HTTP 503 with `{"code":1,"msg":"System is under maintenance."}`
  (the body is ccxt's exact map); `/sapi/v1/system/status` answers 200 with status 1;
- `Fault.UNAVAILABLE` answers 503 with -1008 (server overloaded);
- `Fault.GEO_BLOCKED` answers 451 with Binance's restricted-location text;
- an IP told to back off (429) that sends again into the same pool before the window ends
  is banned: 2 minutes (scaled by `window_scale`), doubling on each repeat, at most 3 days;
- a missing or malformed `timestamp` answers -1102 (Binance's "Mandatory parameter" code, not in
  exchanges.md); a missing signature answers -1022 like a wrong one;
- a key's `enableFutures` on /sapi is the tick-box as set; /fapi refuses (-2015) a key
  whose account has no futures account, or that was created before it was opened.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote_plus

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

from simulators.base import DemoKey, ExchangeSimulator, Fault, FixedWindow, SimRequest, SimResponse

API_KEY_SHAPE = re.compile(r"[A-Za-z0-9]{64}")
DAY_MS = 86_400_000
TRADING_AUTHORITY_MS = 30 * DAY_MS  # unrestricted keys: trading rights for 30 days (1.5)
MAX_RECV_WINDOW_MS = 60_000
MAX_WHITELIST = 30
BAN_SECONDS = 120.0  # first ban: 2 minutes
MAX_BAN_SECONDS = 3 * 86_400.0  # bans scale up to 3 days (1.3)

#: Per-IP weight per minute for each pool; every IP-limited /sapi endpoint is its own pool.
DEFAULT_LIMITS = {"api": 6000, "sapi": 12000, "fapi": 2400}

MSG = {
    -2014: "API-key format invalid.",
    -2015: "Invalid API-key, IP, or permissions for action.",
    -1021: "Timestamp for this request is outside of the recvWindow.",
    -1022: "Signature for this request is not valid.",
    -1102: "Mandatory parameter '{}' was not sent, was empty/null, or malformed.",
    -1131: "recvWindow must be less than 60000",
    -2017: "API Keys are locked on this account.",
    -1008: "Server is currently overloaded with other requests. Please try again in a few minutes.",
    1: "System is under maintenance.",
}
AHEAD_MSG = "Timestamp for this request was 1000ms ahead of the server's time."
GEO_MSG = (
    "Service unavailable from a restricted location according to 'b. Eligibility' in "
    "https://www.binance.com/en/terms. Please contact customer service if you believe you "
    "received this message in error."
)


@dataclass
class BinanceAccount:
    uid: int
    futures_opened_ms: int | None = 0  # when the USDⓈ-M futures account was opened; None: never
    futures_can_trade: bool = True
    keys_locked: bool = False  # -2017 "API Keys are locked on this account."
    can_trade: bool = True


@dataclass
class BinanceKey:
    api_key: str
    uid: int
    key_type: str  # "hmac" | "ed25519" | "rsa"
    secret: str | None  # HMAC secret
    public_key: Any  # Ed25519 / RSA public key object
    create_time_ms: int
    ip_whitelist: tuple[str, ...] = ()
    enable_reading: bool = True
    enable_spot: bool = True
    enable_futures: bool = False
    enable_margin: bool = False
    enable_withdrawals: bool = False
    enable_internal_transfer: bool = False
    permits_universal_transfer: bool = False

    @property
    def ip_restricted(self) -> bool:
        return bool(self.ip_whitelist)

    def trading_expires_ms(self) -> int | None:
        """Unrestricted keys with trading ticked lose it 30 days after creation (1.5)."""
        if self.ip_restricted or not self.enable_spot:
            return None
        return self.create_time_ms + TRADING_AUTHORITY_MS


@dataclass
class _Route:
    pool: str
    weight: int
    handler: Callable[[SimRequest, BinanceKey | None], SimResponse]
    signed: bool


@dataclass
class _IpState:
    backoff_until: dict[str, float] = field(default_factory=dict)  # pool -> end of the 429 window
    banned_until: float = 0.0
    bans: int = 0


def _error(status: int, code: int, msg: str | None = None, headers: dict[str, str] | None = None) -> SimResponse:
    return SimResponse(status, {"code": code, "msg": msg if msg is not None else MSG[code]}, headers or {})


class BinanceSimulator(ExchangeSimulator):
    name = "binance"

    def __init__(self, *, limits: dict[str, int] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.limits = {**DEFAULT_LIMITS, **(limits or {})}
        self.accounts: dict[int, BinanceAccount] = {}
        self.keys: dict[str, BinanceKey] = {}
        self.waf_blocked_ips: set[str] = set()
        self._windows: dict[str, FixedWindow] = {}
        self._ips: dict[str, _IpState] = {}
        self._lock = threading.Lock()
        self._routes: dict[str, _Route] = {
            "/api/v3/time": _Route("api", 1, self._time, signed=False),
            "/api/v3/ping": _Route("api", 1, lambda _request, _key: SimResponse(200, {}), signed=False),
            "/api/v3/account": _Route("api", 20, self._account, signed=True),
            "/sapi/v1/system/status": _Route("sapi", 1, self._system_status, signed=False),
            "/sapi/v1/account/apiRestrictions": _Route("sapi", 1, self._api_restrictions, signed=True),
            "/fapi/v1/time": _Route("fapi", 1, self._time, signed=False),
            "/fapi/v1/accountConfig": _Route("fapi", 5, self._futures_account_config, signed=True),
        }

    # ------------------------------------------------------------------ setup
    def add_account(self, uid: int, **settings: Any) -> BinanceAccount:
        account = BinanceAccount(uid=uid, **settings)
        self.accounts[uid] = account
        return account

    def add_key(
        self,
        api_key: str,
        *,
        uid: int,
        secret: str | None = None,
        public_key_pem: str | None = None,
        key_type: str = "hmac",
        ip_whitelist: tuple[str, ...] | list[str] = (),
        create_time_ms: int | None = None,
        **permissions: bool,
    ) -> BinanceKey:
        """Register a key; `permissions` are BinanceKey's `enable_*` / `permits_*` fields."""
        if uid not in self.accounts:
            self.add_account(uid)
        public_key: Any = None
        if key_type == "hmac":
            if not secret:
                raise ValueError("an HMAC key needs its secret")
        else:
            if not public_key_pem:
                raise ValueError("an Ed25519/RSA key needs its public key")
            public_key = serialization.load_pem_public_key(public_key_pem.encode())
            expected = ed25519.Ed25519PublicKey if key_type == "ed25519" else rsa.RSAPublicKey
            if not isinstance(public_key, expected):
                raise ValueError(f"the public key is not a {key_type} key")
        whitelist = tuple(ip_whitelist)
        if len(whitelist) > MAX_WHITELIST:
            raise ValueError("Binance allows at most 30 IPs per key")
        if permissions.get("enable_withdrawals") and not whitelist:
            # "You must apply the IP Access Restriction filter in order to enable withdrawals" (1.1)
            raise ValueError("Binance refuses withdrawals on a key without IP restriction")
        key = BinanceKey(
            api_key=api_key,
            uid=uid,
            key_type=key_type,
            secret=secret,
            public_key=public_key,
            create_time_ms=self.server_time_ms() if create_time_ms is None else create_time_ms,
            ip_whitelist=whitelist,
            **permissions,
        )
        self.keys[api_key] = key
        return key

    # ------------------------------------------------------------------ pipeline
    def handle(self, request: SimRequest) -> SimResponse:
        fault = self._fault_answer(request)
        if fault is not None:
            return fault
        if request.peer_ip in self.waf_blocked_ips:
            return SimResponse(403, b"<html><body><h1>403 Forbidden</h1></body></html>")
        route = self._routes.get(request.path)
        if route is None:
            return SimResponse(404, b"")
        pool = route.pool if route.pool != "sapi" else f"sapi:{request.path}"
        limited = self._spend(request.peer_ip, pool, route.weight)
        if isinstance(limited, SimResponse):
            return limited
        response = self._authenticated(request, route) if route.signed else route.handler(request, None)
        response.headers.update(self._weight_headers(route.pool, limited))
        return response

    def _fault_answer(self, request: SimRequest) -> SimResponse | None:
        if self.fault is Fault.MAINTENANCE:
            if request.path == "/sapi/v1/system/status":
                return SimResponse(200, {"status": 1, "msg": "system_maintenance"})
            return _error(503, 1)
        if self.fault is Fault.UNAVAILABLE:
            return _error(503, -1008)
        if self.fault is Fault.GEO_BLOCKED:
            return _error(451, 0, GEO_MSG)
        return None

    # ------------------------------------------------------------------ rate limits
    def _window(self, pool: str) -> FixedWindow:
        with self._lock:
            window = self._windows.get(pool)
            if window is None:
                limit = self.limits[pool.split(":", 1)[0]]
                window = FixedWindow(limit, self.window(60), self.clock)
                self._windows[pool] = window
            return window

    def _spend(self, ip: str, pool: str, weight: int) -> int | SimResponse:
        """The weight used in the pool's window after this request, or the 418/429 answer."""
        now = self.clock()
        window = self._window(pool)
        with self._lock:
            state = self._ips.setdefault(ip, _IpState())
            if state.banned_until > now:
                return self._banned(ip, state, now)
            if state.backoff_until.get(pool, 0.0) > now:
                # Kept sending after a 429: Binance bans the IP, 2 minutes up to 3 days (1.3).
                seconds = min(BAN_SECONDS * self.window_scale * 2**state.bans, MAX_BAN_SECONDS * self.window_scale)
                state.bans += 1
                state.banned_until = now + seconds
                state.backoff_until.clear()
                return self._banned(ip, state, now)
        allowed, used = window.spend(ip, weight)
        if allowed:
            return used
        wait = window.seconds_left()
        with self._lock:
            state.backoff_until[pool] = now + wait
        self.stats[f"http_429:{ip}"] += 1
        limit = self.limits[pool.split(":", 1)[0]]
        msg = (
            f"Too much request weight used; current limit is {limit} request weight per 1 MINUTE. "
            "Please use WebSocket Streams for live updates to avoid polling the API."
        )
        headers = {"Retry-After": str(max(1, math.ceil(wait))), **self._weight_headers(pool, used)}
        return _error(429, -1003, msg, headers)

    def _banned(self, ip: str, state: _IpState, now: float) -> SimResponse:
        self.stats[f"http_418:{ip}"] += 1
        until_ms = int(state.banned_until * 1000) + self.time_offset_ms
        msg = (
            f"Way too much request weight used; IP banned until {until_ms}. "
            "Please use WebSocket Streams for live updates to avoid bans."
        )
        return _error(418, -1003, msg, {"Retry-After": str(max(1, math.ceil(state.banned_until - now)))})

    @staticmethod
    def _weight_headers(pool: str, used: int) -> dict[str, str]:
        if pool.startswith("sapi"):
            return {"X-SAPI-USED-IP-WEIGHT-1M": str(used)}
        if pool == "api":
            return {"X-MBX-USED-WEIGHT-1M": str(used), "X-MBX-USED-WEIGHT": str(used)}
        return {"X-MBX-USED-WEIGHT-1M": str(used)}

    def used_weight(self, ip: str, pool: str) -> int:
        return self._window(pool).used(ip)

    # ------------------------------------------------------------------ authentication
    def _authenticated(self, request: SimRequest, route: _Route) -> SimResponse:
        api_key = request.header("X-MBX-APIKEY") or ""
        if not API_KEY_SHAPE.fullmatch(api_key):
            return _error(401, -2014)
        key = self.keys.get(api_key)
        if key is None:
            return _error(401, -2015)
        if key.ip_restricted and request.peer_ip not in key.ip_whitelist:
            return _error(401, -2015)
        params = request.params()
        if request.body:
            params.update(parse_qsl(request.body.decode(errors="replace"), keep_blank_values=True))
        stale = self._check_timestamp(params)
        if stale is not None:
            return stale
        if not self._signature_valid(key, request):
            return _error(400, -1022)
        account = self.accounts[key.uid]
        if account.keys_locked:
            return _error(401, -2017)
        return route.handler(request, key)

    def _check_timestamp(self, params: dict[str, str]) -> SimResponse | None:
        try:
            timestamp = int(params["timestamp"])
        except (KeyError, ValueError):
            return _error(400, -1102, MSG[-1102].format("timestamp"))
        if timestamp >= 10**15:  # microseconds are accepted too (1.2)
            timestamp //= 1000
        try:
            recv_window = float(params.get("recvWindow", "5000"))
        except ValueError:
            return _error(400, -1102, MSG[-1102].format("recvWindow"))
        if recv_window > MAX_RECV_WINDOW_MS:
            return _error(400, -1131)
        server = self.server_time_ms()
        if timestamp >= server + 1000:
            return _error(400, -1021, AHEAD_MSG)
        if server - timestamp > recv_window:
            return _error(400, -1021)
        return None

    @staticmethod
    def _split_signature(request: SimRequest) -> tuple[bytes, str] | None:
        """(signed bytes, signature) with the signature taken from the query or the body."""
        for where in ("query", "body"):
            text = request.query if where == "query" else request.body.decode(errors="replace")
            if text.startswith("signature="):
                before, signature = "", text[len("signature=") :]
            else:
                before, sep, signature = text.rpartition("&signature=")
                if not sep:
                    continue
            if "&" in signature or not signature:
                return None  # Binance wants the signature last
            if where == "query":
                return before.encode() + request.body, signature
            return request.query.encode() + before.encode(), signature
        return None

    def _signature_valid(self, key: BinanceKey, request: SimRequest) -> bool:
        found = self._split_signature(request)
        if found is None:
            return False
        payload, signature = found
        if key.key_type == "hmac":
            assert key.secret is not None
            expected = hmac.new(key.secret.encode(), payload, hashlib.sha256).hexdigest()
            return hmac.compare_digest(expected, signature.lower())  # hex case does not matter (1.2)
        try:
            raw = base64.b64decode(unquote_plus(signature), validate=True)
        except ValueError:
            return False
        try:
            if key.key_type == "ed25519":
                key.public_key.verify(raw, payload)
            else:
                key.public_key.verify(raw, payload, padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            return False
        return True

    # ------------------------------------------------------------------ endpoints
    def _time(self, _request: SimRequest, _key: BinanceKey | None) -> SimResponse:
        return SimResponse(200, {"serverTime": self.server_time_ms()})

    def _system_status(self, _request: SimRequest, _key: BinanceKey | None) -> SimResponse:
        return SimResponse(200, {"status": 0, "msg": "normal"})

    def _api_restrictions(self, _request: SimRequest, key: BinanceKey | None) -> SimResponse:
        assert key is not None
        expires = key.trading_expires_ms()
        lapsed = expires is not None and expires <= self.server_time_ms()
        body: dict[str, Any] = {
            "ipRestrict": key.ip_restricted,
            "createTime": key.create_time_ms,
            "enableReading": key.enable_reading,
            "enableWithdrawals": key.enable_withdrawals,
            "enableInternalTransfer": key.enable_internal_transfer,
            "enableMargin": key.enable_margin,
            "enableFutures": key.enable_futures,
            "permitsUniversalTransfer": key.permits_universal_transfer,
            "enableVanillaOptions": False,
            "enableFixApiTrade": False,
            "enableFixReadOnly": True,
            "enableSpotAndMarginTrading": key.enable_spot and not lapsed,
            "enablePortfolioMarginTrading": False,
        }
        if expires is not None:
            body["tradingAuthorityExpirationTime"] = expires
        return SimResponse(200, body)

    def _account(self, _request: SimRequest, key: BinanceKey | None) -> SimResponse:
        assert key is not None
        account = self.accounts[key.uid]
        return SimResponse(
            200,
            {
                "makerCommission": 10,
                "takerCommission": 10,
                "buyerCommission": 0,
                "sellerCommission": 0,
                "commissionRates": {"maker": "0.00100000", "taker": "0.00100000", "buyer": "0", "seller": "0"},
                "canTrade": account.can_trade,
                "canWithdraw": True,
                "canDeposit": True,
                "brokered": False,
                "requireSelfTradePrevention": False,
                "preventSor": False,
                "updateTime": key.create_time_ms,
                "accountType": "SPOT",
                "balances": [],
                "permissions": ["SPOT"],
                "uid": account.uid,
            },
        )

    def _futures_account_config(self, _request: SimRequest, key: BinanceKey | None) -> SimResponse:
        assert key is not None
        account = self.accounts[key.uid]
        opened = account.futures_opened_ms
        # "API Key created before your futures account opened does not support futures API service" (1.1)
        if not key.enable_futures or opened is None or key.create_time_ms < opened:
            return _error(401, -2015)
        return SimResponse(
            200,
            {
                "feeTier": 0,
                "canTrade": account.futures_can_trade,
                "canDeposit": True,
                "canWithdraw": True,
                "dualSidePosition": False,
                "updateTime": 0,
                "multiAssetsMargin": False,
                "tradeGroupId": -1,
            },
        )


# ---------------------------------------------------------------------- demo data
def demo_api_key(label: str) -> str:
    return hashlib.sha256(f"binance-demo-key:{label}".encode()).hexdigest()


def demo_secret(label: str) -> str:
    return hashlib.sha256(f"binance-demo-secret:{label}".encode()).hexdigest()


def demo_ed25519_private_key(label: str) -> ed25519.Ed25519PrivateKey:
    """Deterministic: derived from the label, so the demo's PEM is the same on every run."""
    return ed25519.Ed25519PrivateKey.from_private_bytes(
        hashlib.sha256(f"binance-demo-ed25519:{label}".encode()).digest()
    )


def private_pem(key: ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def public_pem(key: ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def seed_demo(sim: BinanceSimulator, egress_ip: str, *, other_egress_ips: Sequence[str] = ()) -> list[DemoKey]:
    """Accounts and keys covering every per-key outcome keyhealth reports for Binance.

    Expected codes are what a check from `egress_ip` with the key's scopes should report.
    HMAC secrets and Ed25519 keys are derived from the label; the RSA key is generated here.
    """
    now = sim.server_time_ms()
    other_ip = "203.0.113.7"  # TEST-NET-3: never a real egress
    demo: list[DemoKey] = []
    uid_counter = iter(range(100_000_001, 100_001_000))

    def hmac_key(
        label: str,
        scopes: tuple[str, ...],
        status: str,
        codes: tuple[str, ...],
        *,
        account: dict[str, Any] | None = None,
        register: bool = True,
        api_key: str | None = None,
        given_secret: str | None = None,
        **settings: Any,
    ) -> None:
        uid = next(uid_counter)
        key = api_key or demo_api_key(label)
        secret = demo_secret(label)
        if register:
            sim.add_account(uid, **(account or {}))
            sim.add_key(key, uid=uid, secret=secret, **settings)
        demo.append(DemoKey("binance", label, key, given_secret or secret, scopes, status, codes))

    # Binance shows no key its whitelist: with the stack's other egress IPs, the restricted keys list them all.
    whitelisted = {"ip_whitelist": (egress_ip, *other_egress_ips)}
    hmac_key("healthy", ("spot", "futures"), "healthy", (), enable_futures=True, **whitelisted)
    hmac_key(
        "withdraw-enabled",
        ("spot",),
        "degraded",
        ("withdraw_enabled",),
        enable_withdrawals=True,
        **whitelisted,
    )
    hmac_key("no-ip-restriction", ("spot",), "degraded", ("no_ip_restriction",))
    hmac_key(
        "trading-expiring",
        ("spot",),
        "degraded",
        ("no_ip_restriction", "trading_permission_expiring"),
        create_time_ms=now - 20 * DAY_MS,
    )
    hmac_key(
        "trading-expired",
        ("spot",),
        "failing",
        ("no_ip_restriction", "trading_permission_expired"),
        create_time_ms=now - 40 * DAY_MS,
    )
    hmac_key("ip-not-whitelisted", ("spot",), "failing", ("key_rejected",), ip_whitelist=(other_ip,))
    hmac_key("unknown-key", ("spot",), "failing", ("key_rejected",), register=False)
    hmac_key("malformed-key", ("spot",), "failing", ("invalid_api_key",), register=False, api_key="not-a-binance-key")
    hmac_key(
        "wrong-secret",
        ("spot",),
        "failing",
        ("invalid_secret",),
        given_secret=demo_secret("not-the-secret"),
        **whitelisted,
    )
    hmac_key("spot-not-enabled", ("spot",), "failing", ("scope_not_permitted",), enable_spot=False, **whitelisted)
    hmac_key("futures-not-enabled", ("spot", "futures"), "failing", ("scope_not_permitted",), **whitelisted)
    hmac_key(
        "futures-account-not-opened",
        ("futures",),
        "failing",
        ("scope_not_permitted",),
        account={"futures_opened_ms": None},
        enable_futures=True,
        **whitelisted,
    )
    hmac_key(
        "key-older-than-futures-account",
        ("futures",),
        "failing",
        ("scope_not_permitted",),
        account={"futures_opened_ms": now - 5 * DAY_MS},
        create_time_ms=now - 10 * DAY_MS,
        enable_futures=True,
        **whitelisted,
    )
    hmac_key(
        "futures-trading-disabled",
        ("futures",),
        "failing",
        ("account_restricted",),
        account={"futures_can_trade": False},
        enable_futures=True,
        **whitelisted,
    )
    hmac_key("keys-locked", ("spot",), "failing", ("account_restricted",), account={"keys_locked": True}, **whitelisted)

    for label, key_type, private_key, given in (
        ("healthy-ed25519", "ed25519", demo_ed25519_private_key("healthy-ed25519"), None),
        ("healthy-rsa", "rsa", rsa.generate_private_key(public_exponent=65537, key_size=2048), None),
        (
            "wrong-private-key",
            "ed25519",
            demo_ed25519_private_key("wrong-private-key"),
            demo_ed25519_private_key("someone-else"),
        ),
    ):
        uid = next(uid_counter)
        api_key = demo_api_key(label)
        sim.add_account(uid)
        sim.add_key(
            api_key,
            uid=uid,
            key_type=key_type,
            public_key_pem=public_pem(private_key),
            enable_futures=True,
            **whitelisted,
        )
        wrong = given is not None
        demo.append(
            DemoKey(
                "binance",
                label,
                api_key,
                private_pem(given if wrong else private_key),
                ("spot", "futures"),
                "failing" if wrong else "healthy",
                ("invalid_secret",) if wrong else (),
                key_type=key_type,
            )
        )
    return demo


#: The simulator class of this exchange (see simulators/__init__.py).
SIMULATOR = BinanceSimulator
