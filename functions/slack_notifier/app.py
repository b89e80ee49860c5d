"""Alert topic -> Slack: renders each message as Block Kit and posts it to the incoming webhook.

A message Slack refuses, or that still fails when retries or the invocation's time run out, goes to the
dead-letter queue with the reason. If even that fails, the invocation fails, and Lambda's own async
retries and on-failure destination take over: a message is never dropped silently.
"""

from __future__ import annotations

from typing import Any

from keyhealth.notify.usecases import TopicMessage, relay
from keyhealth.observability import entry_point, logger
from keyhealth.wiring import container

# Kept back from the invocation's remaining time for the dead-letter send after the last attempt.
DEAD_LETTER_RESERVE_SECONDS = 3.0


@entry_point()
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, int]:
    messages = [TopicMessage.from_sns_record(record) for record in event.get("Records") or []]
    wired = container()
    if not wired.settings.slack_webhook_secret_arn:
        logger.info("Slack is not configured (no webhook secret): nothing posted", extra={"messages": len(messages)})
        return {"delivered": 0, "dead_lettered": 0}
    poster = wired.slack_webhook
    deadline = poster.deadline_in(context.get_remaining_time_in_millis() / 1000 - DEAD_LETTER_RESERVE_SECONDS)
    counts = {"delivered": 0, "dead_lettered": 0}
    for message in messages:
        delivery = relay(
            message,
            url=wired.slack_webhook_url(),
            webhook=poster,
            dead_letters=wired.slack_dead_letters,
            deadline=deadline,
            exchange_names=wired.exchange_names,
        )
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
                wired.forget_slack_webhook_url()
    return counts
