"""BingX: how a key is checked, signed and judged.

Read top to bottom next to docs/exchanges.md section 3 (facts) and section 5 item 3
(the recipe). One signed call answers almost everything:
`GET /openApi/v1/account/apiPermissions` -> permission codes and the IP binding list.
`GET /openApi/account/v1/uid` is called only when the account id is asked for.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote

from keyhealth.domain.credentials import Credentials, KeyType
from keyhealth.domain.exchange import BaseUrl, CheckerContext, ExchangeSpec, ExchangeUi, KeyRules
from keyhealth.domain.http import HttpRequest, HttpResponse
from keyhealth.domain.model import FindingCode, Permissions, Scope, Severity
from keyhealth.domain.ratelimits import Pool, RatePlan
from keyhealth.exchanges.base import (
    CheckAborted,
    ExchangeAdapter,
    ExchangeError,
    ReportDraft,
)

logger = logging.getLogger(__name__)

NAME = "bingx"
PRODUCTION_BASE_URL = "https://open-api.bingx.com"
API_PERMISSIONS_PATH = "/openApi/v1/account/apiPermissions"
UID_PATH = "/openApi/account/v1/uid"
SERVER_TIME_PATH = "/openApi/swap/v2/server/time"

# --------------------------------------------------------------------------- rate budget
# One check spends (exchanges.md 3.4): apiPermissions and uid are account-group endpoints, each
# request counting once against the per-IP group total and once against its interface's per-IP
# limit; `identify_account` adds the uid call. The per-UID limits (apiPermissions 2/s, uid 10/s,
# marked [U]) are not budgeted: a run checks each binding, hence each UID, about once.
#: BingX's published per-IP limits for the account groups [2]/[3] (exchanges.md 3.4, [D]):
#: a breach is restricted for 5 minutes.
IP_LIMITS: dict[str, tuple[int, float]] = {
    "account_group_requests": (2000, 10.0),  # total per IP, per 10 s
    "interface_requests": (300, 10.0),  # per IP per interface, per 10 s
}
#: "When over the limit, the system will automatically restrict the request and recover after
#: 5 minutes" (exchanges.md 3.4). BingX documents no Retry-After header, so this is our wait.
RATE_LIMIT_RECOVERY_SECONDS = 300.0


def _bingx_weights(path: str) -> list[tuple[str, int]]:
    """A request counts in the account group's total and in its interface's own counter; the
    interface is matched by its tail, so a base URL with a path prefix maps the same."""
    interface = next((p for p in (API_PERMISSIONS_PATH, UID_PATH, SERVER_TIME_PATH) if path.endswith(p)), None)
    weights = [("account_group_requests", 1)]
    if interface is not None:
        weights.append((f"interface:{interface}", 1))
    return weights


#: The uniform view of the limits above for the audit's shared budget (keyhealth.domain.ratelimits):
#: each request counts in the account group's total and in its own interface's counter.
RATE_PLAN = RatePlan(
    exchange=NAME,
    pools=(
        Pool("account_group_requests", *IP_LIMITS["account_group_requests"]),
        Pool(f"interface:{API_PERMISSIONS_PATH}", *IP_LIMITS["interface_requests"]),
        Pool(f"interface:{UID_PATH}", *IP_LIMITS["interface_requests"]),
        Pool(f"interface:{SERVER_TIME_PATH}", *IP_LIMITS["interface_requests"]),
    ),
    weights=lambda path: _bingx_weights(path),
    audit_check_paths=(API_PERMISSIONS_PATH,),
    default_backoff_seconds=RATE_LIMIT_RECOVERY_SECONDS,
    max_backoff_seconds=RATE_LIMIT_RECOVERY_SECONDS,
)

# --------------------------------------------------------------------------- permission codes
# exchanges.md 3.1: 1 spot, 2 read, 3 perpetual futures, 4 universal transfer, 5 withdraw,
# 7 internal transfer of sub-accounts; 6 exists but is undocumented, so it is ignored.
PERM_SPOT = 1
PERM_READ = 2
PERM_FUTURES = 3
PERM_UNIVERSAL_TRANSFER = 4
PERM_WITHDRAW = 5
PERM_INTERNAL_TRANSFER = 7
#: Keys without an IP binding holding any of these are deleted after 14 idle days (exchanges.md 3.5).
DELETION_RISK_PERMISSIONS = frozenset({PERM_SPOT, PERM_FUTURES, PERM_UNIVERSAL_TRANSFER, PERM_INTERNAL_TRANSFER})

# --------------------------------------------------------------------------- error table
#: BingX business code -> finding (exchanges.md 3.3). BingX sends these codes under HTTP 200 as
#: well as under 4xx (the status is marked [U] there and does not change the meaning), so the
#: code alone is the key. HTTP 418/429/451/5xx are handled by the base before the body is read.
ERROR_TABLE: dict[int, FindingCode] = {
    100413: FindingCode.INVALID_API_KEY,  # "Incorrect apiKey" / "Null apiKey"
    100001: FindingCode.INVALID_SECRET,  # "Signature verification failed"
    100419: FindingCode.IP_NOT_WHITELISTED,  # "your current request IP is x does not match IP whitelist"
    100004: FindingCode.SCOPE_NOT_PERMITTED,  # "Permission denied as the API key was created without..."
    # 100421 is overloaded: "Null timestamp or timestamp mismatch" (observed) and, for orders, "This
    # pair is currently restricted from API trading" (ccxt). Our endpoints take no pair, so here it
    # can only be the timestamp: the base resyncs the clock and retries once.
    100421: FindingCode.CLOCK_SKEW,
    100414: FindingCode.ACCOUNT_RESTRICTED,  # "The account is abnormal" / "risk control check fail"
    100410: FindingCode.RATE_LIMITED,  # seen with msg "throttle" (ccxt reads it as "system busy": transient either way)
    100500: FindingCode.EXCHANGE_UNAVAILABLE,  # internal error
    100503: FindingCode.EXCHANGE_UNAVAILABLE,  # server busy
    80012: FindingCode.EXCHANGE_UNAVAILABLE,  # service unavailable
    80001: FindingCode.EXCHANGE_UNAVAILABLE,  # request failed
    # "Invalid parameters": BingX says our request was malformed. That is a keyhealth bug (or a
    # BingX API change), never the key owner's fault, and it tells nothing about the key. So it is
    # reported as transient `exchange_unavailable` (operator audience, binding status kept) with a
    # detail sentence and a warning log, rather than turning a possibly good key `failing`.
    100400: FindingCode.EXCHANGE_UNAVAILABLE,
    109400: FindingCode.EXCHANGE_UNAVAILABLE,
    80014: FindingCode.EXCHANGE_UNAVAILABLE,
}
MALFORMED_REQUEST_CODES = frozenset({100400, 109400, 80014})

_REQUEST_IP = re.compile(r"request IP is\s+([0-9A-Fa-f:.]+)")


# --------------------------------------------------------------------------- signing (pure)
def param_string(params: Mapping[str, object] | Iterable[tuple[str, object]], *, sort: bool = True) -> str:
    """`k=v&k=v` with raw (not URL-encoded) values: the string BingX signs (exchanges.md 3.2).

    The official demo sorts keys a-z; the server checks the string as sent, so sorting is safe.
    """
    pairs = list(params.items()) if isinstance(params, Mapping) else list(params)
    if sort:
        pairs.sort(key=lambda pair: pair[0])
    return "&".join(f"{key}={value}" for key, value in pairs)


def sign(secret: str, payload: str) -> str:
    """Lowercase hex HMAC-SHA256 of `payload` (the query string, or query followed by body)."""
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()


def signed_query(params: Mapping[str, object], secret: str) -> str:
    """The URL query: sorted params, each value URL-encoded only in the URL (the signature
    covers the raw values, exchanges.md 3.2), then `&signature=...`."""
    signature = sign(secret, param_string(params))
    url_pairs = [(key, quote(str(value), safe="")) for key, value in sorted(params.items())]
    return f"{param_string(url_pairs, sort=False)}&signature={signature}"


# --------------------------------------------------------------------------- answers (pure)
def permissions_from_codes(codes: Iterable[int]) -> Permissions:
    held = frozenset(codes)
    return Permissions(
        read=PERM_READ in held,
        spot=PERM_SPOT in held,
        futures=PERM_FUTURES in held,
        margin=None,  # BingX has no margin permission in apiPermissions: not guessed
        withdraw=PERM_WITHDRAW in held,
        transfer=bool(held & {PERM_UNIVERSAL_TRANSFER, PERM_INTERNAL_TRANSFER}),
    )


def parse_api_permissions(payload: Any) -> tuple[frozenset[int], tuple[str, ...]]:
    """(permission codes, IP binding list) from an apiPermissions answer already unwrapped from
    its `{code, msg, data}` envelope if it had one. Raises ValueError on an unexpected shape."""
    if not isinstance(payload, dict):
        raise ValueError("apiPermissions answer is not an object")
    raw_codes = payload.get("permissions")
    if not isinstance(raw_codes, list):
        raise ValueError("apiPermissions answer has no permissions list")
    codes = frozenset(int(code) for code in raw_codes)
    raw_ips = payload.get("ipAddresses") or []
    if isinstance(raw_ips, str):  # the key page takes IPs comma-separated (exchanges.md 3.5)
        raw_ips = raw_ips.split(",")
    if not isinstance(raw_ips, list):
        raise ValueError("apiPermissions answer has a malformed ipAddresses")
    ips = tuple(ip.strip() for ip in map(str, raw_ips) if ip.strip())
    return codes, ips


def error_from_body(body: Any, http_status: int) -> ExchangeError | None:
    """The `ExchangeError` a decoded BingX answer carries, or None when it is a success."""
    if isinstance(body, dict) and "code" in body:
        try:
            code = int(body["code"])
        except (TypeError, ValueError):
            code = None
        if code == 0:
            return None
        message = body.get("msg")
        # An unknown code says nothing we can pin on the key: transient, kept verbatim for operators.
        finding = ERROR_TABLE.get(code, FindingCode.EXCHANGE_UNAVAILABLE) if code is not None else None
        return ExchangeError(
            finding or FindingCode.EXCHANGE_UNAVAILABLE,
            exchange_code=code if code is not None else str(body["code"]),
            exchange_message=message if isinstance(message, str) else None,
            http_status=http_status,
        )
    if http_status != 200:
        return ExchangeError(FindingCode.EXCHANGE_UNAVAILABLE, http_status=http_status)
    return None


def unwrap(body: Any) -> Any:
    """apiPermissions answers bare (JKorf reads it raw), other endpoints in `{code, msg, data}`."""
    if isinstance(body, dict) and "code" in body:
        return body.get("data")
    return body


# --------------------------------------------------------------------------- the adapter
class BingXAdapter(ExchangeAdapter):
    def _inspect(
        self,
        credentials: Credentials,
        scopes: frozenset[Scope],
        draft: ReportDraft,
        identify_account: bool,
    ) -> None:
        if not _header_safe(credentials.api_key):
            # BingX keys are alphanumeric; this one cannot exist and cannot even be sent as a header.
            raise self._abort(FindingCode.INVALID_API_KEY)
        payload = self._signed_get(credentials, API_PERMISSIONS_PATH)
        try:
            codes, ips = parse_api_permissions(payload)
        except (ValueError, TypeError):
            raise self._abort(
                FindingCode.EXCHANGE_UNAVAILABLE, detail="Its answer about the key had an unexpected shape."
            ) from None
        draft.permissions = permissions_from_codes(codes)
        draft.ip_restricted = bool(ips)
        draft.ip_whitelist = ips
        draft.assess_common(scopes)
        if not ips and codes & DELETION_RISK_PERMISSIONS:
            draft.add(FindingCode.INACTIVITY_DELETION_RISK)
        usable = not any(f.severity is Severity.ERROR for f in draft.findings)
        if identify_account and usable:  # a failing key is not stored: its account id is not worth a request
            data = self._signed_get(credentials, UID_PATH)
            uid = data.get("uid") if isinstance(data, dict) else None
            if uid is None:
                raise self._abort(
                    FindingCode.EXCHANGE_UNAVAILABLE, detail="Its answer about the account had an unexpected shape."
                )
            draft.account_id = str(uid)

    def _signed_get(self, credentials: Credentials, path: str) -> Any:
        def build(timestamp_ms: int) -> HttpRequest:
            params = {"recvWindow": self.recv_window_ms, "timestamp": timestamp_ms}
            query = signed_query(params, credentials.api_secret.reveal())
            return HttpRequest("GET", f"{self.base_url}{path}?{query}", headers={"X-BX-APIKEY": credentials.api_key})

        try:
            return unwrap(self._call(build))
        except ExchangeError as error:
            raise self._abort_for(error) from None

    def _abort_for(self, error: ExchangeError) -> CheckAborted:
        context: dict[str, Any] = {}
        if error.code is FindingCode.SCOPE_NOT_PERMITTED:
            # Both endpoints we call need only Read (exchanges.md 3.1).
            context["scopes"] = ["read"]
        elif error.code is FindingCode.IP_NOT_WHITELISTED:
            seen = _REQUEST_IP.search(error.exchange_message or "")
            if seen and seen.group(1) in self.egress_ips:
                context["missing_ips"] = [seen.group(1)]
        elif error.exchange_code in MALFORMED_REQUEST_CODES:
            logger.warning(
                "BingX called our request malformed: code %s, message %r",
                error.exchange_code,
                error.exchange_message,
            )
            context["detail"] = "BingX called the platform's request malformed: a platform bug, not the key's."
        elif error.exchange_code is not None and error.exchange_code not in ERROR_TABLE:
            logger.warning("BingX answered an unmapped error code %s", error.exchange_code)
        return self._abort_with(error, **context)

    def _raise_for_error(self, response: HttpResponse) -> Any:
        try:
            body = response.json()
        except ValueError:
            raise ExchangeError(FindingCode.EXCHANGE_UNAVAILABLE, http_status=response.status_code) from None
        error = error_from_body(body, response.status_code)
        if error is not None:
            raise error
        return body

    def _server_time_ms(self) -> int:
        response = self._send(HttpRequest("GET", f"{self.base_url}{SERVER_TIME_PATH}"))
        try:
            data = unwrap(self._raise_for_error(response))
            return int(data["serverTime"])
        except ExchangeError as error:
            raise self._abort_with(error) from None
        except (KeyError, TypeError, ValueError):
            raise self._abort(
                FindingCode.EXCHANGE_UNAVAILABLE, detail="Its server time answer had an unexpected shape."
            ) from None

    def _send(self, request: HttpRequest) -> HttpResponse:
        try:
            return super()._send(request)
        except CheckAborted as stop:
            throttled = stop.finding.code in (FindingCode.RATE_LIMITED, FindingCode.EGRESS_BLOCKED)
            if throttled and stop.retry_after is None:
                # BingX sends no Retry-After; it documents a 5-minute restriction (exchanges.md 3.4).
                # Asking again meanwhile turns a 429 into a 418 ban, so the whole adapter waits.
                self._cool_down(RATE_LIMIT_RECOVERY_SECONDS, stop.finding.code)
                raise CheckAborted(stop.finding, RATE_LIMIT_RECOVERY_SECONDS) from None
            raise


def _header_safe(value: str) -> bool:
    return bool(value) and value.isascii() and value.isprintable() and value.strip() == value


# --------------------------------------------------------------------------- the spec
def _build(context: CheckerContext) -> BingXAdapter:
    return BingXAdapter(
        transport=context.transport,
        base_url=context.urls["BINGX_BASE_URL"],
        egress_ips=context.egress_ips,
        planned_ips=context.planned_ips,
        clock=context.clock,
    )


#: Everything the rest of keyhealth knows about BingX (keyhealth.exchanges.registry lists it).
SPEC = ExchangeSpec(
    name=NAME,
    ui=ExchangeUi(
        name="BingX",
        api_page="Account, API Management",
        whitelist="Edit, IP address restriction",
        spot="Spot Trading",
        futures="Perpetual Futures Trading",
        withdraw="Withdraw",
        read="Read",
    ),
    # Alphanumeric API keys, HMAC only (exchanges.md 3.2).
    keys=KeyRules(api_key=re.compile(r"^[A-Za-z0-9]{32,128}$"), key_types=frozenset({KeyType.HMAC})),
    base_urls=(BaseUrl("BINGX_BASE_URL", PRODUCTION_BASE_URL),),
    rate_plan=RATE_PLAN,
    build_checker=_build,
)
BingXAdapter.spec = SPEC
