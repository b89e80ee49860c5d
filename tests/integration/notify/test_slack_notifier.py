"""The Slack notifier end to end: alerts published by the real publisher to (moto) SNS, delivered as Lambda
SNS events to the real handler, posted over HTTP to a local webhook that checks Block Kit and misbehaves
on request; what Slack does not take lands in the (moto) dead-letter queue."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from functions.slack_notifier import app
from keyhealth import wiring
from keyhealth.adapters.sns_alerts import SnsAlertPublisher
from keyhealth.config import Settings
from keyhealth.domain.errors import StorageAdapterError
from keyhealth.domain.model import FindingCode, Status
from keyhealth.notify.model import Alert
from keyhealth.notify.usecases import Undelivered
from tests.integration.notify.conftest import WEBHOOK_PATH, Notifier
from tests.support.slack import (
    audit_summary_body,
    expiring_body,
    incident_body,
    status_change,
    unreachable_body,
)
from tests.support.template import resource, template

SAMPLE_EVENT = Path(__file__).resolve().parents[3] / "events" / "slack-notifier.json"
FAILING = status_change(Status.HEALTHY, FindingCode.IP_NOT_WHITELISTED, FindingCode.WITHDRAW_ENABLED)


def _template_filter_policy() -> dict[str, list[str]]:
    """The subscription filter exactly as template.yaml declares it, with the parameter's default."""
    events = resource("SlackNotifierFunction")["Properties"]["Events"]
    [subscription] = [e["Properties"] for e in events.values() if e["Type"] == "SNS"]
    policy = {}
    for name, value in subscription["FilterPolicy"].items():
        assert value.tag == "!Ref", value
        default = template()["Parameters"][value.value]["Default"]
        policy[name] = [v.strip() for v in default.split(",")]
    return policy


def published(notifier: Notifier, *alerts: Alert, filter_policy: dict[str, Any] | None = None) -> list[dict]:
    """Publish through SnsAlertPublisher and return the Lambda SNS events the topic would deliver."""
    sns, sqs = notifier.session.client("sns"), notifier.session.client("sqs")
    topic_arn = sns.create_topic(Name="keyhealth-alerts")["TopicArn"]
    queue_url = sqs.create_queue(QueueName="slack-subscription")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    attributes = {"FilterPolicy": json.dumps(filter_policy)} if filter_policy else {}
    subscription_arn = sns.subscribe(
        TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn, Attributes=attributes, ReturnSubscriptionArn=True
    )["SubscriptionArn"]
    publisher = SnsAlertPublisher(sns, topic_arn)
    for alert in alerts:
        publisher.publish(alert)
    events = []
    while batch := sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", []):
        for message in batch:
            envelope = json.loads(message["Body"])
            envelope["SigningCertUrl"] = envelope.pop("SigningCertURL", "")
            envelope["UnsubscribeUrl"] = envelope.pop("UnsubscribeURL", "")
            record = {
                "EventSource": "aws:sns",
                "EventVersion": "1.0",
                "EventSubscriptionArn": subscription_arn,
                "Sns": envelope,
            }
            events.append({"Records": [record]})
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    sns.delete_topic(TopicArn=topic_arn)
    sqs.delete_queue(QueueUrl=queue_url)
    return events


def one_event(notifier: Notifier, alert: Alert = FAILING) -> dict:
    [event] = published(notifier, alert)
    return event


def _header(received) -> str:
    return received.payload["blocks"][0]["text"]["text"]


# --- delivered ------------------------------------------------------------------------------------------


