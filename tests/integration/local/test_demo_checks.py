"""`make check-demo`: every demo key, checked through the real adapters over real HTTP,
gets the report its demo definition promises, and nothing secret is printed."""

from local import demo_checks
from tests.conftest import EGRESS_IP


def test_every_demo_key_is_reported_as_promised(capsys):
    assert demo_checks.main(["--egress-ip", EGRESS_IP]) == 0
    output = capsys.readouterr().out

    outcomes = demo_checks.check_demo_keys(EGRESS_IP)
    exchanges = {o.key.exchange for o in outcomes}
    statuses = {o.result.report.status.value for o in outcomes}
    assert exchanges == {"binance", "bitget", "bingx"}
    assert statuses == {"healthy", "degraded", "failing"}
    assert all(o.as_expected for o in outcomes)
    for outcome in outcomes:
        assert outcome.key.label in output
        assert outcome.key.api_secret not in output
        if outcome.key.passphrase:
            assert outcome.key.passphrase not in output
