"""Fixtures shared by the whole suite."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from datetime import date

import httpx
import pytest

from keyhealth.adapters.http_transport import new_http_client
from keyhealth.domain.model import PlannedEgressIp
from simulators.base import ExchangeSimulator, SimRequest, SimResponse, SimulatorServer

# The simulators see this loopback alias as our peer, as the exchanges see the NAT's Elastic IP.
EGRESS_IP = "127.0.0.2"
# A second egress address, for deployments with one NAT gateway per availability zone.
SECOND_EGRESS_IP = "127.0.0.3"
# An egress address the platform announced (PlannedEgressIps), and the day it takes effect: keys must list it.
PLANNED_EGRESS_IP = "198.51.100.20"
PLANNED_EGRESS = PlannedEgressIp(PLANNED_EGRESS_IP, date(2027, 1, 15))


@pytest.fixture(scope="session")
def egress_client() -> Iterator[httpx.Client]:
    """One client leaving from EGRESS_IP, with short timeouts so timeout tests stay fast."""
    client = new_http_client(source_address=EGRESS_IP, connect_timeout=1.0, read_timeout=1.0)
    yield client
    client.close()


class SimulatorSlot(ExchangeSimulator):
    """A server's stand-in simulator: answers as whichever simulator a test puts in it, so that
    servers start once per session and each test still gets fresh simulators."""

    name = "slot"

    def __init__(self) -> None:
        super().__init__()
        self.current: ExchangeSimulator | None = None

    def __call__(self, request: SimRequest) -> SimResponse | None:
        # Chosen once, on arrival: a slow answer still outstanding when its test ends (a timeout
        # test) must go to that test's simulator, not to the next test's in this slot.
        simulator = self.current
        if simulator is None:
            return SimResponse(503, {"error": "no simulator in this slot"})
        pause = simulator.delay()
        if pause:
            time.sleep(pause)
        return simulator(request)


@pytest.fixture(scope="session")
def _simulator_servers() -> Iterator[list[tuple[SimulatorSlot, SimulatorServer]]]:
    servers: list[tuple[SimulatorSlot, SimulatorServer]] = []
    yield servers  # grown on demand by `serve`
    for _, server in servers:
        server.stop()


@pytest.fixture
def serve(
    _simulator_servers: list[tuple[SimulatorSlot, SimulatorServer]],
) -> Iterator[Callable[[ExchangeSimulator], str]]:
    """`serve(simulator) -> base URL`: a real loopback server answering as `simulator` for this test."""
    used = 0

    def use(simulator: ExchangeSimulator) -> str:
        nonlocal used
        if used == len(_simulator_servers):
            slot = SimulatorSlot()
            _simulator_servers.append((slot, SimulatorServer(slot).start()))
        slot, server = _simulator_servers[used]
        slot.current = simulator
        used += 1
        return server.url

    yield use
    for slot, _ in _simulator_servers[:used]:
        slot.current = None


@pytest.fixture
def all_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Capture every log record at DEBUG, for tests that assert nothing secret is logged.

    httpx and httpcore are turned up too (keyhealth keeps them at WARNING): even an operator
    who enables their debug logs must not see a credential. botocore stays quiet: at DEBUG it
    logs request bodies, which is why keyhealth pins it to WARNING in production as well.
    """
    caplog.set_level(logging.DEBUG)
    for name in ("httpx", "httpcore"):
        caplog.set_level(logging.DEBUG, logger=name)
    return caplog
