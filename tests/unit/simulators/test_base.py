"""The simulators' shared machinery: windows, the real server and the peer address."""

import httpx

from simulators.base import ExchangeSimulator, Fault, FixedWindow, SimRequest, SimResponse, SimulatorServer
from tests.conftest import EGRESS_IP
from tests.support.clock import FakeClock


def test_fixed_window_counts_per_key_and_resets_on_the_boundary():
    clock = FakeClock(1_000.0)
    window = FixedWindow(limit=3, seconds=10, clock=clock)
    assert [window.spend("ip-a")[0] for _ in range(4)] == [True, True, True, False]
    assert window.spend("ip-b") == (True, 1)  # another key has its own count
    assert window.used("ip-a") == 4  # refused requests still count
    assert window.seconds_left() == 10
    clock.now += 10
    assert window.spend("ip-a") == (True, 1)


def test_fixed_window_spends_weight():
    window = FixedWindow(limit=20, seconds=60, clock=FakeClock(1_000.0))
    assert window.spend("ip", weight=20) == (True, 20)
    assert window.spend("ip", weight=1) == (False, 21)


class Echo(ExchangeSimulator):
    name = "echo"

    def handle(self, request: SimRequest) -> SimResponse:
        return SimResponse(
            200,
            {"peer": request.peer_ip, "query": request.query, "body": request.body.decode()},
            headers={"X-Seen": request.header("X-Test") or ""},
        )


def test_server_reports_the_peer_address_and_exact_bytes(egress_client):
    with SimulatorServer(Echo()) as server:
        response = egress_client.post(f"{server.url}/x?b=2&a=%20", content=b'{"k":1}', headers={"X-Test": "yes"})
    assert response.json() == {"peer": EGRESS_IP, "query": "b=2&a=%20", "body": '{"k":1}'}
    assert response.headers["X-Seen"] == "yes"


def test_reset_fault_closes_the_connection_without_an_answer(egress_client):
    simulator = Echo()
    simulator.fault = Fault.RESET
    with SimulatorServer(simulator) as server:
        try:
            egress_client.get(f"{server.url}/x")
            answered = True
        except httpx.TransportError:
            answered = False
    assert not answered
    assert simulator.stats["requests"] == 1


def test_window_scale_shrinks_windows_for_benchmarks():
    assert Echo(window_scale=0.1).window(60) == 6