def test_the_sample_event_is_posted(notifier):
    # Given the sample event (as `sam local invoke -e events/slack-notifier.json` would send it)
    event = json.loads(SAMPLE_EVENT.read_text())
    sample_body = json.loads(event["Records"][0]["Sns"]["Message"])
    assert sample_body.keys() == FAILING.body.keys(), "the sample drifted from keyhealth.notify.model.status_changed"
    # When
    answer = notifier.invoke(event)
    # Then
    assert answer == {"delivered": 1, "dead_lettered": 0}
    [received] = notifier.slack.received
    assert received.problems == []
    assert _header(received) == ":red_circle: Binance key vmPU...A4Ge of user u-42: healthy → failing"
    assert notifier.dead_letters() == []


@pytest.mark.parametrize("secret_form", ["url", "json"])
def test_a_published_alert_is_posted_first_try(notifier, secret_form):
    # Given the secret in either form ops may store it
    if secret_form == "json":
        notifier.secretsmanager.put_secret_value(
            SecretId=notifier.secret_arn, SecretString=json.dumps({"url": notifier.slack.url})
        )
    # When the alert the API publishes reaches the notifier
    answer = notifier.invoke(one_event(notifier))
    # Then
    assert answer == {"delivered": 1, "dead_lettered": 0}
    [received] = notifier.slack.received
    assert received.path == WEBHOOK_PATH
    assert received.content_type == "application/json"
    assert received.problems == []
    assert received.payload["text"] == FAILING.subject.replace(">", "&gt;")
    assert notifier.time.sleeps == []
    assert notifier.dead_letters() == []


@pytest.mark.parametrize(
    "alert",
    [
        Alert("keyhealth: audit", audit_summary_body(newly_failing=40, incidents=2), "", {"type": "audit_summary"}),
        Alert("keyhealth: incident", incident_body(), "", {"type": "incident", "severity": "critical"}),
        Alert("keyhealth: unreachable", unreachable_body(), "", {"type": "binding_unreachable"}),
        Alert("keyhealth: expiring", expiring_body(), "", {"type": "trading_permission_expiring"}),
        Alert("keyhealth: new", {"type": "brand_new_type", "x": [1, 2]}, "", {"type": "brand_new_type"}),
    ],
    ids=["audit_summary", "incident", "binding_unreachable", "trading_permission_expiring", "unknown type"],
)
def test_every_message_type_is_accepted_by_slack(notifier, alert):
    answer = notifier.invoke(one_event(notifier, alert))
    assert answer == {"delivered": 1, "dead_lettered": 0}
    [received] = notifier.slack.received
    assert received.problems == []


# --- retried --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("retry_after", "waited"), [("2", 2.0), ("120", 15.0)], ids=["as said", "capped"])
def test_rate_limited_waits_what_retry_after_says_capped(notifier, retry_after, waited):
    # Given Slack rate-limits the first post
    notifier.slack.answer(429, "rate_limited", retry_after=retry_after)
    # When
    answer = notifier.invoke(one_event(notifier))
    # Then
    assert answer == {"delivered": 1, "dead_lettered": 0}
    assert [r.status for r in notifier.slack.received] == [429, 200]
    assert notifier.time.sleeps == [waited]


def test_server_errors_are_retried_with_exponential_backoff(notifier):
    notifier.slack.answer(500, "server_error", times=2)
    answer = notifier.invoke(one_event(notifier))
    assert answer == {"delivered": 1, "dead_lettered": 0}
    assert [r.status for r in notifier.slack.received] == [500, 500, 200]
    assert notifier.time.sleeps == [0.75, 1.5]  # 1 s then 2 s ceilings, jitter pinned at the middle
    assert notifier.slack.received[0].payload == notifier.slack.received[2].payload


def test_a_dropped_connection_is_retried(notifier):
    notifier.slack.drop()
    answer = notifier.invoke(one_event(notifier))
    assert answer == {"delivered": 1, "dead_lettered": 0}
    assert len(notifier.slack.received) == 2
    assert notifier.time.sleeps == [0.75]


# --- dead-lettered --------------------------------------------------------------------------------------


