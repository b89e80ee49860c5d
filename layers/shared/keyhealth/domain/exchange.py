"""What an exchange is to keyhealth: its spec (the plugin's declaration) and the checker port.

Each exchange module (keyhealth.exchanges.<name>) exports one `ExchangeSpec`; the registry
lists them, and request validation, finding texts, configuration and the audit's rate plans
loop over the specs. Use cases see an exchange only through `ExchangeChecker`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from keyhealth.domain.credentials import Credentials, KeyType
from keyhealth.domain.http import HttpTransport
from keyhealth.domain.model import PlannedEgressIp, Report, Scope
from keyhealth.domain.ratelimits import RatePlan

#: An exchange's id ("binance"): which ids exist is the registry's (keyhealth.exchanges.registry).
ExchangeName = str


@dataclass(frozen=True)
class ExchangeUi:
    """The words of the exchange's own UI, so that a remedy can be followed without our docs."""

    name: str  # how the exchange writes its own name ("BingX")
    api_page: str  # where keys are managed
    whitelist: str  # where the IP list is edited
    spot: str  # the spot trading permission's label
    futures: str  # the futures trading permission's label
    withdraw: str  # the withdrawal permission's label
    read: str  # the read permission's label


#: The shape of an HMAC secret on every exchange we know; a spec may narrow it.
HMAC_SECRET = re.compile(r"^[A-Za-z0-9]{16,256}$")


@dataclass(frozen=True)
class KeyRules:
    """What a key of this exchange looks like, checked before the exchange is asked."""

    api_key: re.Pattern[str]
    key_types: frozenset[KeyType]
    #: None: the exchange's keys have no passphrase (one sent is refused).
    passphrase: re.Pattern[str] | None = None
    passphrase_rule: str = ""  # the passphrase rule in words, for the 400 that refuses one
    hmac_secret: re.Pattern[str] = HMAC_SECRET


@dataclass(frozen=True)
class BaseUrl:
    """A base URL the adapter calls, configurable by an environment variable (regional hosts, tests)."""

    variable: str  # e.g. BINANCE_BASE_URL
    default: str


@dataclass(frozen=True)
class CheckResult:
    report: Report
    account_id: str | None = None  # the exchange's account id (Binance uid, Bitget userId), when asked for
    retry_after: float | None = None  # seconds the exchange asked us to wait, when it did
    requests: tuple[str, ...] = ()  # the paths this check called, for the rate budget to settle


class ExchangeChecker(Protocol):
    """Checks keys on one exchange; never raises for anything the exchange or the network does."""

    @property
    def spec(self) -> ExchangeSpec: ...

    def check(
        self,
        credentials: Credentials,
        scopes: Collection[Scope],
        *,
        identify_account: bool = False,
        thorough: bool = True,
    ) -> CheckResult: ...

    def probe(self) -> Probe:
        """Ask the exchange's public time endpoint, from this process's egress IP; never raises."""
        ...


@dataclass(frozen=True)
class Probe:
    """One call of an exchange's public server-time endpoint (no key, negligible weight): whether it
    answered, how fast, and how far its clock is from ours; `code` says why not (egress_blocked: a 451,
    403 or 418; timeout; exchange_unavailable)."""

    exchange: ExchangeName
    ok: bool
    latency_ms: float
    clock_offset_ms: int | None = None  # the exchange's clock minus ours
    code: str | None = None
    http_status: int | None = None


@dataclass(frozen=True)
class CheckerContext:
    """What the composition root hands an exchange module to build its checker."""

    transport: HttpTransport
    urls: Mapping[str, str]  # BaseUrl.variable -> the configured URL
    egress_ips: Sequence[str]
    clock: Callable[[], float]
    planned_ips: Sequence[PlannedEgressIp] = ()  # announced egress IPs keys must whitelist by their date


@dataclass(frozen=True)
class ExchangeSpec:
    name: ExchangeName
    ui: ExchangeUi
    keys: KeyRules
    base_urls: tuple[BaseUrl, ...]
    rate_plan: RatePlan
    build_checker: Callable[[CheckerContext], ExchangeChecker]

    @property
    def display_name(self) -> str:
        return self.ui.name

    @property
    def passphrase_required(self) -> bool:
        return self.keys.passphrase is not None
