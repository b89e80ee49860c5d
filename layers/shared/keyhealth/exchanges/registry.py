"""The exchanges keyhealth knows: one spec per exchange module, and nothing else to edit.

Adding an exchange means one module here that exports `SPEC` (and its simulator and tests):
request validation, finding texts, configuration, the audit's rate plans and the checkers
all loop over `SPECS`; tests/unit/keyhealth/exchanges/test_registry.py proves each spec is
wired everywhere. Modules are found by looking in this package, so this file never changes.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Mapping, Sequence
from enum import StrEnum

from keyhealth.domain.exchange import CheckerContext, ExchangeChecker, ExchangeName, ExchangeSpec
from keyhealth.domain.http import HttpTransport
from keyhealth.domain.model import PlannedEgressIp
from keyhealth.domain.ratelimits import RatePlan

_NOT_EXCHANGES = frozenset({"base", "registry"})


def _discover() -> tuple[ExchangeSpec, ...]:
    package = importlib.import_module(__package__ or "keyhealth.exchanges")
    specs = []
    for module in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if module.name in _NOT_EXCHANGES or module.name.startswith("_"):
            continue
        spec = getattr(importlib.import_module(f"{__package__}.{module.name}"), "SPEC", None)
        if not isinstance(spec, ExchangeSpec):
            raise TypeError(f"keyhealth.exchanges.{module.name} exports no SPEC")
        if spec.name != module.name:
            raise TypeError(f"keyhealth.exchanges.{module.name} declares the name {spec.name!r}")
        specs.append(spec)
    return tuple(specs)


#: Every exchange, in a stable order (by name).
SPECS: tuple[ExchangeSpec, ...] = _discover()
_BY_NAME: dict[ExchangeName, ExchangeSpec] = {spec.name: spec for spec in SPECS}
NAMES: tuple[ExchangeName, ...] = tuple(_BY_NAME)
#: What a check costs on each exchange, for the audit's shared budget.
RATE_PLANS: dict[ExchangeName, RatePlan] = {spec.name: spec.rate_plan for spec in SPECS}

#: The exchange names as an enum, for the edges that validate input and document it (the API's
#: request models, the OpenAPI document): `Exchange.BINANCE == "binance"`. The domain takes names.
#: (mypy reads an enum's members from a literal only: these come from the registry, hence the ignore)
Exchange = StrEnum("Exchange", {name.upper(): name for name in NAMES})  # type: ignore[misc]


class UnknownExchange(ValueError):
    """A name no exchange module declares."""


def spec(name: str) -> ExchangeSpec:
    try:
        return _BY_NAME[name]
    except KeyError:
        raise UnknownExchange(f"unknown exchange {name!r}") from None


def build_checkers(
    *,
    transport: HttpTransport,
    urls: Mapping[str, str],
    egress_ips: Sequence[str],
    clock: Callable[[], float],
    planned_ips: Sequence[PlannedEgressIp] = (),
) -> dict[ExchangeName, ExchangeChecker]:
    """One checker per exchange, sharing one transport (one HTTP client per process)."""
    context = CheckerContext(
        transport=transport, urls=urls, egress_ips=tuple(egress_ips), clock=clock, planned_ips=tuple(planned_ips)
    )
    return {s.name: s.build_checker(context) for s in SPECS}
