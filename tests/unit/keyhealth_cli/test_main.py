"""The CLI's exit codes for reports, where secrets come from, and its options."""

from __future__ import annotations

import httpx
import pytest

from keyhealth_cli import main
from keyhealth_cli.api import Answer
from keyhealth_cli.errors import USAGE, CliError


@pytest.mark.parametrize(("status", "code"), [("healthy", 0), ("degraded", 0), ("failing", 1), ("unknown", 3)])
def test_a_report_status_is_the_exit_code(status, code, capsys):
    args = main.build_parser().parse_args(["verify", "bnd_1"])
    args.json = False
    answer = Answer(200, {"binding": {"binding_id": "bnd_1"}, "report": {"status": status}}, httpx.Headers())

    assert main._checked(args, answer, (200,)) == code


def test_secrets_come_from_the_environment_before_any_prompt(monkeypatch):
    monkeypatch.setenv("KEYHEALTH_API_SECRET", "s3cret")
    monkeypatch.setattr(main, "_interactive", lambda: pytest.fail("prompted although the env var is set"))

    assert main.read_value(None, "KEYHEALTH_API_SECRET", "api secret") == "s3cret"


def test_a_missing_secret_without_a_terminal_is_a_one_line_usage_error(monkeypatch):
    monkeypatch.delenv("KEYHEALTH_API_SECRET", raising=False)
    monkeypatch.setattr(main, "_interactive", lambda: False)

    with pytest.raises(CliError, match="set KEYHEALTH_API_SECRET") as raised:
        main.read_value(None, "KEYHEALTH_API_SECRET", "api secret")
    assert raised.value.code == USAGE


def test_options_work_before_or_after_the_command():
    parser = main.build_parser()
    assert parser.parse_args(["--json", "list"]).json is True
    assert parser.parse_args(["list", "--json"]).json is True
