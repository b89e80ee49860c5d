"""The local API: HTTP requests in, API Gateway REST proxy events to the real handlers, HTTP out.

Routes come from template.yaml's own `Api` events (method, path, function), so the local API
cannot serve a route the deployed one does not, or miss one it does. Both `/bindings` and
`/v1/bindings` are accepted (the deployed URL carries the stage). What API Gateway's AWS_IAM
authorizer would establish, the caller's IAM principal, is taken from the `X-Keyhealth-Principal`
header here, in local mode only.

Local-only routes live under `/_local/` (health, audit trigger and progress, alerts, demo keys);
the stack registers them with `LocalApi.add_local_route`.
"""

from __future__ import annotations

import base64
import importlib
import json
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from types import ModuleType
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from local.template import resources_of_type
from simulators.base import ThreadedHttpServer

PRINCIPAL_HEADER = "X-Keyhealth-Principal"
DEFAULT_PRINCIPAL = "arn:aws:iam::000000000000:user/local"
STAGE = "v1"
ACCOUNT_ID = "123456789012"  # moto's default account: where the local stack's resources live
LAMBDA_TIMEOUT_MS = 29_000  # the template's Globals.Function.Timeout


@dataclass(frozen=True)
class ApiRoute:
    method: str
    resource: str  # "/bindings/{binding_id}", as API Gateway names it
    function: str  # the template's logical id, e.g. "BindFunction"
    module: str  # "functions.bind.app"
    pattern: re.Pattern[str] = field(compare=False)

    def match(self, method: str, path: str) -> dict[str, str] | None:
        if method != self.method:
            return None
        found = self.pattern.fullmatch(path)
        return {k: unquote(v) for k, v in found.groupdict().items()} if found else None


def _pattern(resource: str) -> re.Pattern[str]:
    parts = [
        f"(?P<{p[1:-1]}>[^/]+)" if p.startswith("{") and p.endswith("}") else re.escape(p) for p in resource.split("/")
    ]
    return re.compile("/".join(parts))


def routes_from_template() -> list[ApiRoute]:
    """Every `Type: Api` event of every function in template.yaml."""
    routes = []
    for logical_id, function in resources_of_type("AWS::Serverless::Function").items():
        props = function["Properties"]
        for event in (props.get("Events") or {}).values():
            if event.get("Type") != "Api":
                continue
            resource, method = event["Properties"]["Path"], event["Properties"]["Method"].upper()
            code_uri = str(props["CodeUri"]).strip("/")  # "functions/bind"
            handler = str(props.get("Handler", "app.lambda_handler")).rsplit(".", 1)[0]
            module = f"{code_uri.replace('/', '.')}.{handler}"
            routes.append(ApiRoute(method, resource, logical_id, module, _pattern(resource)))
    return routes


class LambdaContext:
    """What a handler reads from its context: names, a request id and the time left."""

    memory_limit_in_mb = 512

    def __init__(self, function_name: str) -> None:
        self.function_name = f"keyhealth-local-{function_name}"
        self.invoked_function_arn = f"arn:aws:lambda:us-east-1:{ACCOUNT_ID}:function:{self.function_name}"
        self.aws_request_id = str(uuid.uuid4())
        self._deadline = time.monotonic() + LAMBDA_TIMEOUT_MS / 1000

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


class Functions:
    """The handlers, imported on first use; one invocation at a time per function, as in one
    Lambda container (Powertools resolvers keep the current event on the module)."""

    def __init__(self) -> None:
        self._modules: dict[str, ModuleType] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def _load(self, module: str) -> ModuleType:
        with self._guard:
            if module not in self._modules:
                self._modules[module] = importlib.import_module(module)
                self._locks[module] = threading.Lock()
            return self._modules[module]

    def preload(self, modules: list[str]) -> None:
        """Import handlers before the first request, so that it does not pay for it."""
        for module in modules:
            self._load(module)

    def invoke(self, module: str, event: dict[str, Any]) -> dict[str, Any]:
        self._load(module)
        with self._locks[module]:
            return self._modules[module].lambda_handler(event, LambdaContext(module.split(".")[1]))


