"""Every finding has a message and a remedy a user of that exchange can follow."""

from datetime import UTC, datetime

import pytest

from keyhealth.domain.findings import make_finding
from keyhealth.domain.model import FindingCode
from keyhealth.exchanges.registry import Exchange, spec


@pytest.mark.parametrize("exchange", list(Exchange))
@pytest.mark.parametrize("code", list(FindingCode))
def test_every_code_has_words_for_every_exchange(code, exchange):
    finding = make_finding(code, spec(exchange).ui, egress_ips=["203.0.113.10"])
    assert finding.code is code
    assert len(finding.message) > 20
    assert len(finding.remedy) > 20
    assert "{" not in finding.message + finding.remedy  # no unfilled template


def test_ip_remedy_names_the_address_and_where_to_add_it():
    finding = make_finding(FindingCode.IP_NOT_WHITELISTED, spec(Exchange.BITGET).ui, egress_ips=["203.0.113.10"])
    assert finding.remedy == "Add 203.0.113.10 to the key's IP whitelist on Bitget: API Management, Edit, IP whitelist."
    assert "203.0.113.10" in finding.message


def test_ip_finding_names_only_the_missing_addresses():
    finding = make_finding(
        FindingCode.IP_NOT_WHITELISTED,
        spec(Exchange.BINGX).ui,
        egress_ips=["203.0.113.10", "203.0.113.11"],
        missing_ips=["203.0.113.11"],
    )
    assert "203.0.113.11" in finding.remedy
    assert "203.0.113.10" not in finding.remedy


def test_scope_finding_uses_the_exchanges_own_permission_label():
    binance = make_finding(FindingCode.SCOPE_NOT_PERMITTED, spec(Exchange.BINANCE).ui, scopes=["futures"])
    bingx = make_finding(FindingCode.SCOPE_NOT_PERMITTED, spec(Exchange.BINGX).ui, scopes=["futures"])
    assert "Enable Futures" in binance.remedy
    assert "Perpetual Futures Trading" in bingx.remedy


def test_key_rejected_lists_the_candidates():
    finding = make_finding(
        FindingCode.KEY_REJECTED,
        spec(Exchange.BINANCE).ui,
        egress_ips=["203.0.113.10"],
        candidates=[FindingCode.INVALID_API_KEY, FindingCode.IP_NOT_WHITELISTED],
    )
    assert "does not exist" in finding.message
    assert "203.0.113.10 is not on its list" in finding.message


def test_expiry_is_dated_and_detail_is_appended():
    finding = make_finding(
        FindingCode.TRADING_PERMISSION_EXPIRING,
        spec(Exchange.BINANCE).ui,
        expires_at=datetime(2026, 12, 1, tzinfo=UTC),
        detail="Extra sentence.",
    )
    assert "2026-12-01T00:00:00Z" in finding.message
    assert finding.message.endswith("Extra sentence.")


def test_exchange_answer_is_kept_verbatim():
    finding = make_finding(
        FindingCode.INVALID_SECRET, spec(Exchange.BINANCE).ui, exchange_code=-1022, exchange_message="Signature for ..."
    )
    assert (finding.exchange_code, finding.exchange_message) == (-1022, "Signature for ...")
