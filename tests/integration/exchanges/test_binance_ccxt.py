"""ccxt's own Binance client against the Binance simulator: an independent check that the
simulator verifies signatures (HMAC, Ed25519, RSA) the way Binance does, and that its
errors fall into the ccxt exception families the real exchange's errors fall into.

ccxt connects from 127.0.0.1 (it cannot choose its source address), so the keys here
whitelist 127.0.0.1. Markets are never loaded: only implicit API methods are called, and
every `urls['api']` entry points at the simulator, so nothing leaves the machine.
"""

from __future__ import annotations

import time

import ccxt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from simulators.base import Fault
from simulators.binance import BinanceSimulator

pytestmark = pytest.mark.ccxt

CCXT_IP = "127.0.0.1"
HMAC_KEY = "C" * 60 + "0001"
ED25519_KEY = "C" * 60 + "0002"
RSA_KEY = "C" * 60 + "0003"
ELSEWHERE_KEY = "C" * 60 + "0004"
SECRET = "ccxt-simulator-secret"


@pytest.fixture(scope="module")
def asymmetric_keys() -> tuple[ed25519.Ed25519PrivateKey, rsa.RSAPrivateKey]:
    return ed25519.Ed25519PrivateKey.generate(), rsa.generate_private_key(public_exponent=65537, key_size=2048)


def pem(private_key: ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey) -> tuple[str, str]:
    private = private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = (
        private_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


@pytest.fixture
def sim(asymmetric_keys) -> BinanceSimulator:
    simulator = BinanceSimulator(clock=time.time)  # ccxt stamps requests with the real clock
    ed_key, rsa_key = asymmetric_keys
    simulator.add_key(HMAC_KEY, uid=1, secret=SECRET, ip_whitelist=(CCXT_IP,), enable_futures=True)
    simulator.add_key(ED25519_KEY, uid=2, key_type="ed25519", public_key_pem=pem(ed_key)[1], ip_whitelist=(CCXT_IP,))
    simulator.add_key(RSA_KEY, uid=3, key_type="rsa", public_key_pem=pem(rsa_key)[1], ip_whitelist=(CCXT_IP,))
    simulator.add_key(ELSEWHERE_KEY, uid=4, secret=SECRET, ip_whitelist=("203.0.113.7",))
    return simulator


@pytest.fixture
def url(serve, sim: BinanceSimulator) -> str:
    return serve(sim)


def client(url: str, api_key: str = HMAC_KEY, secret: str = SECRET) -> ccxt.binance:
    exchange = ccxt.binance({"apiKey": api_key, "secret": secret, "enableRateLimit": False, "timeout": 3000})
    for name, value in list(exchange.urls["api"].items()):
        if isinstance(value, str):
            # Keep each API's path (e.g. /sapi/v1, /fapi/v1), swap the host for the simulator.
            path = "/" + value.split("://", 1)[1].split("/", 1)[1] if value.count("/") > 2 else ""
            exchange.urls["api"][name] = url + path
    return exchange


def test_every_api_url_points_at_the_simulator(url: str, sim) -> None:
    exchange = client(url)
    assert exchange.urls["api"]["sapi"] == url + "/sapi/v1"
    assert exchange.urls["api"]["fapiPrivate"] == url + "/fapi/v1"
    assert all(v.startswith(url) for v in exchange.urls["api"].values() if isinstance(v, str))


def test_hmac_request_is_accepted(url: str, sim) -> None:
    answer = client(url).sapi_get_account_apirestrictions()
    assert answer["enableReading"] is True
    assert answer["ipRestrict"] is True
    assert sim.stats["http_200"] == 1


def test_ed25519_pem_secret_is_accepted(url: str, sim, asymmetric_keys) -> None:
    private, _ = pem(asymmetric_keys[0])
    answer = client(url, ED25519_KEY, private).sapi_get_account_apirestrictions()
    assert answer["enableReading"] is True


def test_rsa_pem_secret_is_accepted(url: str, sim, asymmetric_keys) -> None:
    private, _ = pem(asymmetric_keys[1])
    assert client(url, RSA_KEY, private).sapi_get_account_apirestrictions()["enableReading"] is True


def test_spot_account_and_futures_config_are_accepted(url: str, sim) -> None:
    exchange = client(url)
    assert exchange.private_get_account()["uid"] == 1
    assert exchange.fapiprivate_get_accountconfig()["canTrade"] is True


def test_malformed_key_is_authentication_error(url: str, sim) -> None:
    with pytest.raises(ccxt.AuthenticationError, match="-2014"):
        client(url, api_key="not-a-key").sapi_get_account_apirestrictions()


def test_unknown_key_is_authentication_error(url: str, sim) -> None:
    with pytest.raises(ccxt.AuthenticationError, match="-2015"):
        client(url, api_key="D" * 64).sapi_get_account_apirestrictions()


def test_wrong_secret_is_authentication_error(url: str, sim) -> None:
    with pytest.raises(ccxt.AuthenticationError, match="-1022"):
        client(url, secret="wrong-secret").sapi_get_account_apirestrictions()


def test_wrong_ed25519_key_is_authentication_error(url: str, sim) -> None:
    other, _ = pem(ed25519.Ed25519PrivateKey.generate())
    with pytest.raises(ccxt.AuthenticationError, match="-1022"):
        client(url, ED25519_KEY, other).sapi_get_account_apirestrictions()


def test_ip_not_whitelisted_is_authentication_error(url: str, sim) -> None:
    with pytest.raises(ccxt.AuthenticationError, match="-2015"):
        client(url, api_key=ELSEWHERE_KEY).sapi_get_account_apirestrictions()


def test_throttling_is_ddos_protection_then_ban(serve) -> None:
    simulator = BinanceSimulator(clock=time.time, limits={"sapi": 1})
    simulator.add_key(HMAC_KEY, uid=1, secret=SECRET, ip_whitelist=(CCXT_IP,))
    exchange = client(serve(simulator))
    exchange.sapi_get_account_apirestrictions()
    with pytest.raises(ccxt.DDoSProtection, match="429"):
        exchange.sapi_get_account_apirestrictions()
    with pytest.raises(ccxt.DDoSProtection, match="418"):
        exchange.sapi_get_account_apirestrictions()
    assert simulator.stats[f"http_429:{CCXT_IP}"] == 1
    assert simulator.stats[f"http_418:{CCXT_IP}"] == 1


def test_maintenance_is_on_maintenance(url: str, sim) -> None:
    sim.fault = Fault.MAINTENANCE
    with pytest.raises(ccxt.OnMaintenance):
        client(url).sapi_get_account_apirestrictions()
