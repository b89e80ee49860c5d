"""A Bitget simulator: the endpoints a key check uses, answering as Bitget does.

Written from exchanges.md §2 independently of `keyhealth` (it imports nothing from it), so
that it checks the adapter rather than mirroring it.

Endpoints: `GET /api/v2/public/time`, `GET /api/v2/spot/account/info` (classic accounts),
`GET /api/v3/account/info` (Unified Trading Accounts).

A signed request is checked in this order, each failure answering HTTP 400 with
`{"code": "<code>", "msg": ..., "requestTime": <ms>, "data": null}` (exchanges.md §2.3;
HTTP 400 is what was observed for 40037, and is assumed for the other codes):
1. `ACCESS-KEY` present (40001), shaped like a Bitget key (40006), known (40037);
2. `ACCESS-TIMESTAMP` a number (40005) within 30 s of the server clock (40008; the exact
   tolerance is not published, third parties say 30 s);
3. `ACCESS-SIGN` present (40003) and valid over the exact bytes received (40009):
   timestamp + method + path + "?" + raw query + body; HMAC-SHA256 or SHA256withRSA, base64;
4. `ACCESS-PASSPHRASE` present (40011) and right (40012);
5. the TCP peer address on the key's whitelist, when it has one (40018);
6. the account not frozen (40024);
7. account mode: a UTA account on the classic endpoint gets 40085; a classic account on the
   v3 endpoint gets 40084 (not documented: chosen as the mirror image of 40085);
8. the classic endpoint needs a spot read permission (some doc versions say "SPOT read or
   SPOT read/write permission needed"): 40014 otherwise; the v3 endpoint needs none;
9. the per-UID limit of that endpoint (1/s classic, 5/s v3): HTTP 429 `{"code":"429"}`.
Before all of that every request counts against the per-IP limit (6000/min); breaching it
locks the IP out for 5 minutes (§2.4), answered with the same 429. Bitget sends no 418 and
documents no rate-limit headers, so none are sent.

Faults: MAINTENANCE answers HTTP 503 with code 40015 "System is abnormal, please try again
later" (a documented system code; its HTTP status is not documented, 5xx is assumed);
UNAVAILABLE a 502 HTML page from the front; GEO_BLOCKED HTTP 451; RESET drops the connection.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import itertools
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from simulators.base import DemoKey, ExchangeSimulator, Fault, FixedWindow, SimRequest, SimResponse

TIME_PATH = "/api/v2/public/time"
CLASSIC_INFO_PATH = "/api/v2/spot/account/info"
UNIFIED_INFO_PATH = "/api/v3/account/info"

API_KEY_PATTERN = re.compile(r"bg_[0-9a-f]{32}")  # what real Bitget keys look like
TIMESTAMP_TOLERANCE_MS = 30_000

UNIFIED_MODE_MESSAGE = "You are in Unified Account mode, and the Classic Account API is not supported at this time"
CLASSIC_MODE_MESSAGE = "You are in Classic Account mode, and the Unified Account API is not supported at this time"

# The classic endpoint's permission: any spot-read-capable authority, in either vocabulary.
SPOT_READ_AUTHORITIES = frozenset({"stor", "stow", "readonly", "trade"})

FULL_TRADE = ("stor", "stow", "coor", "coow", "cpor", "cpow")


@dataclass
class BitgetAccount:
    user_id: str
    parent_id: str | None = None  # the main account's userId, for a sub-account
    unified: bool = False  # Unified Trading Account mode: only the v3 API answers
    frozen: bool = False
    registered_ms: int = 1_690_000_000_000


@dataclass
class BitgetKey:
    api_key: str
    account: BitgetAccount
    passphrase: str
    secret: str | None = None  # HMAC keys
    rsa_public_key: rsa.RSAPublicKey | None = None  # RSA keys (Bitget holds only the public half)
    authorities: tuple[str, ...] = ()  # v2 vocabulary ("stow", ...) or the legacy one ("trade", "readonly")
    uta_permissions: tuple[str, ...] = ()  # v3 vocabulary ("uta_mgt", "uta_trade", "withdraw", ...)
    ips: tuple[str, ...] = ()


def _uta_permissions_for(authorities: Iterable[str]) -> tuple[str, ...]:
    """The v3 permissions a key with these v2 authorities would show after switching to UTA."""
    codes = set(authorities)
    permissions = ["uta_mgt"]
    if codes & {"stow", "coow", "smow", "trade"}:
        permissions.append("uta_trade")
    if "wwow" in codes:
        permissions.append("withdraw")
    return tuple(permissions)


@dataclass
class _Reject(Exception):
    code: str
    msg: str
    status: int = 400
    headers: dict[str, str] = field(default_factory=dict)


class BitgetSimulator(ExchangeSimulator):
    name = "bitget"

    def __init__(
        self,
        *,
        ip_requests_per_minute: int = 6000,
        ip_lockout_seconds: float = 300.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.accounts: dict[str, BitgetAccount] = {}
        self.keys: dict[str, BitgetKey] = {}
        self._ip_window = FixedWindow(ip_requests_per_minute, self.window(60), self.clock)
        self._ip_lockout_seconds = ip_lockout_seconds
        self._locked_until: dict[str, float] = {}
        self._uid_windows = {
            CLASSIC_INFO_PATH: FixedWindow(1, self.window(1), self.clock),
            UNIFIED_INFO_PATH: FixedWindow(5, self.window(1), self.clock),
        }
        self._ids = itertools.count(6_100_000_001)
        self._lock = threading.Lock()

    # ------------------------------------------------------------ set-up
    def add_account(
        self,
        user_id: str | None = None,
        *,
        parent_id: str | None = None,
        unified: bool = False,
        frozen: bool = False,
    ) -> BitgetAccount:
        with self._lock:
            account = BitgetAccount(user_id or str(next(self._ids)), parent_id, unified, frozen)
            self.accounts[account.user_id] = account
        return account

    def new_api_key(self) -> str:
        with self._rng_lock:
            return "bg_" + "".join(self._rng.choice("0123456789abcdef") for _ in range(32))

    def add_key(
        self,
        account: BitgetAccount,
        *,
        passphrase: str,
        api_key: str | None = None,
        secret: str | None = None,
        rsa_public_key_pem: str | None = None,
        authorities: Iterable[str] = FULL_TRADE,
        uta_permissions: Iterable[str] | None = None,
        ips: Iterable[str] = (),
    ) -> BitgetKey:
        """Register a key: give `secret` (HMAC) or `rsa_public_key_pem` (RSA)."""
        if (secret is None) == (rsa_public_key_pem is None):
            raise ValueError("give exactly one of secret and rsa_public_key_pem")
        public_key = None
        if rsa_public_key_pem is not None:
            loaded = serialization.load_pem_public_key(rsa_public_key_pem.encode())
            if not isinstance(loaded, rsa.RSAPublicKey):
                raise ValueError("not an RSA public key")
            public_key = loaded
        authorities = tuple(authorities)
        if uta_permissions is None:
            uta_permissions = _uta_permissions_for(authorities)
        key = BitgetKey(
            api_key=api_key or self.new_api_key(),
            account=account,
            passphrase=passphrase,
            secret=secret,
            rsa_public_key=public_key,
            authorities=authorities,
            uta_permissions=tuple(uta_permissions),
            ips=tuple(ips),
        )
        with self._lock:
            self.keys[key.api_key] = key
        return key

    # ------------------------------------------------------------ answers
    def _answer(self, data: Any) -> SimResponse:
        body = {"code": "00000", "msg": "success", "requestTime": self.server_time_ms(), "data": data}
        return SimResponse(200, body)

    def _error(self, reject: _Reject) -> SimResponse:
        body = {"code": reject.code, "msg": reject.msg, "requestTime": self.server_time_ms(), "data": None}
        return SimResponse(reject.status, body, reject.headers)

    def handle(self, request: SimRequest) -> SimResponse:
        fault = self._fault_answer()
        if fault is not None:
            return fault
        try:
            self._spend_ip(request.peer_ip)
            if request.method == "GET" and request.path == TIME_PATH:
                return self._answer({"serverTime": str(self.server_time_ms())})
            if request.method == "GET" and request.path in (CLASSIC_INFO_PATH, UNIFIED_INFO_PATH):
                key = self._authenticate(request)
                return self._account_info(request.path, key)
            raise _Reject("40404", "Request URL NOT FOUND", status=404)
        except _Reject as reject:
            if reject.status == 429:
                self.stats[f"429:{request.peer_ip}"] += 1
            return self._error(reject)

    def _fault_answer(self) -> SimResponse | None:
        if self.fault is Fault.MAINTENANCE:
            return self._error(_Reject("40015", "System is abnormal, please try again later", status=503))
        if self.fault is Fault.UNAVAILABLE:
            return SimResponse(502, b"<html><body><h1>502 Bad Gateway</h1></body></html>")
        if self.fault is Fault.GEO_BLOCKED:
            return SimResponse(451, b"<html><body>Unavailable For Legal Reasons</body></html>")
        return None

    def _spend_ip(self, ip: str) -> None:
        """6000 requests/IP/min over all endpoints; a breach locks the IP for 5 minutes (§2.4)."""
        now = self.clock()
        with self._lock:
            locked = self._locked_until.get(ip, 0.0) > now
        if not locked:
            allowed, _ = self._ip_window.spend(ip)
            if allowed:
                return
            with self._lock:
                self._locked_until[ip] = now + self.window(self._ip_lockout_seconds)
            self.stats["ip_lockouts"] += 1
        raise _Reject("429", "Too Many Requests", status=429)

    def _authenticate(self, request: SimRequest) -> BitgetKey:
        api_key = request.header("ACCESS-KEY")
        if not api_key:
            raise _Reject("40001", "ACCESS_KEY cannot be empty")
        if not API_KEY_PATTERN.fullmatch(api_key):
            raise _Reject("40006", "Invalid ACCESS_KEY")
        key = self.keys.get(api_key)
        if key is None:
            raise _Reject("40037", "Apikey does not exist")

        timestamp = request.header("ACCESS-TIMESTAMP") or ""
        if not timestamp.isdigit():
            raise _Reject("40005", "Invalid ACCESS_TIMESTAMP")
        if abs(self.server_time_ms() - int(timestamp)) > TIMESTAMP_TOLERANCE_MS:
            raise _Reject("40008", "Request timestamp expired")

        signature = request.header("ACCESS-SIGN")
        if not signature:
            raise _Reject("40003", "Signature cannot be empty")
        signed = timestamp + request.method + request.path + ("?" + request.query if request.query else "")
        if not self._signature_valid(key, signed.encode() + request.body, signature):
            raise _Reject("40009", "sign signature error")

        passphrase = request.header("ACCESS-PASSPHRASE")
        if not passphrase:
            raise _Reject("40011", "ACCESS_PASSPHRASE cannot be empty")
        if not hmac.compare_digest(passphrase.encode(), key.passphrase.encode()):
            raise _Reject("40012", "apikey/password is incorrect")

        if key.ips and request.peer_ip not in key.ips:
            raise _Reject("40018", "Invalid IP")
        if key.account.frozen:
            raise _Reject("40024", "Account has been frozen")
        return key

    @staticmethod
    def _signature_valid(key: BitgetKey, message: bytes, signature: str) -> bool:
        if key.secret is not None:
            expected = base64.b64encode(hmac.new(key.secret.encode(), message, hashlib.sha256).digest()).decode()
            return hmac.compare_digest(expected.encode(), signature.encode())
        assert key.rsa_public_key is not None
        try:
            key.rsa_public_key.verify(
                base64.b64decode(signature, validate=True), message, padding.PKCS1v15(), hashes.SHA256()
            )
        except (InvalidSignature, binascii.Error, ValueError):
            return False
        return True

    def _account_info(self, path: str, key: BitgetKey) -> SimResponse:
        account = key.account
        if path == CLASSIC_INFO_PATH:
            if account.unified:
                raise _Reject("40085", UNIFIED_MODE_MESSAGE)
            if not SPOT_READ_AUTHORITIES & set(key.authorities):
                raise _Reject("40014", "Incorrect permissions, need spot read permissions")
        elif not account.unified:
            raise _Reject("40084", CLASSIC_MODE_MESSAGE)
        allowed, _ = self._uid_windows[path].spend(account.user_id)
        if not allowed:
            self.stats[f"429:uid:{account.user_id}"] += 1
            raise _Reject("429", "Too Many Requests", status=429)
        common = {"inviterId": "", "channelCode": "", "channel": "", "ips": ",".join(key.ips)}
        if path == CLASSIC_INFO_PATH:
            return self._answer(
                {
                    "userId": account.user_id,
                    **common,
                    "authorities": list(key.authorities),
                    # The doc example types parentId as a number; for a main account it is
                    # assumed to be its own userId (exchanges.md §2.1 A marks this [U]).
                    "parentId": int(account.parent_id or account.user_id),
                    "traderType": "not_trader",
                    "regisTime": str(account.registered_ms),
                }
            )
        writes = {"uta_trade", "withdraw", "copy_futures_order"} & set(key.uta_permissions)
        return self._answer(
            {
                "uid": account.user_id,
                **common,
                "parentId": account.parent_id or "",  # "only has a value" for a sub-account (§2.1 B)
                "permType": "read-and-write" if writes else "read-only",
                "permissions": list(key.uta_permissions),
                "regisTime": str(account.registered_ms),
            }
        )


# ---------------------------------------------------------------- demo keys
def _demo_api_key(label: str) -> str:
    return "bg_" + hashlib.sha256(f"bitget-demo:{label}".encode()).hexdigest()[:32]


def _demo_secret(label: str) -> str:
    return hashlib.sha256(f"bitget-demo-secret:{label}".encode()).hexdigest()  # 64 hex, like real secrets


DEMO_PASSPHRASE = "DemoPass2024"


def seed_demo(
    sim: BitgetSimulator,
    egress_ip: str,
    *,
    other_egress_ips: Sequence[str] = (),
    planned_ips: Sequence[str] = (),
) -> list[DemoKey]:
    """One account per demo key (so the 1/s per-UID limit never trips the demo), covering
    every per-key outcome that applies to Bitget when checked from `egress_ip`. With the stack's
    `other_egress_ips` (and announced `planned_ips`) the restricted keys list them all, and a key
    listing only `egress_ip` (or lacking the planned ones) shows the whitelist findings."""
    demos: list[DemoKey] = []
    other_ip = "203.0.113.77"

    def seed(
        label: str,
        expected_status: str,
        expected_codes: tuple[str, ...],
        *,
        scopes: tuple[str, ...] = ("spot", "futures"),
        authorities: tuple[str, ...] = FULL_TRADE,
        ips: tuple[str, ...] | None = None,
        unified: bool = False,
        frozen: bool = False,
        register: bool = True,
        tamper: Callable[[str], str] | None = None,
        passphrase: str | None = None,
    ) -> None:
        api_key, secret = _demo_api_key(label), _demo_secret(label)
        if register:
            account = sim.add_account(unified=unified, frozen=frozen)
            sim.add_key(
                account,
                api_key=api_key,
                secret=secret,
                passphrase=DEMO_PASSPHRASE,
                authorities=authorities,
                ips=(egress_ip, *other_egress_ips, *planned_ips) if ips is None else ips,
            )
        demos.append(
            DemoKey(
                exchange="bitget",
                label=label,
                api_key=api_key,
                api_secret=tamper(secret) if tamper else secret,
                scopes=scopes,
                expected_status=expected_status,
                expected_codes=expected_codes,
                passphrase=passphrase or DEMO_PASSPHRASE,
            )
        )

    seed("healthy", "healthy", ())
    if other_egress_ips:
        seed("one-egress-ip-of-several", "failing", ("ip_whitelist_incomplete",), ips=(egress_ip, *planned_ips))
    if planned_ips:
        seed("lacks-planned-ip", "degraded", ("planned_ip_missing",), ips=(egress_ip, *other_egress_ips))
    seed("uta-healthy", "healthy", (), unified=True)
    seed("legacy-trade", "healthy", (), authorities=("trade", "readonly"))
    seed("withdraw-enabled", "degraded", ("withdraw_enabled",), authorities=(*FULL_TRADE, "wwow"))
    seed("no-ip-restriction", "degraded", ("no_ip_restriction",), ips=())
    seed(
        "uta-open-withdraw",
        "degraded",
        ("no_ip_restriction", "withdraw_enabled"),
        authorities=(*FULL_TRADE, "wwow"),
        ips=(),
        unified=True,
    )
    seed("not-whitelisted", "failing", ("ip_not_whitelisted",), ips=(other_ip,))
    seed("wrong-secret", "failing", ("invalid_secret",), tamper=lambda s: s[:-4] + "0000")
    seed("wrong-passphrase", "failing", ("invalid_passphrase",), passphrase="WrongPass2024")
    seed("unknown-key", "failing", ("invalid_api_key",), register=False)
    seed("spot-only", "failing", ("scope_not_permitted",), authorities=("stor", "stow"))
    seed("read-only", "failing", ("scope_not_permitted",), scopes=("spot",), authorities=("stor", "coor"))
    seed("no-spot-read", "failing", ("scope_not_permitted",), scopes=("futures",), authorities=("coor", "coow"))
    seed("frozen-account", "failing", ("account_restricted",), frozen=True)
    return demos


#: The simulator class of this exchange (see simulators/__init__.py).
SIMULATOR = BitgetSimulator