def proxy_event(
    route: ApiRoute,
    path: str,
    path_parameters: dict[str, str],
    method: str,
    query: list[tuple[str, str]],
    headers: list[tuple[str, str]],
    body: bytes,
    source_ip: str,
) -> dict[str, Any]:
    """The API Gateway REST proxy event (payload 1.0) the deployed API would send."""
    single: dict[str, str] = {}
    multi: dict[str, list[str]] = {}
    for name, value in headers:
        single[name] = value
        multi.setdefault(name, []).append(value)
    principal = next((v for k, v in single.items() if k.lower() == PRINCIPAL_HEADER.lower()), DEFAULT_PRINCIPAL)
    query_single: dict[str, str] = {}
    query_multi: dict[str, list[str]] = {}
    for name, value in query:
        query_single[name] = value
        query_multi.setdefault(name, []).append(value)
    try:
        text, encoded = body.decode("utf-8"), False
    except UnicodeDecodeError:
        text, encoded = base64.b64encode(body).decode(), True
    account = principal.split(":")[4] if principal.count(":") >= 5 else None
    request_id = str(uuid.uuid4())
    return {
        "resource": route.resource,
        "path": path,
        "httpMethod": method,
        "headers": single or None,
        "multiValueHeaders": multi or None,
        "queryStringParameters": query_single or None,
        "multiValueQueryStringParameters": query_multi or None,
        "pathParameters": path_parameters or None,
        "stageVariables": None,
        "requestContext": {
            "resourceId": "local",
            "resourcePath": route.resource,
            "httpMethod": method,
            "path": f"/{STAGE}{path}",
            "stage": STAGE,
            "protocol": "HTTP/1.1",
            "requestId": request_id,
            "extendedRequestId": request_id,
            "accountId": ACCOUNT_ID,
            "apiId": "local",
            "domainName": "127.0.0.1",
            "requestTimeEpoch": int(time.time() * 1000),
            "identity": {
                "userArn": principal,
                "caller": principal.rsplit("/", 1)[-1],
                "user": principal.rsplit("/", 1)[-1],
                "accountId": account,
                "sourceIp": source_ip,
                "userAgent": single.get("User-Agent") or single.get("user-agent"),
                "accessKey": None,
                "cognitoIdentityId": None,
                "cognitoIdentityPoolId": None,
                "cognitoAuthenticationType": None,
                "cognitoAuthenticationProvider": None,
            },
        },
        "body": text if body else None,
        "isBase64Encoded": encoded,
    }


#: API Gateway's own limit on a request (10 MB); the functions refuse far less (16 KiB bodies).
MAX_REQUEST_BYTES = 10 * 1024 * 1024

# A local-only route answers (status, JSON body); it gets the path parameters, query and body.
LocalHandler = Callable[[dict[str, str], dict[str, str], bytes], tuple[int, Any]]


