"""How much a check costs on an exchange, in that exchange's own rate-limit pools.

Each exchange module declares a `RATE_PLAN`: its per-IP pools (limit per window) and the
weight each path costs. The audit's shared budget spends from these pools; nothing here
knows AWS.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Pool:
    """One per-IP counter the exchange keeps: `limit` weight per `window_seconds`."""

    name: str
    limit: int
    window_seconds: float


@dataclass(frozen=True)
class RatePlan:
    exchange: str  # the exchange's name (ExchangeName)
    pools: tuple[Pool, ...]
    #: path -> [(pool name, weight)] for every path a check may call
    weights: Callable[[str], list[tuple[str, int]]]
    #: what the audit's light check is expected to cost, reserved before it runs
    audit_check_paths: tuple[str, ...]
    #: how long to back off when the exchange throttles without saying for how long
    default_backoff_seconds: float = 2.0
    max_backoff_seconds: float = 300.0

    def pool(self, name: str) -> Pool:
        return next(p for p in self.pools if p.name == name)

    def cost(self, paths: Iterable[str]) -> dict[str, int]:
        total: dict[str, int] = {}
        for path in paths:
            for pool, weight in self.weights(path):
                total[pool] = total.get(pool, 0) + weight
        return total

    def audit_check_cost(self) -> dict[str, int]:
        return self.cost(self.audit_check_paths)

    def window_budget(self, pool: str, share: float, window_scale: float = 1.0) -> tuple[float, int]:
        """(window length in seconds, whole units the audit may spend in it) of one pool.

        `window_scale` (benchmarks) shrinks a window and its limit together, so the rate stays
        the exchange's. Units are whole: a fraction is never spent (never over the limit).
        """
        spec = self.pool(pool)
        return spec.window_seconds * window_scale, max(1, int(spec.limit * share * window_scale))

    def checks_per_second(self, share: float, window_scale: float = 1.0) -> float:
        """The rate bound of the audit: the scarcest pool's budget over the check's cost in it."""
        rates = []
        for name, weight in self.audit_check_cost().items():
            seconds, budget = self.window_budget(name, share, window_scale)
            rates.append(budget / seconds / weight)
        return min(rates)
