"""Binance: how keyhealth checks a key (facts: docs/exchanges.md section 1 and 5.1).

One signed `GET /sapi/v1/account/apiRestrictions` (weight 1 per IP) says what the key may
do. Futures are confirmed on `GET {futures}/fapi/v1/accountConfig` (weight 5) because a key
created before the futures account was opened reports nothing useful on /sapi yet is
refused on /fapi. `GET /api/v3/account` (weight 20) gives the account's `uid`, only when
the caller asks to identify the account.

Binance answers -2015 "Invalid API-key, IP, or permissions for action." for an unknown
key, a non-whitelisted IP and a missing permission alike (section 1.3), and never reveals
a key's IP list: the report says what could be the cause and leaves `ip_whitelist` None.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode

# cryptography is imported where an Ed25519 or RSA key is used, not here: most keys are HMAC,
# and every handler imports this module for its SPEC (cold start).
from keyhealth.domain.credentials import Credentials, KeyType
from keyhealth.domain.exchange import BaseUrl, CheckerContext, ExchangeSpec, ExchangeUi, KeyRules
from keyhealth.domain.http import HttpRequest, HttpResponse, HttpTransport, retry_after_seconds
from keyhealth.domain.model import FindingCode, Permissions, PlannedEgressIp, Scope
from keyhealth.domain.ratelimits import Pool, RatePlan
from keyhealth.exchanges.base import (
    CheckAborted,
    ExchangeAdapter,
    ExchangeError,
    ReportDraft,
)

NAME = "binance"
PRODUCTION_BASE_URL = "https://api.binance.com"
PRODUCTION_FUTURES_BASE_URL = "https://fapi.binance.com"

API_RESTRICTIONS_PATH = "/sapi/v1/account/apiRestrictions"
ACCOUNT_PATH = "/api/v3/account"
FUTURES_ACCOUNT_CONFIG_PATH = "/fapi/v1/accountConfig"
SERVER_TIME_PATH = "/api/v3/time"

# --------------------------------------------------------------------------- rate budget
# exchanges.md 1.4: the /api, /sapi and /fapi budgets are separate; every /sapi endpoint
# limited by IP has its own 12,000 per minute. Pools are named `api`, `sapi:<path>`, `fapi`.
#: (weight, seconds) each egress IP may spend per pool.
IP_LIMITS: dict[str, tuple[int, int]] = {
    "api": (6000, 60),
    f"sapi:{API_RESTRICTIONS_PATH}": (12000, 60),
    "fapi": (2400, 60),
}
# Per-UID limits (180,000 per minute per /sapi endpoint limited by UID) are not budgeted: none
# of the endpoints a check calls is UID-limited (apiRestrictions is Weight(IP) 1).
# Weights (exchanges.md 1.4): apiRestrictions 1, futures accountConfig 5 (bind and verify with the
# futures scope), /api/v3/account 20 (bind: the account id), /api/v3/time 1 (a clock resync).


def _binance_weights(path: str) -> list[tuple[str, int]]:
    if path == API_RESTRICTIONS_PATH:
        return [(f"sapi:{API_RESTRICTIONS_PATH}", 1)]
    if path == ACCOUNT_PATH:
        return [("api", 20)]
    if path.startswith("/fapi/"):
        return [("fapi", 5 if path == FUTURES_ACCOUNT_CONFIG_PATH else 1)]
    return [("api", 1)]  # /api/v3/time and anything else on the spot API


#: The uniform view of the limits above for the audit's shared budget (keyhealth.domain.ratelimits).
RATE_PLAN = RatePlan(
    exchange=NAME,
    pools=tuple(Pool(name, limit, window) for name, (limit, window) in IP_LIMITS.items()),
    weights=_binance_weights,
    audit_check_paths=(API_RESTRICTIONS_PATH,),
    # Binance always sends Retry-After with 429/418; this is for a bare 5xx-style throttle.
    default_backoff_seconds=5.0,
)


# --------------------------------------------------------------------------- error table
#: Binance error code (whatever the HTTP status) -> finding. exchanges.md 1.3.
ERROR_TABLE: dict[int, FindingCode] = {
    -2014: FindingCode.INVALID_API_KEY,  # "API-key format invalid."
    -2008: FindingCode.INVALID_API_KEY,  # "Invalid Api-Key ID" (undocumented, ccxt)
    -2015: FindingCode.KEY_REJECTED,  # unknown key, IP not whitelisted, or missing permission: one code
    -1022: FindingCode.INVALID_SECRET,  # "Signature for this request is not valid."
    -1021: FindingCode.CLOCK_SKEW,  # outside recvWindow or 1000 ms ahead; base resyncs and retries once
    -2017: FindingCode.ACCOUNT_RESTRICTED,  # "API Keys are locked on this account."
    -1002: FindingCode.KEY_REJECTED,  # "You are not authorized to execute this request."
    -1099: FindingCode.KEY_REJECTED,  # "Not found, authenticated, or authorized" (sapi)
    -1003: FindingCode.RATE_LIMITED,  # "Too much request weight used ..." (normally with HTTP 429/418)
    1: FindingCode.EXCHANGE_UNAVAILABLE,  # {"code":1,"msg":"System is under maintenance."}
    -1001: FindingCode.EXCHANGE_UNAVAILABLE,  # internal error
    -1007: FindingCode.EXCHANGE_UNAVAILABLE,  # backend timeout: status unknown
    -1008: FindingCode.EXCHANGE_UNAVAILABLE,  # server overloaded
}
#: HTTP statuses whose body carries no Binance code. 418/429/451/5xx are handled in base.
HTTP_STATUS_TABLE: dict[int, FindingCode] = {
    403: FindingCode.EGRESS_BLOCKED,  # WAF block (rest-api.md): our egress IP, not the key
}
# On apiRestrictions an existing key can always read, so -2015 there cannot mean a missing
# permission: the key is unknown or the egress IP is not on its list.
_REJECTED_ON_RESTRICTIONS = (FindingCode.INVALID_API_KEY, FindingCode.IP_NOT_WHITELISTED)

EXPIRY_WARNING = timedelta(days=14)

_FUTURES_DISABLED = (
    "Binance reports 'Enable Futures' off; keys created before the futures account was opened "
    "cannot use futures and must be recreated."
)
_FUTURES_REFUSED = (
    "Binance's futures API refuses this key: the futures account is not opened, or the key was "
    "created before it was (such keys must be recreated), or futures are not enabled on the key."
)
_FUTURES_CANNOT_TRADE = "Binance reports trading disabled on the futures account (canTrade false)."


# --------------------------------------------------------------------------- signing
class SigningKeyError(ValueError):
    """The private key cannot be used for the key type. Never carries the key itself."""


def hmac_signature(secret: str, payload: str) -> str:
    """HMAC keys: lowercase hex of HMAC-SHA256(secret, payload) (exchanges.md 1.2)."""
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()


def _load_private_key(pem: str) -> Any:
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization

    try:
        return serialization.load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        # cryptography's message may quote the input; say only what went wrong.
        raise SigningKeyError("the private key is not an unencrypted PKCS#8 PEM key") from None


def ed25519_signature(private_key_pem: str, payload: bytes) -> str:
    """Ed25519 keys: base64 of the Ed25519 signature of the payload bytes (not yet URL-encoded)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = _load_private_key(private_key_pem)
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError("the private key is not an Ed25519 key")
    return base64.b64encode(key.sign(payload)).decode()


