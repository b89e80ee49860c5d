"""The orphan sweeper's stack tests drive Secrets Manager's own mechanics (moto's secret ages, ListSecrets
pages, DescribeSecret and DeleteSecret faults), so they run on the Secrets Manager store only. The sweeper
over the KMS store (its credentials-table scan, ages from the item, scheduling) is tested in
tests/integration/adapters/test_kms_credentials.py."""

from __future__ import annotations

import pytest


@pytest.fixture(params=["secretsmanager"])
def credential_store(request: pytest.FixtureRequest) -> str:
    return str(request.param)
