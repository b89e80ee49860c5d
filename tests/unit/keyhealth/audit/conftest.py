"""The audit use cases' fixtures: a fresh world of fakes per test (support.py)."""

from __future__ import annotations

import pytest

from tests.unit.keyhealth.audit.support import World, build_world


@pytest.fixture
def world() -> World:
    return build_world()
