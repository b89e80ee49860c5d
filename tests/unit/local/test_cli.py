"""The CLI's request signing, principal header and exit codes, without a server (httpx MockTransport)."""

from __future__ import annotations

import json

import httpx
import pytest

from local import cli

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
    api = cli.ApiClient(DEPLOYED, principal=None, transport=transport)

    api.request("POST", "/bindings", body={"user_id": "u-1"})

    headers = seen[0].headers
    assert headers["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
    assert "/eu-west-1/execute-api/aws4_request" in headers["Authorization"]
    assert "x-amz-date" in headers
    assert cli.PRINCIPAL_HEADER not in headers
    assert json.loads(seen[0].content) == {"user_id": "u-1"}
    assert str(seen[0].url) == f"{DEPLOYED}/bindings"


def test_the_local_api_is_unsigned_and_names_the_principal(aws_credentials):
    seen, transport = recording()
    api = cli.ApiClient("http://127.0.0.1:3000", principal="arn:aws:iam::1:user/x", transport=transport)

    api.request("GET", "/bindings", query={"user_id": "u-1", "cursor": None})

    assert "Authorization" not in seen[0].headers
    assert seen[0].headers[cli.PRINCIPAL_HEADER] == "arn:aws:iam::1:user/x"
    assert seen[0].url.params == httpx.QueryParams({"user_id": "u-1"})


def test_without_aws_credentials_a_deployed_api_is_a_usage_error(monkeypatch, tmp_path):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    _, transport = recording()
    api = cli.ApiClient(DEPLOYED, transport=transport)

    with pytest.raises(cli.CliError) as raised:
        api.request("GET", "/egress-ips")
    assert raised.value.code == cli.USAGE


@pytest.mark.parametrize(
    ("status", "code"),
    [(400, 2), (403, 2), (404, 2), (409, 2), (422, 1), (429, 3), (500, 3), (502, 3), (503, 3)],
)
def test_http_answers_map_to_exit_codes(status, code):
    assert cli.exit_of_http(status) == code


@pytest.mark.parametrize(("status", "code"), [("healthy", 0), ("degraded", 0), ("failing", 1), ("unknown", 3)])
def test_a_report_status_is_the_exit_code(status, code, capsys):
    args = cli.build_parser().parse_args(["verify", "bnd_1"])
    args.json = False
    answer = cli.Answer(200, {"binding": {"binding_id": "bnd_1"}, "report": {"status": status}}, httpx.Headers())

    assert cli._checked(args, answer, (200,)) == code


def test_secrets_come_from_the_environment_before_any_prompt(monkeypatch):
    monkeypatch.setenv("KEYHEALTH_API_SECRET", "s3cret")
    monkeypatch.setattr(cli, "_interactive", lambda: pytest.fail("prompted although the env var is set"))

    assert cli.read_value(None, "KEYHEALTH_API_SECRET", "api secret") == "s3cret"


def test_a_missing_secret_without_a_terminal_is_a_one_line_usage_error(monkeypatch):
    monkeypatch.delenv("KEYHEALTH_API_SECRET", raising=False)
    monkeypatch.setattr(cli, "_interactive", lambda: False)

    with pytest.raises(cli.CliError, match="set KEYHEALTH_API_SECRET") as raised:
        cli.read_value(None, "KEYHEALTH_API_SECRET", "api secret")
    assert raised.value.code == cli.USAGE


def test_options_work_before_or_after_the_command():
    parser = cli.build_parser()
    assert parser.parse_args(["--json", "list"]).json is True
    assert parser.parse_args(["list", "--json"]).json is True
