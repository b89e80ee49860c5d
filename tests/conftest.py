"""Fixtures shared by the whole suite."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import httpx
import pytest

from keyhealth.exchanges.base import new_http_client
from simulators.base import ExchangeSimulator, SimulatorServer

# The simulators see this loopback alias as our peer, as the exchanges see the NAT's Elastic IP.
EGRESS_IP = "127.0.0.2"
# A second egress address, for deployments with one NAT gateway per availability zone.
SECOND_EGRESS_IP = "127.0.0.3"


@pytest.fixture(scope="session")
def egress_client() -> Iterator[httpx.Client]:
    """One client leaving from EGRESS_IP, with short timeouts so timeout tests stay fast."""
    client = new_http_client(source_address=EGRESS_IP, connect_timeout=1.0, read_timeout=1.0)
    yield client
    client.close()


@pytest.fixture
def serve() -> Iterator[callable]:
    """`serve(simulator) -> base URL`: runs simulators for one test, stopped afterwards."""
    servers: list[SimulatorServer] = []

    def start(simulator: ExchangeSimulator) -> str:
        server = SimulatorServer(simulator).start()
        servers.append(server)
        return server.url

    yield start
    for server in servers:
        server.stop()


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
