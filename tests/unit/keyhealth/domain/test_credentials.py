"""Secrets cannot be printed, formatted or pickled by accident."""

import logging
import pickle

import pytest

from keyhealth.domain.credentials import Credentials, KeyType, Secret, mask_api_key

CANARY = "CANARY-credential-7f3a9c"


def test_secret_hides_its_value_everywhere_it_could_be_printed(caplog):
    caplog.set_level(logging.DEBUG)
    secret = Secret(CANARY)
    creds = Credentials(api_key="vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A", api_secret=secret)
    texts = [repr(secret), str(secret), f"{secret}", f"{secret!r}", repr(creds), str(creds), f"{creds}"]
    logging.getLogger("test").info("creds %s %r", creds, secret)
    texts.append(caplog.text)
    assert all(CANARY not in t for t in texts)
    assert "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A" not in repr(creds)
    assert secret.reveal() == CANARY


def test_secret_refuses_to_be_pickled_or_changed():
    secret = Secret(CANARY)
    with pytest.raises(TypeError):
        pickle.dumps(secret)
    with pytest.raises(AttributeError):
        secret._value = "other"


def test_secrets_compare_by_value():
    assert Secret("a") == Secret("a")
    assert Secret("a") != Secret("b")


@pytest.mark.parametrize(
    ("key", "masked"),
    [
        ("vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A", "vmPU...Eh8A"),
        ("bg_0123456789abcdef", "bg_0...cdef"),
        ("short", "sh..."),
    ],
)
def test_api_keys_are_masked_for_people(key, masked):
    assert mask_api_key(key) == masked


def test_key_type_defaults_to_hmac():
    assert Credentials("k", Secret("s")).key_type is KeyType.HMAC