def test_retries_exhausted_goes_to_the_dead_letter_queue_with_the_reason(notifier):
    # Given Slack fails every time
    notifier.slack.answer(503, "service_unavailable", times=10)
    event = one_event(notifier)
    # When
    answer = notifier.invoke(event)
    # Then five attempts, four waits, then the dead-letter queue
    assert answer == {"delivered": 0, "dead_lettered": 1}
    assert len(notifier.slack.received) == 5
    assert notifier.time.sleeps == [0.75, 1.5, 3.0, 6.0]
    [letter] = notifier.dead_letters()
    sns = event["Records"][0]["Sns"]
    assert letter["reason"] == "retries_exhausted"
    assert letter["status_code"] == 503
    assert letter["error"] == "service_unavailable"
    assert letter["attempts"] == 5
    assert letter["sns"]["message"] == sns["Message"]
    assert json.loads(letter["sns"]["message"]) == FAILING.body
    assert letter["sns"]["subject"] == FAILING.subject
    assert letter["sns"]["message_attributes"] == FAILING.attributes
    assert letter["sns"]["message_id"] == sns["MessageId"]
    assert letter["_attributes"] == {"reason": "retries_exhausted", "type": "binding_status_changed"}


def test_a_refusal_is_dead_lettered_without_retry(notifier):
    notifier.slack.answer(400, "invalid_blocks")
    answer = notifier.invoke(one_event(notifier))
    assert answer == {"delivered": 0, "dead_lettered": 1}
    assert len(notifier.slack.received) == 1
    assert notifier.time.sleeps == []
    [letter] = notifier.dead_letters()
    assert (letter["reason"], letter["status_code"], letter["error"], letter["attempts"]) == (
        "refused",
        400,
        "invalid_blocks",
        1,
    )


def test_a_wait_beyond_the_invocations_time_is_not_started(notifier):
    # Given 6 s left in the invocation (3 s of them kept for dead-lettering) and Slack asks for 10 s
    notifier.slack.answer(429, "rate_limited", retry_after="10")
    # When
    answer = notifier.invoke(one_event(notifier), remaining_ms=6_000)
    # Then
    assert answer == {"delivered": 0, "dead_lettered": 1}
    assert notifier.time.sleeps == []
    [letter] = notifier.dead_letters()
    assert (letter["reason"], letter["status_code"], letter["error"]) == ("deadline", 429, "rate_limited")


def test_a_revoked_webhook_is_read_again_from_the_secret(notifier):
    # Given the URL was read by an earlier invocation, then ops rotated the webhook
    notifier.invoke(one_event(notifier))
    new_path = WEBHOOK_PATH.replace("B0ALERTS", "B0ROTATED")
    notifier.slack.paths = {new_path}
    notifier.secretsmanager.put_secret_value(
        SecretId=notifier.secret_arn, SecretString=notifier.slack.url.replace(WEBHOOK_PATH, new_path)
    )
    # When the cached URL is refused, and a later message comes
    refused = notifier.invoke(one_event(notifier))
    delivered = notifier.invoke(one_event(notifier))
    # Then only the message posted to the revoked URL was dead-lettered
    assert refused == {"delivered": 0, "dead_lettered": 1}
    assert delivered == {"delivered": 1, "dead_lettered": 0}
    assert [(r.path, r.status) for r in notifier.slack.received] == [
        (WEBHOOK_PATH, 200),
        (WEBHOOK_PATH, 404),
        (new_path, 200),
    ]
    [letter] = notifier.dead_letters()
    assert (letter["reason"], letter["status_code"], letter["error"]) == ("refused", 404, "no_service")


def test_when_the_dead_letter_queue_fails_the_invocation_fails(notifier):
    # Lambda's async retries and the function's own DeadLetterQueue then take over.
    notifier.slack.answer(400, "invalid_blocks", times=5)
    notifier.sqs.fail("send_message")
    with pytest.raises(StorageAdapterError, match="sqs:SendMessage"):
        notifier.invoke(one_event(notifier))