class LocalApi:
    def __init__(self, host: str, port: int, *, log: Callable[[str], None] = print) -> None:
        self.routes = routes_from_template()
        self.functions = Functions()
        self._local: list[tuple[str, re.Pattern[str], LocalHandler]] = []
        self._log = log
        api = self

        class Handler(_Handler):
            gateway = api

        self._server = ThreadedHttpServer(Handler, host, port, name="local-api")

    @property
    def url(self) -> str:
        return self._server.url

    def add_local_route(self, method: str, path: str, handler: LocalHandler) -> None:
        self._local.append((method, _pattern(path), handler))

    def start(self) -> LocalApi:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def handle(
        self, method: str, raw_path: str, headers: list[tuple[str, str]], body: bytes, source_ip: str
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        split = urlsplit(raw_path)
        path = split.path or "/"
        query = parse_qsl(split.query, keep_blank_values=True)
        for local_method, pattern, local_handler in self._local:
            if method == local_method and (found := pattern.fullmatch(path)):
                status, answer = local_handler(found.groupdict(), dict(query), body)
                return status, [("Content-Type", "application/json")], json.dumps(answer).encode()
        if path == f"/{STAGE}" or path.startswith(f"/{STAGE}/"):
            path = path[len(STAGE) + 1 :] or "/"
        for route in self.routes:
            params = route.match(method, path)
            if params is not None:
                event = proxy_event(route, path, params, method, query, headers, body, source_ip)
                answer = self.functions.invoke(route.module, event)
                return _http_answer(answer, event["requestContext"]["requestId"])
        # What API Gateway answers for a method or path it does not have (with AWS_IAM on).
        return _json_answer(403, "Missing Authentication Token", "MissingAuthenticationTokenException")

    def log_request(self, method: str, path: str, status: int, millis: float, principal: str | None) -> None:
        if path.startswith("/_local/audit/") or path == "/_local/health" or path.startswith("/_local/alerts"):
            return  # polled: would drown the screen
        who = f"  as {printable(principal)}" if principal else ""
        self._log(f"[api] {printable(method)} {printable(path)} -> {status} ({millis:.0f} ms){who}")


def printable(text: str, limit: int = 200) -> str:
    """`text` for one log line: control and non-ASCII characters escaped (no forged lines, no
    terminal escapes), clipped to `limit` characters."""
    escaped = text.encode("ascii", "backslashreplace").decode("ascii")
    escaped = "".join(ch if ch.isprintable() else f"\\x{ord(ch):02x}" for ch in escaped)
    return escaped if len(escaped) <= limit else escaped[: limit - 3] + "..."


def _json_answer(status: int, message: str, error_type: str) -> tuple[int, list[tuple[str, str]], bytes]:
    """An answer API Gateway gives itself, before any function runs."""
    headers = [("Content-Type", "application/json"), ("x-amzn-ErrorType", error_type)]
    return status, headers, json.dumps({"message": message}).encode()


def _http_answer(answer: dict[str, Any], request_id: str) -> tuple[int, list[tuple[str, str]], bytes]:
    headers: list[tuple[str, str]] = []
    for name, value in (answer.get("headers") or {}).items():
        headers.append((name, str(value)))
    seen = {name.lower() for name, _ in headers}
    for name, values in (answer.get("multiValueHeaders") or {}).items():
        if name.lower() in seen:
            continue
        headers += [(name, str(v)) for v in values]
    headers.append(("x-amzn-RequestId", request_id))
    body = answer.get("body") or ""
    payload = base64.b64decode(body) if answer.get("isBase64Encoded") else body.encode()
    return int(answer["statusCode"]), headers, payload


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # otherwise every keep-alive answer waits ~40 ms
    gateway: LocalApi

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - signature is http.server's
        return  # LocalApi.log_request prints one readable line per request

    def __getattr__(self, name: str) -> Any:
        # http.server answers a method without a do_<METHOD> with a 501 HTML page; API Gateway
        # answers every method it has no route for (TRACE, OPTIONS, ...) with its 403 JSON.
        if name.startswith("do_"):
            return self._serve
        raise AttributeError(name)

    def _serve(self) -> None:
        started = time.monotonic()
        raw_length = self.headers.get("Content-Length") or "0"
        if not raw_length.isdigit() or int(raw_length) > MAX_REQUEST_BYTES:
            self.close_connection = True  # the body cannot be framed: the connection is not reusable
            self._answer(*_json_answer(400, "Bad Request: invalid Content-Length", "BadRequestException"))
            return
        length = int(raw_length)
        body = self.rfile.read(length) if length else b""
        headers = [(k, v) for k, v in self.headers.items() if k.lower() not in ("connection", "content-length")]
        try:
            status, out_headers, payload = self.gateway.handle(
                self.command, self.path, headers, body, self.client_address[0]
            )
        except Exception as error:  # what API Gateway answers when the function itself crashes
            self.gateway._log(f"[api] {self.command} {self.path}: the handler crashed: {error!r}")
            status, out_headers = 502, [("Content-Type", "application/json")]
            payload = json.dumps({"message": "Internal server error"}).encode()
        self._answer(status, out_headers, payload)
        self.gateway.log_request(
            self.command,
            urlsplit(self.path).path,
            status,
            (time.monotonic() - started) * 1000,
            self.headers.get(PRINCIPAL_HEADER),
        )

    def _answer(self, status: int, headers: list[tuple[str, str]], payload: bytes) -> None:
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _serve  # noqa: N815 - http.server's names
