"""API Gateway REST proxy events, as the deployed API (AWS_IAM auth) sends them."""

from __future__ import annotations

import json
import uuid
from typing import Any

PLATFORM_A = "arn:aws:sts::111111111111:assumed-role/platform-backend/session-1"
PLATFORM_A_OTHER_SESSION = "arn:aws:sts::111111111111:assumed-role/platform-backend/session-2"
PLATFORM_B = "arn:aws:iam::222222222222:user/other-platform"


def api_event(
    method: str,
    path: str,
    *,
    resource: str | None = None,
    path_parameters: dict[str, str] | None = None,
    query: dict[str, str] | None = None,
    body: Any = None,
    headers: dict[str, str] | None = None,
    principal: str = PLATFORM_A,
) -> dict[str, Any]:
    raw_body = body if isinstance(body, str) or body is None else json.dumps(body)
    all_headers = {"Content-Type": "application/json", "Host": "api.example.test", **(headers or {})}
    return {
        "resource": resource or path,
        "path": path,
        "httpMethod": method,
        "headers": all_headers,
        "multiValueHeaders": {k: [v] for k, v in all_headers.items()},
        "queryStringParameters": query or None,
        "multiValueQueryStringParameters": {k: [v] for k, v in query.items()} if query else None,
        "pathParameters": path_parameters,
        "stageVariables": None,
        "requestContext": {
            "resourcePath": resource or path,
            "httpMethod": method,
            "path": f"/v1{path}",
            "stage": "v1",
            "requestId": str(uuid.uuid4()),
            "accountId": "123456789012",
            "apiId": "abcdef1234",
            "identity": {
                "userArn": principal,
                "caller": "AROAEXAMPLE:session",
                "accountId": principal.split(":")[4],
                "user": "AROAEXAMPLE",
                "sourceIp": "198.51.100.7",
                "userAgent": "platform-backend/1.0",
            },
            "requestTimeEpoch": 1_800_000_000_000,
        },
        "body": raw_body,
        "isBase64Encoded": False,
    }


class LambdaContext:
    function_name = "keyhealth-test"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:eu-west-1:123456789012:function:keyhealth-test"
    aws_request_id = "req-test"

    @staticmethod
    def get_remaining_time_in_millis() -> int:
        return 29_000
