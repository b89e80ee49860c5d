"""The keyhealth API over HTTP: SigV4-signed for a deployed stack, plain (with a principal) for the local one."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from keyhealth_cli.errors import UNKNOWN, CliError

PRINCIPAL_HEADER = "X-Keyhealth-Principal"
LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")


@dataclass
class Answer:
    status: int
    body: Any
    headers: httpx.Headers


def default_api_url() -> str:
    return os.environ.get("KEYHEALTH_API_URL") or f"http://127.0.0.1:{os.environ.get('KEYHEALTH_PORT') or 3000}"


class ApiClient:
    """The keyhealth API over HTTP: SigV4-signed for a deployed stack, plain for the local one."""

    def __init__(
        self,
        base_url: str,
        *,
        local: bool | None = None,
        principal: str | None = None,
        region: str | None = None,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        split = urlsplit(base_url)
        if split.scheme not in ("http", "https") or not split.hostname:
            raise CliError(f"the API URL must be http(s)://host[:port][/v1], got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.local = local if local is not None else split.hostname in LOOPBACK
        self.principal = principal
        self.region = region
        self._http = httpx.Client(timeout=timeout, transport=transport)

    def close(self) -> None:
        self._http.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        params = {k: str(v) for k, v in (query or {}).items() if v is not None}
        url = str(httpx.URL(self.base_url + path, params=params or None))
        payload = json.dumps(body).encode() if body is not None else b""
        all_headers = {"Accept": "application/json", **(headers or {})}
        if body is not None:
            all_headers["Content-Type"] = "application/json"
        if self.local:
            if self.principal:
                all_headers[PRINCIPAL_HEADER] = self.principal
        else:
            all_headers = self._signed(method, url, payload, all_headers)
        try:
            response = self._http.request(method, url, content=payload or None, headers=all_headers)
        except httpx.TimeoutException:
            raise CliError(f"the API at {self.base_url} did not answer in time", UNKNOWN) from None
        except httpx.TransportError as error:
            hint = " (is `make run` running?)" if self.local else ""
            reason = str(error) or type(error).__name__
            raise CliError(f"cannot reach the API at {self.base_url}: {reason}{hint}", UNKNOWN) from None
        try:
            parsed = response.json() if response.content else None
        except ValueError:
            parsed = response.text
        return Answer(response.status_code, parsed, response.headers)

    def _signed(self, method: str, url: str, payload: bytes, headers: dict[str, str]) -> dict[str, str]:
        """SigV4 for API Gateway (service execute-api) with the caller's AWS credentials."""
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.exceptions import BotoCoreError
        from botocore.session import Session

        try:
            session = Session()
            credentials = session.get_credentials()
        except BotoCoreError as error:
            raise CliError(f"cannot read AWS credentials: {error}") from None
        if credentials is None:
            raise CliError("no AWS credentials found (set AWS_PROFILE or run `aws sso login`), or use --local")
        region = self.region or _region_of(url) or session.get_config_variable("region")
        if not region:
            raise CliError("cannot tell the API's region: pass --region or set AWS_REGION")
        request = AWSRequest(method=method, url=url, data=payload, headers=headers)
        SigV4Auth(credentials.get_frozen_credentials(), "execute-api", region).add_auth(request)
        return dict(request.headers.items())


def _region_of(url: str) -> str | None:
    """abc123.execute-api.eu-west-1.amazonaws.com -> eu-west-1."""
    parts = (urlsplit(url).hostname or "").split(".")
    if "execute-api" in parts and parts.index("execute-api") + 1 < len(parts):
        return parts[parts.index("execute-api") + 1]
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
