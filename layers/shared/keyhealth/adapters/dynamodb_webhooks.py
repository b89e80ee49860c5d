"""Webhooks and the event feed in DynamoDB (webhooks.ports.WebhookStore, EventFeed): the events table.

- pk `TENANT#<tenant>`, sk `WEBHOOK`: the tenant's webhook; its signing secrets as KMS ciphertext only.
- pk `EVENTS#<tenant>`, sk `<event id>`: an event's JSON body, gone after 30 days (TTL `expires_at`).
- pk `EVENTKEY#<tenant>#<dedupe key>`, sk `-`: which event a dedupe key made (same TTL), written in one
  transaction with the event, so a republished audit alert keeps its first id and no duplicate is stored.

Delivery health (failing_since, last_error...) is updated attribute by attribute: the deliverer never
overwrites a target or secret a PUT changed meanwhile.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from keyhealth.adapters.aws_errors import conditional, error_code, storage_call
from keyhealth.adapters.dynamodb_values import n, s
from keyhealth.domain.errors import StorageAdapterError
from keyhealth.domain.model import format_time, parse_time
from keyhealth.webhooks.model import EVENT_RETENTION, Event, Webhook

WEBHOOK_SK = "WEBHOOK"


def _time(value: datetime) -> dict[str, str]:
    return s(format_time(value) or "")


def _optional_time(item: dict[str, Any], name: str) -> datetime | None:
    return parse_time(item[name]["S"]) if name in item else None


class DynamoWebhookStore:
    def __init__(self, client: Any, table: str) -> None:
        self._client = client
        self._table = table

    @staticmethod
    def _key(tenant: str) -> dict[str, Any]:
        return {"pk": s(f"TENANT#{tenant}"), "sk": s(WEBHOOK_SK)}

    @staticmethod
    def _webhook(item: dict[str, Any]) -> Webhook:
        created, updated = parse_time(item["created_at"]["S"]), parse_time(item["updated_at"]["S"])
        assert created is not None
        assert updated is not None
        return Webhook(
            tenant=item["tenant"]["S"],
            url=item["url"]["S"],
            events=tuple(value["S"] for value in item["events"]["L"]),
            created_at=created,
            updated_at=updated,
            secret_ciphertext=bytes(item["secret"]["B"]),
            previous_secret_ciphertext=bytes(item["previous_secret"]["B"]) if "previous_secret" in item else None,
            previous_secret_expires_at=_optional_time(item, "previous_secret_expires_at"),
            failing_since=_optional_time(item, "failing_since"),
            last_error=item["last_error"]["S"] if "last_error" in item else None,
            last_delivered_at=_optional_time(item, "last_delivered_at"),
            dead_lettered=int(item["dead_lettered"]["N"]) if "dead_lettered" in item else 0,
            last_dead_lettered_at=_optional_time(item, "last_dead_lettered_at"),
        )

    def get(self, tenant: str) -> Webhook | None:
        with storage_call("dynamodb:GetItem(webhook)"):
            item = self._client.get_item(TableName=self._table, Key=self._key(tenant), ConsistentRead=True).get("Item")
        return self._webhook(item) if item else None

    def create(self, webhook: Webhook) -> bool:
        item = {
            **self._key(webhook.tenant),
            "tenant": s(webhook.tenant),
            "url": s(webhook.url),
            "events": {"L": [s(e) for e in webhook.events]},
            "created_at": _time(webhook.created_at),
            "updated_at": _time(webhook.updated_at),
            "secret": {"B": webhook.secret_ciphertext},
            "dead_lettered": n(0),
        }
        return conditional(
            "dynamodb:PutItem(webhook)",
            self._client.put_item,
            TableName=self._table,
            Item=item,
            ConditionExpression="attribute_not_exists(pk)",
        )

    def update_target(self, tenant: str, *, url: str, events: tuple[str, ...], updated_at: datetime) -> Webhook | None:
        try:
            answer = self._client.update_item(
                TableName=self._table,
                Key=self._key(tenant),
                UpdateExpression="SET #url = :url, events = :events, updated_at = :at",
                ConditionExpression="attribute_exists(pk)",
                ExpressionAttributeNames={"#url": "url"},
                ExpressionAttributeValues={
                    ":url": s(url),
                    ":events": {"L": [s(e) for e in events]},
                    ":at": _time(updated_at),
                },
                ReturnValues="ALL_NEW",
            )
        except ClientError as error:
            if error_code(error) == "ConditionalCheckFailedException":
                return None
            raise StorageAdapterError("dynamodb:UpdateItem(webhook)", error_code(error)) from None
        except BotoCoreError as error:
            raise StorageAdapterError("dynamodb:UpdateItem(webhook)", type(error).__name__) from None
        return self._webhook(answer["Attributes"])

    def rotate_secret(
        self, tenant: str, *, secret_ciphertext: bytes, replaces: bytes, previous_expires_at: datetime, at: datetime
    ) -> bool:
        return conditional(
            "dynamodb:UpdateItem(webhook secret)",
            self._client.update_item,
            TableName=self._table,
            Key=self._key(tenant),
            UpdateExpression="SET secret = :new, previous_secret = :old, previous_secret_expires_at = :until, "
            "updated_at = :at",
            ConditionExpression="secret = :old",
            ExpressionAttributeValues={
                ":new": {"B": secret_ciphertext},
                ":old": {"B": replaces},
                ":until": _time(previous_expires_at),
                ":at": _time(at),
            },
        )

    def delete(self, tenant: str) -> bool:
        return conditional(
            "dynamodb:DeleteItem(webhook)",
            self._client.delete_item,
            TableName=self._table,
            Key=self._key(tenant),
            ConditionExpression="attribute_exists(pk)",
        )

    def _health(self, tenant: str, expression: str, values: dict[str, Any]) -> None:
        # Conditional on the webhook existing: a delivery finishing after a DELETE must not recreate a stub.
        conditional(
            "dynamodb:UpdateItem(webhook health)",
            self._client.update_item,
            TableName=self._table,
            Key=self._key(tenant),
            UpdateExpression=expression,
            ConditionExpression="attribute_exists(pk)",
            ExpressionAttributeValues=values,
        )

    def record_delivered(self, tenant: str, at: datetime) -> None:
        self._health(tenant, "SET last_delivered_at = :at REMOVE failing_since, last_error", {":at": _time(at)})

    def record_failure(self, tenant: str, at: datetime, error: str) -> None:
        self._health(
            tenant,
            "SET failing_since = if_not_exists(failing_since, :at), last_error = :error",
            {":at": _time(at), ":error": s(error[:200])},
        )

    def record_dead_letter(self, tenant: str, at: datetime, error: str) -> None:
        self._health(
            tenant,
            "SET failing_since = if_not_exists(failing_since, :at), last_error = :error, "
            "last_dead_lettered_at = :at ADD dead_lettered :one",
            {":at": _time(at), ":error": s(error[:200]), ":one": n(1)},
        )


class DynamoEventFeed:
    def __init__(self, client: Any, table: str, *, clock: Callable[[], float]) -> None:
        self._client = client
        self._table = table
        self._clock = clock

    @staticmethod
    def _event(item: dict[str, Any]) -> Event:
        created = parse_time(item["created_at"]["S"])
        assert created is not None
        return Event(item["sk"]["S"], item["tenant"]["S"], item["type"]["S"], created, item["body"]["S"])

    def append(self, event: Event, *, dedupe_key: str | None = None) -> Event:
        expires = n(int(event.created_at.timestamp() + EVENT_RETENTION.total_seconds()))
        item = {
            "pk": s(f"EVENTS#{event.tenant}"),
            "sk": s(event.id),
            "tenant": s(event.tenant),
            "type": s(event.type),
            "created_at": _time(event.created_at),
            "body": s(event.body),
            "expires_at": expires,
        }
        if dedupe_key is None:
            with storage_call("dynamodb:PutItem(event)"):
                self._client.put_item(TableName=self._table, Item=item)
            return event
        marker_key = {"pk": s(f"EVENTKEY#{event.tenant}#{dedupe_key}"), "sk": s("-")}
        try:
            self._client.transact_write_items(
                TransactItems=[
                    {"Put": {"TableName": self._table, "Item": item}},
                    {
                        "Put": {
                            "TableName": self._table,
                            "Item": {**marker_key, "event_id": s(event.id), "expires_at": expires},
                            "ConditionExpression": "attribute_not_exists(pk)",
                        }
                    },
                ]
            )
            return event
        except ClientError as error:
            reasons = error.response.get("CancellationReasons") or []
            if not any(r.get("Code") == "ConditionalCheckFailed" for r in reasons):
                raise StorageAdapterError("dynamodb:TransactWriteItems(event)", error_code(error)) from None
        except BotoCoreError as error:
            raise StorageAdapterError("dynamodb:TransactWriteItems(event)", type(error).__name__) from None
        with storage_call("dynamodb:GetItem(event key)"):
            marker = self._client.get_item(TableName=self._table, Key=marker_key, ConsistentRead=True).get("Item")
        first = self.get(event.tenant, marker["event_id"]["S"]) if marker else None
        if first is None:
            raise StorageAdapterError("dynamodb:TransactWriteItems(event)", "dedupe marker without its event")
        return first

    def get(self, tenant: str, event_id: str) -> Event | None:
        with storage_call("dynamodb:GetItem(event)"):
            item = self._client.get_item(
                TableName=self._table, Key={"pk": s(f"EVENTS#{tenant}"), "sk": s(event_id)}, ConsistentRead=True
            ).get("Item")
        return self._event(item) if item else None

    def page(self, tenant: str, *, after: str | None, limit: int) -> tuple[list[Event], bool]:
        condition = "pk = :pk"
        values: dict[str, Any] = {":pk": s(f"EVENTS#{tenant}")}
        if after is not None:
            condition += " AND sk > :after"
            values[":after"] = s(after)
        events: list[Event] = []
        start: dict[str, Any] | None = None
        # One item more than asked says whether more follow; TTL deletes lag up to days, so expired ones
        # are skipped here rather than shown.
        now = self._clock()
        while len(events) <= limit:
            params: dict[str, Any] = {
                "TableName": self._table,
                "KeyConditionExpression": condition,
                "ExpressionAttributeValues": values,
                "Limit": limit + 1 - len(events),
                "ConsistentRead": True,
            }
            if start:
                params["ExclusiveStartKey"] = start
            with storage_call("dynamodb:Query(events)"):
                answer = self._client.query(**params)
            for item in answer.get("Items", []):
                if int(item["expires_at"]["N"]) > now:
                    events.append(self._event(item))
            start = answer.get("LastEvaluatedKey")
            if not start:
                break
        return events[:limit], len(events) > limit
