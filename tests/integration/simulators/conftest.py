"""Fixtures of the simulator tests."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest


@pytest.fixture
def loopback_client() -> Iterator[httpx.Client]:
    """Leaves from 127.0.0.1, an address no test key whitelists unless it says so."""
    with httpx.Client(timeout=2.0) as client:
        yield client
