"""The CLI's request signing and principal header, without a server (httpx MockTransport)."""

from __future__ import annotations

import json

import httpx
import pytest

from keyhealth_cli import api
from keyhealth_cli.errors import USAGE, CliError

DEPLOYED = "https://abc123.execute-api.eu-west-1.amazonaws.com/v1"


def recording(status: int = 200, body: object = None) -> tuple[list[httpx.Request], httpx.MockTransport]:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(status, json=body if body is not None else {"egress_ips": ["203.0.113.10"]})

    return seen, httpx.MockTransport(answer)


@pytest.fixture
def aws_credentials(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


def test_a_deployed_api_gets_sigv4_for_execute_api_in_the_urls_region(aws_credentials):
    seen, transport = recording()
    client = api.ApiClient(DEPLOYED, principal=None, transport=transport)

    client.request("POST", "/bindings", body={"user_id": "u-1"})

    headers = seen[0].headers
    assert headers["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
    assert "/eu-west-1/execute-api/aws4_request" in headers["Authorization"]
    assert "x-amz-date" in headers
    assert api.PRINCIPAL_HEADER not in headers
    assert json.loads(seen[0].content) == {"user_id": "u-1"}
    assert str(seen[0].url) == f"{DEPLOYED}/bindings"


def test_the_local_api_is_unsigned_and_names_the_principal(aws_credentials):
    seen, transport = recording()
    client = api.ApiClient("http://127.0.0.1:3000", principal="arn:aws:iam::1:user/x", transport=transport)

    client.request("GET", "/bindings", query={"user_id": "u-1", "cursor": None})

    assert "Authorization" not in seen[0].headers
    assert seen[0].headers[api.PRINCIPAL_HEADER] == "arn:aws:iam::1:user/x"
    assert seen[0].url.params == httpx.QueryParams({"user_id": "u-1"})


def test_without_aws_credentials_a_deployed_api_is_a_usage_error(monkeypatch, tmp_path):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    _, transport = recording()
    client = api.ApiClient(DEPLOYED, transport=transport)

    with pytest.raises(CliError) as raised:
        client.request("GET", "/egress-ips")
    assert raised.value.code == USAGE
