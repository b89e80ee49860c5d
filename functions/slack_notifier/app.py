"""Alert topic -> Slack: renders each message as Block Kit and posts it to the incoming webhook.

A message Slack refuses, or that still fails when retries or the invocation's time run out, goes to the
dead-letter queue with the reason. If even that fails, the invocation fails, and Lambda's own async
retries and on-failure destination take over: a message is never dropped silently.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from aws_lambda_powertools import Logger

from keyhealth.aws import clients
from keyhealth.aws.slack import SqsDeadLetters, read_webhook_url
from keyhealth.config import settings
from keyhealth.credentials import Secret
from keyhealth.slack_delivery import RetryPolicy, SlackWebhook, new_slack_client
from keyhealth.slack_relay import TopicMessage, relay

# Kept back from the invocation's remaining time for the dead-letter send after the last attempt.
DEAD_LETTER_RESERVE_SECONDS = 3.0

logger = Logger(service="keyhealth")


@cache
def webhook() -> SlackWebhook:
    config = settings()
    policy = RetryPolicy(max_attempts=config.slack_max_attempts, retry_after_cap=config.slack_retry_after_cap)
    return SlackWebhook(new_slack_client(policy.request_timeout), policy)


@cache
def webhook_url() -> Secret:
    """Read once per container; forgotten when Slack says the webhook is gone (it may have been rotated)."""
    return read_webhook_url(clients.client("secretsmanager"), settings().slack_webhook_secret_arn)


@cache
def dead_letters() -> SqsDeadLetters | None:
    queue_url = settings().slack_dlq_url
    return SqsDeadLetters(clients.client("sqs"), queue_url) if queue_url else None


@logger.inject_lambda_context(log_event=False)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, int]:
    messages = [TopicMessage.from_sns_record(record) for record in event.get("Records") or []]
    if not settings().slack_webhook_secret_arn:
        logger.info("Slack is not configured (no webhook secret): nothing posted", extra={"messages": len(messages)})
        return {"delivered": 0, "dead_lettered": 0}
    poster = webhook()
    deadline = poster.deadline_in(context.get_remaining_time_in_millis() / 1000 - DEAD_LETTER_RESERVE_SECONDS)
    counts = {"delivered": 0, "dead_lettered": 0}
    for message in messages:
        delivery = relay(message, url=webhook_url(), webhook=poster, dead_letters=dead_letters(), deadline=deadline)
        details = {
            **{f"alert_{name}": value for name, value in message.attributes.items()},
            "sns_message_id": message.message_id,
            "reason": delivery.reason,
            "attempts": delivery.attempts,
            "status_code": delivery.status_code,
            "slack_error": delivery.error,
            "waits": list(delivery.waits),
        }
        if delivery.delivered:
            counts["delivered"] += 1
            logger.info("Posted to Slack", extra=details)
        else:
            counts["dead_lettered"] += 1
            logger.warning("Slack did not take the message: dead-lettered", extra=details)
            if delivery.webhook_gone:
                webhook_url.cache_clear()
    return counts
