"""Our own exchange simulators: one module per exchange, named as the exchange's keyhealth module.

Each module exports `SIMULATOR` (its ExchangeSimulator class) and `seed_demo(simulator,
egress_ip)`. `simulator_module(name)` finds one, so the local stack and the demo checks need
no list of exchanges: they loop over keyhealth's registry. The simulators import nothing from
keyhealth (they check its adapters independently).
"""

from __future__ import annotations

import importlib
from types import ModuleType


def simulator_module(exchange: str) -> ModuleType:
    """The simulator module of `exchange` (simulators.<exchange>), checked for what it must export."""
    module = importlib.import_module(f"{__name__}.{exchange}")
    if not hasattr(module, "SIMULATOR") or not hasattr(module, "seed_demo"):
        raise TypeError(f"simulators.{exchange} must export SIMULATOR and seed_demo")
    return module
