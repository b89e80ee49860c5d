"""What Lambda's SQS event source does with a batch, for the local stack, the benchmark and
the tests: hand the messages to the function as one event, delete those it did not name in
`batchItemFailures` (partial batch responses); the named ones stay, with whatever visibility
the function set on them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

BATCH_SIZE = 10


def sqs_event(messages: list[dict[str, Any]], queue_arn: str, region: str) -> dict[str, Any]:
    return {
        "Records": [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": m.get("Attributes", {}),
                "messageAttributes": {},
                "md5OfBody": m.get("MD5OfBody"),
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": region,
            }
            for m in messages
        ]
    }


def deliver_batch(
    sqs: Any,
    queue_url: str,
    queue_arn: str,
    messages: list[dict[str, Any]],
    invoke: Callable[[dict[str, Any]], dict[str, Any] | None],
    *,
    region: str,
) -> set[str]:
    """Invoke the function with `messages`, delete the successes; return the failed message ids."""
    answer = invoke(sqs_event(messages, queue_arn, region))
    failed = {f["itemIdentifier"] for f in (answer or {}).get("batchItemFailures", [])}
    done = [m for m in messages if m["MessageId"] not in failed]
    if done:
        sqs.delete_message_batch(
            QueueUrl=queue_url,
            Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)],
        )
    return failed
