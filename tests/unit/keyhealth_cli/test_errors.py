"""HTTP answers as the CLI's exit codes."""

from __future__ import annotations

import pytest

from keyhealth_cli import errors


@pytest.mark.parametrize(
    ("status", "code"),
    [(400, 2), (403, 2), (404, 2), (409, 2), (422, 1), (429, 3), (500, 3), (502, 3), (503, 3)],
)
def test_http_answers_map_to_exit_codes(status, code):
    assert errors.exit_of_http(status) == code
