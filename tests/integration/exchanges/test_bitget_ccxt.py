"""ccxt's own Bitget client against the Bitget simulator.

ccxt signs requests its own way (ccxt/bitget.py `sign()`); if the simulator accepts them, it
verifies signatures as Bitget does, and ccxt's reading of each error answer shows that the
simulator's errors are the ones ccxt knows from the real exchange. ccxt connects from
127.0.0.1 (it cannot pick its source address), so the keys here whitelist 127.0.0.1.
"""

from __future__ import annotations

import pytest

from simulators.base import Fault
from simulators.bitget import BitgetSimulator

ccxt = pytest.importorskip("ccxt")

pytestmark = pytest.mark.ccxt

CCXT_IP = "127.0.0.1"
SECRET = "ccxt-secret-5b2e"
PASSPHRASE = "CcxtPass123"


@pytest.fixture
def sim() -> BitgetSimulator:
    return BitgetSimulator()


@pytest.fixture
def url(serve, sim) -> str:
    return serve(sim)


def client(url: str, api_key: str, secret: str = SECRET, password: str = PASSPHRASE):
    exchange = ccxt.bitget(
        {
            "apiKey": api_key,
            "secret": secret,
            "password": password,
            "enableRateLimit": False,  # let the simulator, not ccxt's throttle, do the limiting
            "timeout": 3000,
        }
    )
    exchange.urls["api"] = {name: url for name in exchange.urls["api"]}
    return exchange


def add_key(sim: BitgetSimulator, *, unified: bool = False, ips=(CCXT_IP,), **kwargs):
    kwargs.setdefault("secret", SECRET)
    kwargs.setdefault("passphrase", PASSPHRASE)
    return sim.add_key(sim.add_account(unified=unified), ips=ips, **kwargs)


def test_ccxt_signed_classic_request_is_accepted(sim, url):
    key = add_key(sim, authorities=("stor", "stow", "coow"))

    answer = client(url, key.api_key).private_spot_get_v2_spot_account_info()

    assert answer["code"] == "00000"
    assert answer["data"]["userId"] == key.account.user_id
    assert answer["data"]["authorities"] == ["stor", "stow", "coow"]


def test_ccxt_signed_unified_request_is_accepted(sim, url):
    key = add_key(sim, unified=True)

    answer = client(url, key.api_key).private_uta_get_v3_account_info()

    assert answer["data"]["uid"] == key.account.user_id


def test_ccxt_signed_request_with_a_query_is_accepted(sim, url):
    """ccxt sorts the query and signs it raw: the simulator must verify those exact bytes."""
    key = add_key(sim)

    answer = client(url, key.api_key).private_spot_get_v2_spot_account_info({"zeta": "1", "alpha": "2"})

    assert answer["code"] == "00000"


def test_unknown_key_is_an_authentication_error(sim, url):
    with pytest.raises(ccxt.AuthenticationError, match="40037"):
        client(url, "bg_" + "1" * 32).private_spot_get_v2_spot_account_info()


def test_malformed_key_is_an_authentication_error(sim, url):
    with pytest.raises(ccxt.AuthenticationError, match="40006"):
        client(url, "garbage").private_spot_get_v2_spot_account_info()


def test_wrong_secret_is_an_authentication_error(sim, url):
    key = add_key(sim)

    with pytest.raises(ccxt.AuthenticationError, match="40009"):
        client(url, key.api_key, secret="not-the-secret").private_spot_get_v2_spot_account_info()


def test_wrong_passphrase_is_an_authentication_error(sim, url):
    key = add_key(sim)

    with pytest.raises(ccxt.AuthenticationError, match="40012"):
        client(url, key.api_key, password="WrongPass1").private_spot_get_v2_spot_account_info()


def test_ip_not_whitelisted_is_permission_denied(sim, url):
    key = add_key(sim, ips=("127.0.0.2",))

    with pytest.raises(ccxt.PermissionDenied, match="40018"):
        client(url, key.api_key).private_spot_get_v2_spot_account_info()


def test_uid_throttling_is_ddos_protection(sim, url):
    key = add_key(sim)
    bitget = client(url, key.api_key)

    bitget.private_spot_get_v2_spot_account_info()
    with pytest.raises((ccxt.DDoSProtection, ccxt.RateLimitExceeded), match="429"):
        bitget.private_spot_get_v2_spot_account_info()


def test_ip_lockout_is_ddos_protection(serve):
    sim = BitgetSimulator(ip_requests_per_minute=1)
    bitget = client(serve(sim), "bg_" + "2" * 32)

    bitget.public_common_get_v2_public_time()
    with pytest.raises((ccxt.DDoSProtection, ccxt.RateLimitExceeded)):
        bitget.public_common_get_v2_public_time()


def test_unified_account_on_the_classic_endpoint_is_permission_denied(sim, url):
    key = add_key(sim, unified=True)

    with pytest.raises(ccxt.PermissionDenied, match="40085"):
        client(url, key.api_key).private_spot_get_v2_spot_account_info()


def test_expired_timestamp_is_invalid_nonce(serve):
    sim = BitgetSimulator(time_offset_ms=120_000)
    url = serve(sim)
    key = add_key(sim)

    with pytest.raises(ccxt.InvalidNonce, match="40008"):
        client(url, key.api_key).private_spot_get_v2_spot_account_info()


def test_maintenance_is_an_exchange_error(sim, url):
    key = add_key(sim)
    sim.fault = Fault.MAINTENANCE

    # ccxt reads the body code first: 40015 ("System is abnormal") is a plain ExchangeError there.
    with pytest.raises(ccxt.ExchangeError, match="40015"):
        client(url, key.api_key).private_spot_get_v2_spot_account_info()


def test_front_outage_is_exchange_not_available(sim, url):
    key = add_key(sim)
    sim.fault = Fault.UNAVAILABLE

    with pytest.raises(ccxt.ExchangeNotAvailable):
        client(url, key.api_key).private_spot_get_v2_spot_account_info()
