"""Bitget: is this API key usable, and what may it do?

One signed call answers almost everything (exchanges.md §2.1, §5 item 2):
- classic accounts: `GET /api/v2/spot/account/info` returns the key's `ips` whitelist and
  its `authorities`;
- Unified Trading Accounts (UTA) get `40085` from that classic endpoint and are asked
  `GET /api/v3/account/info` instead, which returns `ips` and `permissions`.
Nothing is remembered per key between checks: a user may switch account mode at any time,
so each check starts with the classic endpoint and decides again.

Signing (exchanges.md §2.2): base64 of HMAC-SHA256 (or SHA256withRSA, PKCS#1 v1.5, for RSA
keys) over `timestamp + METHOD + requestPath + ("?" + query) + body`; the passphrase is sent
raw in `ACCESS-PASSPHRASE`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Callable, Collection, Mapping
from typing import TYPE_CHECKING, Any

from keyhealth.domain.credentials import Credentials, KeyType
from keyhealth.domain.exchange import BaseUrl, CheckerContext, ExchangeSpec, ExchangeUi, KeyRules
from keyhealth.domain.http import HttpRequest, HttpResponse
from keyhealth.domain.model import FindingCode, Permissions, Scope
from keyhealth.domain.ratelimits import Pool, RatePlan
from keyhealth.exchanges.base import CheckAborted, ExchangeAdapter, ExchangeError, ReportDraft

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import rsa

NAME = "bitget"
PRODUCTION_BASE_URL = "https://api.bitget.com"
ACCOUNT_INFO_CLASSIC = "/api/v2/spot/account/info"
ACCOUNT_INFO_UNIFIED = "/api/v3/account/info"
SERVER_TIME = "/api/v2/public/time"

SUCCESS_CODE = "00000"
# "You are in Unified Account mode, and the Classic Account API is not supported at this time"
# (exchanges.md §2.1 B, ccxt's exceptions table): the cue to ask the v3 endpoint instead.
UNIFIED_ACCOUNT_MODE_CODE = "40085"

# ---------------------------------------------------------------- rate budget
#: Bitget's per-IP limit (exchanges.md §2.4): 6000 requests per IP per minute over all
#: endpoints together; breaching it locks the IP for 5 minutes (since 2025-08-11).
IP_LIMITS: Mapping[str, int] = {"requests_per_minute": 6000, "lockout_seconds": 300}

# Per-UID limits (exchanges.md §2.1, §2.4): classic account info 1/s, v3 account info 5/s, each
# endpoint its own counter; not budgeted (a run checks each UID about once). A classic account
# costs one request; a UTA account two (the classic call answered 40085, then v3): whether Bitget
# counts the refused classic call against the UID is not documented, so the audit settles both.
#: The uniform view of the limits above for the audit's shared budget (keyhealth.domain.ratelimits):
#: every request counts once against the 6000/min per-IP limit.
RATE_PLAN = RatePlan(
    exchange=NAME,
    pools=(Pool("ip_requests", IP_LIMITS["requests_per_minute"], 60.0),),
    weights=lambda path: [("ip_requests", 1)],
    audit_check_paths=(ACCOUNT_INFO_CLASSIC,),
    # A bare 429 is usually the 1/s per-UID limit (our IP share stays under 6000/min); if it is
    # the IP lockout, doubling reaches its 5 minutes within a few strikes.
    default_backoff_seconds=2.0,
    max_backoff_seconds=float(IP_LIMITS["lockout_seconds"]),
)

# ---------------------------------------------------------------- error table
_C = FindingCode
#: Bitget error `code` -> finding (exchanges.md §2.3). Keyed by code alone: Bitget answers
#: most errors with HTTP 400 whatever they mean, and its 2025-10 notice says to match on the
#: code, not the message. HTTP 429/451/5xx never get here (the base class maps them); the
#: body code "429" is listed for a throttling answer that comes with another status.
ERROR_CODES: Mapping[str, FindingCode] = {
    "40001": _C.INVALID_API_KEY,  # ACCESS_KEY cannot be empty
    "40006": _C.INVALID_API_KEY,  # Invalid ACCESS_KEY
    "40037": _C.INVALID_API_KEY,  # Apikey does not exist
    "40099": _C.INVALID_API_KEY,  # a demo-trading key used on live (or reverse) [U]: this key is not known here
    "40009": _C.INVALID_SECRET,  # sign signature error
    "40011": _C.INVALID_PASSPHRASE,  # ACCESS_PASSPHRASE cannot be empty
    "40012": _C.INVALID_PASSPHRASE,  # apikey/password is incorrect
    "40036": _C.INVALID_PASSPHRASE,  # passphrase is error
    "40018": _C.IP_NOT_WHITELISTED,  # Invalid IP
    "40038": _C.IP_NOT_WHITELISTED,  # The current ip is not in the apikey ip whitelist
    "40014": _C.SCOPE_NOT_PERMITTED,  # Incorrect permissions, need {0} permissions
    "40025": _C.SCOPE_NOT_PERMITTED,  # The user does not have this permission
    "40005": _C.CLOCK_SKEW,  # Invalid ACCESS_TIMESTAMP
    "40008": _C.CLOCK_SKEW,  # Request timestamp expired
    "40078": _C.CLOCK_SKEW,  # outside ME receiveWindow
    "40079": _C.CLOCK_SKEW,  # receiveWindow timestamp must be less than 60s
    "40013": _C.ACCOUNT_RESTRICTED,  # User status is abnormal
    "40023": _C.ACCOUNT_RESTRICTED,  # API service has been restricted
    "40024": _C.ACCOUNT_RESTRICTED,  # Account has been frozen
    "40026": _C.ACCOUNT_RESTRICTED,  # User is disabled
    "40031": _C.ACCOUNT_RESTRICTED,  # account cancelled
    "429": _C.RATE_LIMITED,  # Too Many Requests
    # The official table calls 40010 "Request timed out" (ccxt maps it to an auth error):
    # we follow the official text and treat it as the exchange failing to answer.
    "40010": _C.EXCHANGE_UNAVAILABLE,
    "40015": _C.EXCHANGE_UNAVAILABLE,  # System is abnormal
    "45001": _C.EXCHANGE_UNAVAILABLE,  # Unknown error
    "40725": _C.EXCHANGE_UNAVAILABLE,  # service return an error
    "41114": _C.EXCHANGE_UNAVAILABLE,  # trading pair under maintenance
    "40844": _C.EXCHANGE_UNAVAILABLE,  # contract under temporary maintenance
    "45043": _C.EXCHANGE_UNAVAILABLE,  # suspended for settlement/maintenance
}
#: A code missing from the table says nothing we can pin on the key, so the check is
#: inconclusive (`unknown`) rather than `failing`: a binding is never failed on a guess.
UNKNOWN_ERROR_CODE = _C.EXCHANGE_UNAVAILABLE


# ---------------------------------------------------------------- signing
def prehash(timestamp_ms: int | str, method: str, request_path: str, query: str = "", body: str = "") -> str:
    """The string Bitget signs: `timestamp + METHOD + requestPath + ("?" + query) + body`.

    `query` must be exactly the bytes sent after `?` (exchanges.md §2.2: sign what you send).
    """
    return f"{timestamp_ms}{method.upper()}{request_path}{'?' + query if query else ''}{body}"


def sign_hmac(secret: str, message: str) -> str:
    return base64.b64encode(hmac.new(secret.encode(), message.encode(), hashlib.sha256).digest()).decode()


def load_rsa_private_key(pem: str) -> rsa.RSAPrivateKey:
    """Parse an RSA private key; raises ValueError with a text that never quotes the key."""
    # Imported here, not at the top: most keys are HMAC, and every handler imports this module
    # for its SPEC (cold start).
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    try:
        key = serialization.load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ValueError("not a PEM RSA private key without password") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("not an RSA private key")
    return key


def sign_rsa(private_key: rsa.RSAPrivateKey, message: str) -> str:
    """SHA256withRSA (PKCS#1 v1.5) over the pre-hash, base64 (the official SDK's signByRSA)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    return base64.b64encode(private_key.sign(message.encode(), padding.PKCS1v15(), hashes.SHA256())).decode()


Signer = Callable[[str], str]


def signer_for(credentials: Credentials) -> Signer:
    """A function from pre-hash to ACCESS-SIGN. Raises ValueError for a key Bitget cannot use."""
    if credentials.key_type is KeyType.HMAC:
        secret = credentials.api_secret
        return lambda message: sign_hmac(secret.reveal(), message)
    if credentials.key_type is KeyType.RSA:
        private_key = load_rsa_private_key(credentials.api_secret.reveal())
        return lambda message: sign_rsa(private_key, message)
    raise ValueError("Bitget keys are HMAC or RSA")


# ---------------------------------------------------------------- answers -> permissions
# v2 `authorities` codes (exchanges.md §2.1 A): "..or" read-only, "..ow" read-write.
_CLASSIC_CODES = frozenset(
    {
        "coor", "cpor", "stor", "smor", "ttor", "wtor", "taxr", "chor", "p2pr", "pllr",
        "coow", "cpow", "stow", "smow", "ttow", "wtow", "wwow", "chow", "p2pw", "p2p", "pllw", "taxw",
    }
)  # fmt: skip
# The docs' own example answer uses an older vocabulary, "trade" and "readonly" (§2.1 A).
_LEGACY_CODES = frozenset({"readonly", "trade"})


def parse_ips(value: Any) -> tuple[str, ...] | None:
    """`ips` is one comma-separated string (§2.1); empty or missing means no restriction.

    Any other shape is not what Bitget documents: None (the whitelist is unknown).
    """
    if value is None:
        return ()
    if not isinstance(value, str):
        return None
    return tuple(ip.strip() for ip in value.split(",") if ip.strip())


def classic_permissions(authorities: Collection[str]) -> Permissions:
    """Permissions from a v2 `authorities` list, in either vocabulary.

    - read: True, since the key just answered a read call.
    - spot: `stow` (spot trade read-write), or legacy `trade`.
    - futures: `coow` (futures orders read-write), or legacy `trade`. `cpow` (holdings) alone
      does not place orders, so it is not read as futures trading.
    - margin: `smow`; the legacy vocabulary has no margin code, so it cannot say (None).
    - withdraw: `wwow`. The v2 vocabulary would list it, so its absence there is False; the
      legacy vocabulary has no documented withdraw code, so its absence there is None.
    - transfer: `wtow` (wallet transfer read-write), likewise False only for the v2 vocabulary.
    With neither vocabulary recognised (an empty or unfamiliar list), only read is known.
    """
    codes = {str(a).strip().lower() for a in authorities}
    classic = bool(codes & _CLASSIC_CODES)
    legacy = bool(codes & _LEGACY_CODES)
    if not classic and not legacy:
        return Permissions(read=True)
    legacy_trade = "trade" in codes
    return Permissions(
        read=True,
        spot="stow" in codes or legacy_trade,
        futures="coow" in codes or legacy_trade,
        margin="smow" in codes if classic else None,
        withdraw=True if "wwow" in codes else (False if classic else None),
        transfer=True if "wtow" in codes else (False if classic else None),
    )


def unified_permissions(permissions: Collection[str]) -> Permissions:
    """Permissions from a v3 (UTA) `permissions` list (§2.1 B: uta_mgt, uta_trade, withdraw,
    copy_futures_position, copy_futures_order).

    - spot and futures: `uta_trade`; a UTA trades spot and futures from one account with one
      trade permission.
    - withdraw: `withdraw`, which this vocabulary lists, so its absence is False.
    - margin and transfer: no code in this vocabulary says, so None.
    """
    codes = {str(p).strip().lower() for p in permissions}
    trade = "uta_trade" in codes
    return Permissions(read=True, spot=trade, futures=trade, withdraw="withdraw" in codes)


class _UnifiedAccountMode(Exception):
    """The classic endpoint refused a UTA account (40085): ask the v3 endpoint."""


class BitgetAdapter(ExchangeAdapter):
    def __init__(self, *, locale: str = "en-US", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.locale = locale  # error messages in English whatever the account's language

    # ------------------------------------------------------------ the check
    def _inspect(
        self,
        credentials: Credentials,
        scopes: frozenset[Scope],
        draft: ReportDraft,
        identify_account: bool,
    ) -> None:
        try:
            sign = signer_for(credentials)
        except ValueError:
            raise self._abort(
                FindingCode.INVALID_SECRET, detail="The private key could not be read as an RSA key."
            ) from None
        try:
            try:
                data = self._call(lambda ts: self._signed_get(ACCOUNT_INFO_CLASSIC, credentials, sign, ts))
                account_id = self._read_classic(data, draft)
            except _UnifiedAccountMode:
                data = self._call(lambda ts: self._signed_get(ACCOUNT_INFO_UNIFIED, credentials, sign, ts))
                account_id = self._read_unified(data, draft)
        except ExchangeError as error:
            raise self._refused(error, draft) from None
        if identify_account:
            draft.account_id = account_id
        draft.assess_common(scopes)

    def _refused(self, error: ExchangeError, draft: ReportDraft) -> CheckAborted:
        """The finding for an error answer, recording what the error itself reveals."""
        if error.code is FindingCode.IP_NOT_WHITELISTED:
            # Bitget only sends 40018/40038 for a key that has a whitelist; which IPs it
            # holds stays unknown.
            draft.ip_restricted = True
        if error.code is FindingCode.SCOPE_NOT_PERMITTED:
            # The key-info call is read-only: a permission error there means the key cannot
            # even read (some doc versions: the classic endpoint needs Spot read).
            draft.permissions = Permissions(read=False)
            return self._abort_with(
                error, scopes=["read"], detail="Bitget's key check needs the Spot read (or Read-only) permission."
            )
        return self._abort_with(error)

    def _read_classic(self, data: Any, draft: ReportDraft) -> str | None:
        info = _answer_object(data)
        authorities = info.get("authorities")
        draft.permissions = classic_permissions(authorities if isinstance(authorities, list) else [])
        self._read_ips(info, draft)
        return _text(info.get("userId"))

    def _read_unified(self, data: Any, draft: ReportDraft) -> str | None:
        info = _answer_object(data)
        permissions = info.get("permissions")
        draft.permissions = unified_permissions(permissions if isinstance(permissions, list) else [])
        self._read_ips(info, draft)
        return _text(info.get("uid"))

    @staticmethod
    def _read_ips(info: Mapping[str, Any], draft: ReportDraft) -> None:
        ips = parse_ips(info.get("ips"))
        draft.ip_restricted = bool(ips) if ips is not None else None
        draft.ip_whitelist = ips

    # ------------------------------------------------------------ HTTP
    def _signed_get(self, path: str, credentials: Credentials, sign: Signer, timestamp_ms: int) -> HttpRequest:
        timestamp = str(timestamp_ms)
        passphrase = credentials.passphrase.reveal() if credentials.passphrase is not None else ""
        headers = {
            "ACCESS-KEY": credentials.api_key,
            "ACCESS-SIGN": sign(prehash(timestamp, "GET", path)),
            "ACCESS-TIMESTAMP": timestamp,
            "ACCESS-PASSPHRASE": passphrase,  # sent raw, not signed (§2.2)
            "Content-Type": "application/json",
            "locale": self.locale,
        }
        return HttpRequest("GET", self.base_url + path, headers=headers)

    def _raise_for_error(self, response: HttpResponse) -> Any:
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise ExchangeError(
                FindingCode.EXCHANGE_UNAVAILABLE,
                exchange_message=f"HTTP {response.status_code} without a Bitget answer",
                http_status=response.status_code,
            )
        code = _text(body.get("code"))
        if code == SUCCESS_CODE and response.is_success:
            return body.get("data")
        if code == UNIFIED_ACCOUNT_MODE_CODE:
            raise _UnifiedAccountMode
        message = body.get("msg")
        raise ExchangeError(
            ERROR_CODES.get(code or "", UNKNOWN_ERROR_CODE),
            exchange_code=code,
            exchange_message=message if isinstance(message, str) else None,
            http_status=response.status_code,
        )

    def _server_time_ms(self) -> int:
        response = self._send(HttpRequest("GET", self.base_url + SERVER_TIME))
        data = self._raise_for_error(response)
        # unvalidated JSON: int() is the check (None, a list or "abc" end in the except below)
        server_time: Any = data.get("serverTime") if isinstance(data, dict) else None
        try:
            return int(server_time)
        except (TypeError, ValueError):
            raise ExchangeError(
                FindingCode.EXCHANGE_UNAVAILABLE,
                exchange_message="server time missing from the answer",
                http_status=response.status_code,
            ) from None


def _answer_object(data: Any) -> dict[str, Any]:
    """The `data` object of a success answer; anything else says nothing about the key."""
    if not isinstance(data, dict):
        raise ExchangeError(FindingCode.EXCHANGE_UNAVAILABLE, exchange_message="unexpected answer shape")
    return data


def _text(value: Any) -> str | None:
    """Bitget ids and codes are strings in some answers and numbers in others (§2.1)."""
    if value is None or isinstance(value, bool):
        return None
    return str(value)


# --------------------------------------------------------------------------- the spec
def _build(context: CheckerContext) -> BitgetAdapter:
    return BitgetAdapter(
        transport=context.transport,
        base_url=context.urls["BITGET_BASE_URL"],
        egress_ips=context.egress_ips,
        planned_ips=context.planned_ips,
        clock=context.clock,
    )


#: Everything the rest of keyhealth knows about Bitget (keyhealth.exchanges.registry lists it).
SPEC = ExchangeSpec(
    name=NAME,
    ui=ExchangeUi(
        name="Bitget",
        api_page="API Management",
        whitelist="Edit, IP whitelist",
        spot="Spot: Trade (read-write)",
        futures="Futures: Orders (read-write)",
        withdraw="Withdraw",
        read="Read-only",
    ),
    # Keys are `bg_` and 32 hex digits; HMAC and RSA keys; every key has a passphrase the user
    # chose (exchanges.md 2.2). It travels raw in the ACCESS-PASSPHRASE header, so only visible
    # ASCII can be sent at all: anything else is a paste error, refused before Bitget is asked.
    keys=KeyRules(
        api_key=re.compile(r"^bg_[0-9a-f]{32}$"),
        key_types=frozenset({KeyType.HMAC, KeyType.RSA}),
        passphrase=re.compile(r"^[\x21-\x7e]{1,64}$"),
        passphrase_rule="1 to 64 visible ASCII characters",  # noqa: S106 - a rule in words, not a password
    ),
    base_urls=(BaseUrl("BITGET_BASE_URL", PRODUCTION_BASE_URL),),
    rate_plan=RATE_PLAN,
    build_checker=_build,
)
BitgetAdapter.spec = SPEC
