"""The egress canary: every few minutes each audit worker (one per egress IP) asks each exchange's public
server-time endpoint (no key, negligible weight), so that a blocked region or a banned IP is known before the
audit marks every key `unknown`. An outage (HTTP 451, 403 or 418, or no answer in time) raises one `incident`
to ops when it starts, and one more when it ends; its latency, clock offset and outcome become metrics; the
last result per (egress IP, exchange) is what `GET /egress-ips` reports."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

from keyhealth.canary.ports import CanaryState, CanaryStore
from keyhealth.domain.exchange import ExchangeChecker, ExchangeName, Probe
from keyhealth.domain.model import FindingCode, format_time
from keyhealth.notify import model as alerts
from keyhealth.notify.ports import AlertPublisher

logger = logging.getLogger(__name__)

#: What counts as an outage of one egress IP: the exchange refuses it (451 a restricted location, 403 a
#: WAF block, 418 a ban) or does not answer. A 5xx or a 429 is the exchange's state, not the IP's.
OUTAGE_CODES = frozenset({FindingCode.EGRESS_BLOCKED.value, FindingCode.TIMEOUT.value})


def run_canary(
    egress_ip: str,
    checkers: Mapping[ExchangeName, ExchangeChecker],
    store: CanaryStore,
    alert_publisher: AlertPublisher,
    now: Callable[[], datetime],
    *,
    record: Callable[[CanaryState], None] = lambda state: None,
) -> list[CanaryState]:
    """Probe every exchange from `egress_ip` once; raise an incident when an outage of that IP starts and one
    when it ends (once each, whatever the concurrency); `record` each result (the metrics)."""
    states = []
    for name, checker in sorted(checkers.items()):
        probe = checker.probe()
        previous = store.last(egress_ip, name)
        state = _state(egress_ip, probe, previous, now())
        record(state)
        states.append(state)
        if not store.save(state, previous=previous):
            continue
        was_down = previous is not None and previous.down
        if state.down and not was_down:
            logger.warning(
                "egress canary: outage", extra={"egress_ip": egress_ip, "exchange": name, "code": state.code}
            )
            alert_publisher.publish(alerts.incident(_incident_body(state, checker, recovered=False)))
        elif was_down and not state.down:
            assert previous is not None
            logger.info("egress canary: recovered", extra={"egress_ip": egress_ip, "exchange": name})
            alert_publisher.publish(alerts.incident(_incident_body(previous, checker, recovered=True, at=state)))
    return states


def _state(egress_ip: str, probe: Probe, previous: CanaryState | None, at: datetime) -> CanaryState:
    down = not probe.ok and probe.code in OUTAGE_CODES
    since = (previous.down_since if previous is not None and previous.down else at) if down else None
    return CanaryState(
        egress_ip=egress_ip,
        exchange=probe.exchange,
        ok=probe.ok,
        checked_at=at,
        latency_ms=probe.latency_ms,
        clock_offset_ms=probe.clock_offset_ms,
        code=probe.code,
        down_since=since,
    )


def _incident_body(
    state: CanaryState, checker: ExchangeChecker, *, recovered: bool, at: CanaryState | None = None
) -> dict[str, Any]:
    """An `incident` as the audit's, for one egress IP: count 1 of 1 (the canary), the IP, and whether it ended."""
    from keyhealth.audit.model import LIKELY_CAUSES

    return {
        "type": "incident",
        "run_id": f"canary-{state.egress_ip}",
        "exchange": state.exchange,
        "code": state.code,
        "count": 1,
        "total": 1,
        "share": 1.0,
        "likely_cause": LIKELY_CAUSES.get(state.code or "", "the exchange does not answer this egress IP"),
        "detected_at": format_time(state.down_since),
        "exchange_name": checker.spec.display_name,
        "egress_ip": state.egress_ip,
        "recovered_at": format_time(at.checked_at) if recovered and at is not None else None,
    }


def egress_canary(store: CanaryStore) -> dict[str, dict[str, dict[str, Any]]]:
    """The last canary result of every (egress IP, exchange): GET /egress-ips' `canary`."""
    return by_egress_ip(store.all())


def by_egress_ip(states: Iterable[CanaryState]) -> dict[str, dict[str, dict[str, Any]]]:
    """{egress IP: {exchange: last result}}: what GET /egress-ips shows."""
    shown: dict[str, dict[str, dict[str, Any]]] = {}
    for state in sorted(states, key=lambda s: (s.egress_ip, s.exchange)):
        shown.setdefault(state.egress_ip, {})[state.exchange] = state.to_public_dict()
    return shown
