"""What every exchange adapter shares: the transient-failure rules, the clock correction and
the report draft. Exchange specifics (signing, endpoints, error tables, how an answer
becomes permissions, the spec) live in one module per exchange.

Nothing here imports AWS or an HTTP library: requests and answers are plain values
(keyhealth.domain.http) carried by the transport the composition root injects. An adapter
answers `check(credentials, scopes)` with a `CheckResult`; it never raises for anything an
exchange or the network can do.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

from keyhealth.domain.credentials import Credentials
from keyhealth.domain.exchange import CheckResult, ExchangeSpec, ExchangeUi, Probe
from keyhealth.domain.findings import make_finding
from keyhealth.domain.http import (
    HttpRequest,
    HttpResponse,
    HttpTransport,
    TransportFailure,
    TransportTimeout,
    retry_after_seconds,
)
from keyhealth.domain.model import Finding, FindingCode, Permissions, PlannedEgressIp, Report, Scope


class ExchangeError(Exception):
    """The exchange answered with an error that its module's table maps to a finding code."""

    def __init__(
        self,
        code: FindingCode,
        *,
        exchange_code: str | int | None = None,
        exchange_message: str | None = None,
        http_status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{code.value} (exchange code {exchange_code}, HTTP {http_status})")
        self.code = code
        self.exchange_code = exchange_code
        self.exchange_message = exchange_message
        self.http_status = http_status
        self.retry_after = retry_after


class CheckAborted(Exception):
    """Ends a check early with one finding (a rejected key, a transient failure)."""

    def __init__(self, finding: Finding, retry_after: float | None = None) -> None:
        super().__init__(finding.code.value)
        self.finding = finding
        self.retry_after = retry_after


@dataclass
class ReportDraft:
    """Mutable while an adapter inspects a key; `finish()` freezes it into a `Report`."""

    ui: ExchangeUi
    egress_ips: tuple[str, ...]
    checked_at: datetime
    planned_ips: tuple[PlannedEgressIp, ...] = ()
    permissions: Permissions = field(default_factory=Permissions)
    ip_restricted: bool | None = None
    ip_whitelist: tuple[str, ...] | None = None
    trading_expires_at: datetime | None = None
    findings: list[Finding] = field(default_factory=list)
    account_id: str | None = None
    # False for the nightly audit: one cheap call per key; confirmations that cost more weight
    # (Binance's futures account) are left to bind and verify.
    thorough: bool = True

    def add(self, code: FindingCode, **context: Any) -> None:
        context.setdefault("egress_ips", self.egress_ips)
        self.findings.append(make_finding(code, self.ui, **context))

    def add_error(self, error: ExchangeError, **context: Any) -> None:
        self.add(
            error.code,
            exchange_code=error.exchange_code,
            exchange_message=error.exchange_message,
            **context,
        )

    def has(self, code: FindingCode) -> bool:
        return any(f.code is code for f in self.findings)

    @property
    def missing_egress_ips(self) -> list[str]:
        """Egress IPs absent from a known whitelist (every NAT address must be on it)."""
        if not self.ip_restricted or self.ip_whitelist is None:
            return []
        return [ip for ip in self.egress_ips if ip not in self.ip_whitelist]

    @property
    def missing_planned_ips(self) -> list[PlannedEgressIp]:
        """Announced egress IPs absent from a known whitelist (an unrestricted key needs none added)."""
        if not self.ip_restricted or self.ip_whitelist is None:
            return []
        return [p for p in self.planned_ips if p.ip not in self.ip_whitelist and p.ip not in self.egress_ips]

    def assess_common(self, scopes: Collection[Scope], *, skip_scopes: Collection[Scope] = ()) -> None:
        """The rules that read the same on every exchange, once permissions are known."""
        if self.permissions.read is False:
            self.add(FindingCode.SCOPE_NOT_PERMITTED, scopes=["read"])
        missing = [
            s.value for s in sorted(scopes) if s not in skip_scopes and getattr(self.permissions, s.value) is False
        ]
        if missing:
            self.add(FindingCode.SCOPE_NOT_PERMITTED, scopes=missing)
        missing = self.missing_egress_ips
        if missing and len(missing) == len(self.egress_ips):  # none of ours: the exchange would refuse each call
            self.add(FindingCode.IP_NOT_WHITELISTED, missing_ips=missing)
        elif missing:  # this call came through one that is listed; trading calls from the others will not
            self.add(FindingCode.IP_WHITELIST_INCOMPLETE, missing_ips=missing)
        if self.missing_planned_ips:
            self.add(FindingCode.PLANNED_IP_MISSING, planned=self.missing_planned_ips)
        if self.ip_restricted is False:
            self.add(FindingCode.NO_IP_RESTRICTION)
        if self.permissions.withdraw:
            self.add(FindingCode.WITHDRAW_ENABLED)

    def finish(self) -> Report:
        return Report(
            checked_at=self.checked_at,
            egress_ip=self.egress_ips[0] if self.egress_ips else None,
            permissions=self.permissions,
            ip_restricted=self.ip_restricted,
            ip_whitelist=self.ip_whitelist,
            trading_expires_at=self.trading_expires_at,
            findings=tuple(self.findings),
        )


class ExchangeAdapter(ABC):
    """Checks keys on one exchange. Thread-safe: one instance serves concurrent checks."""

    #: the plugin's declaration (its module's SPEC): name, UI words, rate plan
    spec: ClassVar[ExchangeSpec]
    #: the (HTTP status) answers every exchange means the same way by; module tables refine the rest
    TRANSIENT_HTTP: ClassVar[dict[int, FindingCode]] = {
        418: FindingCode.EGRESS_BLOCKED,  # an IP ban: the operator's problem, not the key's
        429: FindingCode.RATE_LIMITED,
        451: FindingCode.EGRESS_BLOCKED,  # restricted location (e.g. Binance from the US)
    }

    def __init__(
        self,
        *,
        transport: HttpTransport,
        base_url: str,
        egress_ips: Sequence[str] = (),
        clock: Callable[[], float] = time.time,
        recv_window_ms: int = 5000,
        planned_ips: Sequence[PlannedEgressIp] = (),
    ) -> None:
        self._transport = transport
        self.base_url = base_url.rstrip("/")
        self.egress_ips = tuple(egress_ips)
        self.planned_ips = tuple(planned_ips)
        self._clock = clock
        self.recv_window_ms = recv_window_ms
        self._offset_ms = 0  # exchange time minus ours, measured after a timestamp error
        self._blocked_until = 0.0  # honour Retry-After: no calls before this moment
        self._blocked_code = FindingCode.RATE_LIMITED
        self._lock = threading.Lock()
        self._local = threading.local()  # per-thread: the paths the running check has called

    # ----------------------------------------------------------------- public API
    def check(
        self,
        credentials: Credentials,
        scopes: Collection[Scope],
        *,
        identify_account: bool = False,
        thorough: bool = True,
    ) -> CheckResult:
        """Ask the exchange about `credentials` and say whether they serve `scopes`.

        `identify_account` also fetches the exchange's account id where that costs an
        extra call (bind does, the nightly audit does not); `thorough=False` skips
        confirmations that cost extra weight (the audit's light check).
        """
        draft = ReportDraft(
            ui=self.spec.ui,
            egress_ips=self.egress_ips,
            checked_at=datetime.fromtimestamp(self._clock(), UTC).replace(microsecond=0),
            thorough=thorough,
            planned_ips=self.planned_ips,
        )
        retry_after: float | None = None
        self._local.sent = []
        try:
            self._honour_cooldown()
            self._inspect(credentials, frozenset(scopes), draft, identify_account)
        except CheckAborted as stop:
            draft.findings.append(stop.finding)
            retry_after = stop.retry_after
        return CheckResult(
            report=draft.finish(),
            account_id=draft.account_id,
            retry_after=retry_after,
            requests=tuple(self._local.sent),
        )

    # ------------------------------------------------------- for exchange modules
    @abstractmethod
    def _inspect(
        self,
        credentials: Credentials,
        scopes: frozenset[Scope],
        draft: ReportDraft,
        identify_account: bool,
    ) -> None:
        """Fill `draft`; raise `CheckAborted` to stop with one finding."""

    @abstractmethod
    def _raise_for_error(self, response: HttpResponse) -> Any:
        """Return the decoded payload of a successful answer, or raise `ExchangeError`."""

    @abstractmethod
    def _server_time_ms(self) -> int:
        """The exchange's clock, from its public time endpoint."""

    def probe(self) -> Probe:
        """The egress canary's call: the public server-time endpoint, timed. A 403 counts as a block here
        (a WAF or an IP ban on an unsigned call the exchange never refuses otherwise)."""
        self._local.probing = True
        before = self._clock()
        try:
            server_ms = self._server_time_ms()
        except CheckAborted as stop:
            return Probe(self.spec.name, False, (self._clock() - before) * 1000, code=stop.finding.code.value)
        except Exception as error:  # an answer we cannot read: down, as far as the canary can tell
            status: int | None = getattr(error, "http_status", None)
            code = FindingCode.EGRESS_BLOCKED if status == 403 else FindingCode.EXCHANGE_UNAVAILABLE
            return Probe(self.spec.name, False, (self._clock() - before) * 1000, code=code.value, http_status=status)
        finally:
            self._local.probing = False
        after = self._clock()
        offset = server_ms - int((before + after) / 2 * 1000)
        return Probe(self.spec.name, True, (after - before) * 1000, clock_offset_ms=offset)

    def now_ms(self) -> int:
        """Our clock corrected by the offset last measured against the exchange."""
        return int(self._clock() * 1000) + self._offset_ms

    def _send(self, request: HttpRequest) -> HttpResponse:
        """Send one request; network failures and the universal HTTP statuses become findings."""
        sent = getattr(self._local, "sent", None)
        if sent is not None:
            sent.append(request.path)
        try:
            response = self._transport.send(request)
        except TransportTimeout:
            raise self._abort(FindingCode.TIMEOUT) from None
        except TransportFailure:
            raise self._abort(FindingCode.EXCHANGE_UNAVAILABLE, detail="The connection failed.") from None
        status = response.status_code
        if status == 403 and getattr(self._local, "probing", False):
            raise self._abort(FindingCode.EGRESS_BLOCKED, detail="The exchange refuses the egress IP (HTTP 403).")
        if status in self.TRANSIENT_HTTP or status >= 500:
            code = self.TRANSIENT_HTTP.get(status, FindingCode.EXCHANGE_UNAVAILABLE)
            retry_after = retry_after_seconds(response.header("Retry-After"), self._clock())
            if retry_after:
                self._cool_down(retry_after, code)
            exchange_code, exchange_message = self._peek_error(response)
            detail = {
                451: "The exchange restricts the egress IP's location (HTTP 451).",
                418: "The egress IP is banned for sending too many requests (HTTP 418).",
            }.get(status)
            raise self._abort(
                code,
                retry_after=retry_after,
                detail=detail,
                exchange_code=exchange_code,
                exchange_message=exchange_message,
            )
        return response

    def _peek_error(self, response: HttpResponse) -> tuple[str | int | None, str | None]:
        """(code, message) from an error body if it is JSON with them; never raises."""
        try:
            body = response.json()
        except ValueError:
            return None, None
        if not isinstance(body, dict):
            return None, None
        message = body.get("msg")
        return body.get("code"), message if isinstance(message, str) else None

    def _call(self, build: Callable[[int], HttpRequest]) -> Any:
        """Send a signed request built by `build(timestamp_ms)` and return its payload.

        On a timestamp error, measure the exchange's clock and retry once; a second
        timestamp error becomes `clock_skew`. Other exchange errors propagate as
        `ExchangeError` for the module to interpret in context.
        """
        for attempt in (1, 2):
            response = self._send(build(self.now_ms()))
            try:
                return self._raise_for_error(response)
            except ExchangeError as error:
                if error.code is not FindingCode.CLOCK_SKEW:
                    raise
                if attempt == 2:
                    raise self._abort_with(error) from None
                self._resync_clock()
        raise AssertionError("unreachable")  # pragma: no cover

    def _resync_clock(self) -> None:
        before = self._clock()
        server_ms = self._server_time_ms()
        after = self._clock()
        # The server read its clock about halfway through the round trip.
        local_ms = int((before + after) / 2 * 1000)
        with self._lock:
            self._offset_ms = server_ms - local_ms

    def _abort(self, code: FindingCode, *, retry_after: float | None = None, **context: Any) -> CheckAborted:
        context.setdefault("egress_ips", self.egress_ips)
        return CheckAborted(make_finding(code, self.spec.ui, retry_after=retry_after, **context), retry_after)

    def _abort_with(self, error: ExchangeError, **context: Any) -> CheckAborted:
        if error.retry_after:
            self._cool_down(error.retry_after, error.code)
        return self._abort(
            error.code,
            retry_after=error.retry_after,
            exchange_code=error.exchange_code,
            exchange_message=error.exchange_message,
            **context,
        )

    def _cool_down(self, seconds: float, code: FindingCode) -> None:
        with self._lock:
            until = self._clock() + seconds
            if until > self._blocked_until:
                self._blocked_until = until
                self._blocked_code = code

    def _honour_cooldown(self) -> None:
        remaining = self._blocked_until - self._clock()
        if remaining > 0:
            raise self._abort(
                self._blocked_code,
                retry_after=remaining,
                detail="Not asked again before the wait the exchange requested is over.",
            )
