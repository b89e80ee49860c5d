"""How much a check costs on an exchange, in that exchange's own rate-limit pools.

Each exchange module declares a `RATE_PLAN`: its per-IP pools (limit per window) and the
weight each path costs. The audit's shared budget spends from these pools; nothing here
knows AWS.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from keyhealth.model import Exchange


@dataclass(frozen=True)
class Pool:
    """One per-IP counter the exchange keeps: `limit` weight per `window_seconds`."""

    name: str
    limit: int
    window_seconds: float


@dataclass(frozen=True)
class RatePlan:
    exchange: Exchange
    pools: tuple[Pool, ...]
    #: path -> [(pool name, weight)] for every path a check may call
    weights: Callable[[str], list[tuple[str, int]]]
    #: what the audit's light check is expected to cost, reserved before it runs
    audit_check_paths: tuple[str, ...]
    #: how long to back off when the exchange throttles without saying for how long
    default_backoff_seconds: float = 2.0
    max_backoff_seconds: float = 300.0
    notes: str = field(default="", compare=False)

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

    def checks_per_second(self, share: float) -> float:
        """The rate bound of the audit: the scarcest pool's budget over the check's cost in it."""
        cost = self.audit_check_cost()
        return min(
            self.pool(name).limit * share / self.pool(name).window_seconds / weight for name, weight in cost.items()
        )