def rsa_signature(private_key_pem: str, payload: bytes) -> str:
    """RSA keys: base64 of RSASSA-PKCS1-v1_5 with SHA-256 over the payload (not yet URL-encoded)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

    key = _load_private_key(private_key_pem)
    if not isinstance(key, RSAPrivateKey):
        raise SigningKeyError("the private key is not an RSA key")
    return base64.b64encode(key.sign(payload, padding.PKCS1v15(), hashes.SHA256())).decode()


def make_signer(credentials: Credentials) -> Callable[[str], str]:
    """A function payload -> the `signature` parameter as it goes into the URL.

    The private key is parsed once per check, not per request. Asymmetric signatures are
    base64, which must be percent-encoded in a query string (`+`, `/`, `=`).
    """
    secret = credentials.api_secret.reveal()
    if credentials.key_type is KeyType.HMAC:
        return lambda payload: hmac_signature(secret, payload)
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

    key = _load_private_key(secret)
    if credentials.key_type is KeyType.ED25519:
        if not isinstance(key, Ed25519PrivateKey):
            raise SigningKeyError("the private key is not an Ed25519 key")
        return lambda payload: quote(base64.b64encode(key.sign(payload.encode())).decode(), safe="")
    if not isinstance(key, RSAPrivateKey):
        raise SigningKeyError("the private key is not an RSA key")
    return lambda payload: quote(
        base64.b64encode(key.sign(payload.encode(), padding.PKCS1v15(), hashes.SHA256())).decode(), safe=""
    )


def sign(credentials: Credentials, payload: str) -> str:
    """The `signature` parameter for `payload` (query string, then body, no separator)."""
    return make_signer(credentials)(payload)


# --------------------------------------------------------------------------- parsing
def _flag(payload: dict[str, Any], name: str) -> bool | None:
    value = payload.get(name)
    return value if isinstance(value, bool) else None


def _any_of(*flags: bool | None) -> bool | None:
    """True if any is True; False only if every one is known and False."""
    if any(flag is True for flag in flags):
        return True
    if any(flag is None for flag in flags):
        return None
    return False


def parse_permissions(restrictions: dict[str, Any]) -> Permissions:
    """apiRestrictions -> Permissions. Every field is optional (exchanges.md 1.1): missing is None."""
    return Permissions(
        read=_flag(restrictions, "enableReading"),
        spot=_flag(restrictions, "enableSpotAndMarginTrading"),
        futures=_flag(restrictions, "enableFutures"),
        margin=_flag(restrictions, "enableMargin"),
        withdraw=_flag(restrictions, "enableWithdrawals"),
        transfer=_any_of(
            _flag(restrictions, "enableInternalTransfer"),
            _flag(restrictions, "permitsUniversalTransfer"),
        ),
    )


def parse_trading_expiry(restrictions: dict[str, Any]) -> datetime | None:
    """`tradingAuthorityExpirationTime` (ms), absent when the trading permission does not lapse."""
    value = restrictions.get("tradingAuthorityExpirationTime")
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        return None
    return datetime.fromtimestamp(value / 1000, UTC)


# --------------------------------------------------------------------------- adapter
class BinanceAdapter(ExchangeAdapter):
    def __init__(
        self,
        *,
        transport: HttpTransport,
        base_url: str = PRODUCTION_BASE_URL,
        egress_ips: Sequence[str] = (),
        clock: Callable[[], float] = time.time,
        recv_window_ms: int = 5000,
        futures_base_url: str | None = None,
        planned_ips: Sequence[PlannedEgressIp] = (),
    ) -> None:
        super().__init__(
            transport=transport,
            base_url=base_url,
            egress_ips=egress_ips,
            clock=clock,
            recv_window_ms=recv_window_ms,
            planned_ips=planned_ips,
        )
        self.futures_base_url = (futures_base_url or base_url).rstrip("/")
        #: Weight this egress IP has used per pool in the current minute, as Binance last reported
        #: it (exchanges.md 1.4 and 5.1: track X-SAPI-USED-IP-WEIGHT-1M and X-MBX-USED-WEIGHT-1M).
        self.used_weight: dict[str, int] = {}

    # ------------------------------------------------------------------ the check
    def _inspect(
        self,
        credentials: Credentials,
        scopes: frozenset[Scope],
        draft: ReportDraft,
        identify_account: bool,
    ) -> None:
        signer = self._signer_or_abort(credentials)
        try:
            restrictions = self._signed_get(credentials, signer, self.base_url, API_RESTRICTIONS_PATH)
        except ExchangeError as error:
            raise self._abort_for(error, candidates=_REJECTED_ON_RESTRICTIONS) from None
        if not isinstance(restrictions, dict):
            raise self._abort(FindingCode.EXCHANGE_UNAVAILABLE, detail="Binance answered with an unexpected body.")

        draft.permissions = parse_permissions(restrictions)
        draft.ip_restricted = _flag(restrictions, "ipRestrict")
        draft.ip_whitelist = None  # Binance does not reveal the list
        draft.trading_expires_at = parse_trading_expiry(restrictions)

        # Judged below with the futures API's own answer, except in the audit's light check:
        # /fapi costs weight 5 from a 2400/min pool, so there the enableFutures flag decides.
        skip = {Scope.FUTURES} if draft.thorough else set()
        trading_expired = self._assess_trading_expiry(scopes, draft)
        if trading_expired:
            skip.add(Scope.SPOT)
        draft.assess_common(scopes, skip_scopes=skip)

        if Scope.FUTURES in scopes and draft.thorough:
            self._assess_futures(credentials, signer, draft)
        if identify_account:
            self._identify(credentials, signer, draft)

    def _assess_trading_expiry(self, scopes: frozenset[Scope], draft: ReportDraft) -> bool:
        """Unrestricted keys lose 'Enable Spot & Margin Trading' after 30 days (exchanges.md 1.5).

        The expiry only concerns spot and margin trading, so it matters only when spot is
        requested. Returns whether the permission has lapsed.
        """
        expires_at = draft.trading_expires_at
        if expires_at is None or Scope.SPOT not in scopes:
            return False
        now = datetime.fromtimestamp(self._clock(), UTC)
        if expires_at <= now:
            draft.add(FindingCode.TRADING_PERMISSION_EXPIRED, expires_at=expires_at)
            return True
        if expires_at - now <= EXPIRY_WARNING and draft.permissions.spot is not False:
            draft.add(FindingCode.TRADING_PERMISSION_EXPIRING, expires_at=expires_at)
        return False

    def _assess_futures(self, credentials: Credentials, signer: Callable[[str], str], draft: ReportDraft) -> None:
        if draft.permissions.futures is False:
            draft.add(FindingCode.SCOPE_NOT_PERMITTED, scopes=["futures"], detail=_FUTURES_DISABLED)
            return
        # enableFutures true (or absent) does not prove the key works on /fapi: confirm there.
        try:
            config = self._signed_get(credentials, signer, self.futures_base_url, FUTURES_ACCOUNT_CONFIG_PATH)
        except ExchangeError as error:
            if error.code is FindingCode.KEY_REJECTED:
                # /sapi just accepted this key from this IP, so -2015 here is about futures.
                draft.permissions = replace(draft.permissions, futures=False)
                draft.add(
                    FindingCode.SCOPE_NOT_PERMITTED,
                    scopes=["futures"],
                    detail=_FUTURES_REFUSED,
                    exchange_code=error.exchange_code,
                    exchange_message=error.exchange_message,
                )
                return
            raise self._abort_for(error) from None
        if isinstance(config, dict) and config.get("canTrade") is False:
            draft.add(FindingCode.ACCOUNT_RESTRICTED, detail=_FUTURES_CANNOT_TRADE)

    def _identify(self, credentials: Credentials, signer: Callable[[str], str], draft: ReportDraft) -> None:
        try:
            account = self._signed_get(
                credentials, signer, self.base_url, ACCOUNT_PATH, params=[("omitZeroBalances", "true")]
            )
        except ExchangeError as error:
            raise self._abort_for(error, candidates=(FindingCode.SCOPE_NOT_PERMITTED,)) from None
        uid = account.get("uid") if isinstance(account, dict) else None
        if isinstance(uid, int | str) and not isinstance(uid, bool):
            draft.account_id = str(uid)

    # ------------------------------------------------------------------ requests
    def _signer_or_abort(self, credentials: Credentials) -> Callable[[str], str]:
        # An HTTP header cannot carry such a key, and Binance keys are 64 alphanumerics.
        if not credentials.api_key or not credentials.api_key.isascii() or not credentials.api_key.isprintable():
            raise self._abort(FindingCode.INVALID_API_KEY, detail="The key contains characters no Binance key has.")
        try:
            return make_signer(credentials)
        except SigningKeyError as error:
            raise self._abort(FindingCode.INVALID_SECRET, detail=f"The private key cannot be used: {error}.") from None

    def _signed_get(
        self,
        credentials: Credentials,
        signer: Callable[[str], str],
        base_url: str,
        path: str,
        params: Sequence[tuple[str, str]] = (),
    ) -> Any:
        def build(timestamp_ms: int) -> HttpRequest:
            query = urlencode([*params, ("timestamp", str(timestamp_ms)), ("recvWindow", str(self.recv_window_ms))])
            # The signature covers the query exactly as sent and must come last (rest-api.md).
            return HttpRequest(
                "GET",
                f"{base_url}{path}?{query}&signature={signer(query)}",
                headers={"X-MBX-APIKEY": credentials.api_key},
            )

        return self._call(build)

    def _send(self, request: HttpRequest) -> HttpResponse:
        response = super()._send(request)
        self._note_used_weight(request.path, response)
        return response

    def _note_used_weight(self, path: str, response: HttpResponse) -> None:
        if path.startswith("/sapi/"):
            pool, header = f"sapi:{path}", "X-SAPI-USED-IP-WEIGHT-1M"
        else:
            pool, header = ("fapi" if path.startswith("/fapi/") else "api"), "X-MBX-USED-WEIGHT-1M"
        value = response.header(header)
        if value is not None and value.isdigit():
            self.used_weight[pool] = int(value)

    def _abort_for(self, error: ExchangeError, *, candidates: Sequence[FindingCode] = ()) -> CheckAborted:
        detail = None
        if error.exchange_code not in ERROR_TABLE and error.http_status not in HTTP_STATUS_TABLE:
            detail = f"Binance answered with an unexpected error (HTTP {error.http_status})."
        elif error.code is FindingCode.KEY_REJECTED:
            return self._abort_with(error, candidates=candidates or _REJECTED_ON_RESTRICTIONS)
        elif error.code is FindingCode.EGRESS_BLOCKED:
            detail = "Binance's firewall refused the request (HTTP 403)."
        return self._abort_with(error, detail=detail)

    def _raise_for_error(self, response: HttpResponse) -> Any:
        status = response.status_code
        try:
            body = response.json()
        except ValueError:
            body = None
        code = body.get("code") if isinstance(body, dict) else None
        message = body.get("msg") if isinstance(body, dict) else None
        # Binance's own error code (an int other than 0 and 200), None when the body carries none
        error_code = code if isinstance(code, int) and not isinstance(code, bool) and code not in (0, 200) else None
        if 200 <= status < 300 and body is not None and error_code is None:
            return body
        if error_code is not None:
            finding = ERROR_TABLE.get(error_code, FindingCode.EXCHANGE_UNAVAILABLE)
        else:
            finding = HTTP_STATUS_TABLE.get(status, FindingCode.EXCHANGE_UNAVAILABLE)
        raise ExchangeError(
            finding,
            exchange_code=error_code,
            exchange_message=message if isinstance(message, str) else None,
            http_status=status,
            retry_after=retry_after_seconds(response.header("Retry-After"), self._clock()),
        )

    def _server_time_ms(self) -> int:
        response = self._send(HttpRequest("GET", f"{self.base_url}{SERVER_TIME_PATH}"))
        try:
            payload = self._raise_for_error(response)
            return int(payload["serverTime"])
        except ExchangeError as error:
            raise self._abort_for(error) from None
        except (KeyError, TypeError, ValueError):
            raise self._abort(
                FindingCode.EXCHANGE_UNAVAILABLE, detail="Binance's time endpoint answered unexpectedly."
            ) from None


# --------------------------------------------------------------------------- the spec
def _build(context: CheckerContext) -> BinanceAdapter:
    return BinanceAdapter(
        transport=context.transport,
        base_url=context.urls["BINANCE_BASE_URL"],
        futures_base_url=context.urls["BINANCE_FUTURES_BASE_URL"],
        egress_ips=context.egress_ips,
        planned_ips=context.planned_ips,
        clock=context.clock,
    )


#: Everything the rest of keyhealth knows about Binance (keyhealth.exchanges.registry lists it).
SPEC = ExchangeSpec(
    name=NAME,
    ui=ExchangeUi(
        name="Binance",
        api_page="Account, API Management",
        whitelist="Edit restrictions, 'Restrict access to trusted IPs only'",
        spot="Enable Spot & Margin Trading",
        futures="Enable Futures",
        withdraw="Enable Withdrawals",
        read="Enable Reading",
    ),
    # API keys are 64 letters and digits; HMAC, Ed25519 and RSA keys exist (exchanges.md 1.2).
    keys=KeyRules(
        api_key=re.compile(r"^[A-Za-z0-9]{64}$"),
        key_types=frozenset({KeyType.HMAC, KeyType.ED25519, KeyType.RSA}),
    ),
    base_urls=(
        BaseUrl("BINANCE_BASE_URL", PRODUCTION_BASE_URL),
        BaseUrl("BINANCE_FUTURES_BASE_URL", PRODUCTION_FUTURES_BASE_URL),
    ),
    rate_plan=RATE_PLAN,
    build_checker=_build,
)
BinanceAdapter.spec = SPEC
