"""Fixtures of the adapter tests: the bindings table on moto, as template.yaml declares it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from moto import mock_aws

from tests.support.aws import SESSION, TABLE
from tests.support.template import create_table


@pytest.fixture
def dynamodb() -> Iterator[Any]:
    with mock_aws():
        client = SESSION.client("dynamodb")
        create_table(client, "BindingsTable", TABLE)
        yield client