def test_without_a_dead_letter_queue_an_undeliverable_message_fails_the_invocation(notifier, monkeypatch):
    monkeypatch.setenv("SLACK_DLQ_URL", "")
    notifier.cold_start()
    event = one_event(notifier)
    notifier.slack.answer(410, "channel_is_archived")
    with pytest.raises(Undelivered):
        notifier.invoke(event)


# --- configuration --------------------------------------------------------------------------------------


def test_without_a_webhook_secret_nothing_is_posted(notifier, monkeypatch):
    monkeypatch.setenv("SLACK_WEBHOOK_SECRET_ARN", "")
    notifier.cold_start()
    answer = notifier.invoke(one_event(notifier))
    assert answer == {"delivered": 0, "dead_lettered": 0}
    assert notifier.slack.received == []
    assert notifier.dead_letters() == []


def test_max_attempts_is_configurable(notifier, monkeypatch):
    monkeypatch.setenv("SLACK_MAX_ATTEMPTS", "2")
    notifier.cold_start()
    notifier.slack.answer(500, "server_error", times=5)
    notifier.invoke(one_event(notifier))
    assert len(notifier.slack.received) == 2
    [letter] = notifier.dead_letters()
    assert letter["attempts"] == 2


def test_the_deployed_webhook_takes_its_policy_from_settings(notifier, monkeypatch):
    monkeypatch.setenv("SLACK_MAX_ATTEMPTS", "3")
    monkeypatch.setenv("SLACK_RETRY_AFTER_CAP", "4")
    webhook = wiring.Container(wiring.Environment(settings=Settings.from_env(os.environ))).slack_webhook
    assert (webhook.policy.max_attempts, webhook.policy.retry_after_cap) == (3, 4.0)


def test_slack_gets_the_severities_the_template_asks_for(notifier):
    # Given the subscription filter from template.yaml (default: critical, warning)
    policy = _template_filter_policy()
    assert policy == {"severity": ["critical", "warning"]}
    critical = FAILING
    warning = status_change(Status.HEALTHY, FindingCode.NO_IP_RESTRICTION)
    info = status_change(Status.FAILING)
    assert [a.attributes["severity"] for a in (critical, warning, info)] == ["critical", "warning", "info"]
    # When all three are published
    events = published(notifier, critical, warning, info, filter_policy=policy)
    for event in events:
        notifier.invoke(event)
    # Then Slack got the critical and the warning one
    transitions = sorted(_header(r).rsplit(": ", 1)[1] for r in notifier.slack.received)
    assert transitions == ["healthy → degraded", "healthy → failing"]


# --- the webhook URL is a credential --------------------------------------------------------------------


def test_the_webhook_url_never_appears_in_logs(notifier, all_logs, capsys, monkeypatch):
    # Given a rate limit, then a refusal (every log line the notifier and httpx write); the
    # Powertools handler kept the stdout of import time: point it at the captured one
    monkeypatch.setattr(app.logger.registered_handler, "stream", sys.stdout)
    notifier.slack.answer(429, "rate_limited", retry_after="1")
    notifier.slack.answer(400, "invalid_blocks")
    # When
    notifier.invoke(one_event(notifier))
    notifier.invoke(one_event(notifier))
    # Then
    printed = capsys.readouterr()
    logs = all_logs.text + "".join(repr(record.__dict__) for record in all_logs.records)
    for text in (logs, printed.out, printed.err):
        assert notifier.slack.url not in text
        assert WEBHOOK_PATH not in text
        assert "0123456789abcdefghijklmn" not in text
    httpx_lines = [r.getMessage() for r in all_logs.records if r.name == "httpx"]
    assert httpx_lines, "httpx should have logged its requests for this test to mean anything"
    assert all("<slack webhook>" in line for line in httpx_lines)
    assert '"Posted to Slack"' in printed.out
    assert '"Slack did not take the message: dead-lettered"' in printed.out
