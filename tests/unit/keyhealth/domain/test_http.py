"""HTTP as plain values: the answers' helpers and Retry-After in both of its forms."""

from __future__ import annotations

from email.utils import parsedate_to_datetime

import pytest

from keyhealth.domain.http import HttpRequest, HttpResponse, retry_after_seconds


def test_retry_after_in_seconds_and_as_an_http_date():
    target = parsedate_to_datetime("Fri, 15 Jan 2027 08:00:00 GMT").timestamp()
    assert retry_after_seconds("30", target) == 30
    assert retry_after_seconds("-5", target) == 0
    assert retry_after_seconds("Fri, 15 Jan 2027 08:00:00 GMT", target - 120) == pytest.approx(120)
    assert retry_after_seconds("Fri, 15 Jan 2027 08:00:00 GMT", target + 60) == 0  # a date in the past
    assert retry_after_seconds("soon", target) is None
    assert retry_after_seconds("nan", target) is None
    assert retry_after_seconds("inf", target) is None
    assert retry_after_seconds(None, target) is None


def test_a_response_reads_headers_in_any_case_and_refuses_a_body_that_is_not_json():
    response = HttpResponse(429, {"retry-after": "3"}, b"<html>busy</html>")
    assert response.header("Retry-After") == "3"
    assert not response.is_success
    with pytest.raises(ValueError, match="Expecting value"):
        response.json()
    assert HttpResponse(200, {}, b'{"a": 1}').json() == {"a": 1}


def test_a_request_knows_its_path():
    assert HttpRequest("GET", "https://api.test/v1/x?timestamp=1").path == "/v1/x"
