"""Binding metadata in one DynamoDB table (on-demand, PITR).

Items of one tenant share a partition, so every API read is a Query or GetItem, never a Scan:

| item | pk | sk | GSI partition keys (both GSIs sort on `B#<binding_id>`) |
|---|---|---|---|
| binding | `T#<tenant>` | `B#<binding_id>` | ByUser `T#<tenant>#U#<user>`, ByExchange `X#<exchange>#<shard>` |
| api key marker | `T#<tenant>` | `K#<exchange>#<sha256 of key>` | |
| account marker | `T#<tenant>` | `A#<exchange>#<account_id>#<binding_id>` | |

Binding ids are ULIDs, so `B#` sort keys run oldest to newest and lists read backwards.
The markers make "this tenant already bound this key" a transactional condition, and show
one exchange account bound under several keys. ByExchange, spread over SHARDS partitions
per exchange, is how the nightly audit reads every binding of an exchange in parallel.
"""

from __future__ import annotations

import base64
import binascii
import builtins
import json
import zlib
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import BotoCoreError, ClientError

from keyhealth.adapters.aws_errors import error_code, storage_call
from keyhealth.adapters.dynamodb_values import s
from keyhealth.bindings.model import Binding, ListQuery, Page
from keyhealth.domain.credentials import KeyType
from keyhealth.domain.errors import AlreadyBound, ConcurrentUpdate, InvalidCursor, StorageAdapterError
from keyhealth.domain.exchange import ExchangeName
from keyhealth.domain.ids import is_binding_id
from keyhealth.domain.model import Report, Scope, Status, format_time, parse_time

SHARDS = 16
BY_USER = "ByUser"
BY_EXCHANGE = "ByExchange"

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


def _tenant_pk(tenant: str) -> str:
    return f"T#{tenant}"


def _key_marker(exchange: ExchangeName, key_hash: str) -> str:
    return f"K#{exchange}#{key_hash}"


def _account_marker(binding: Binding) -> str | None:
    if not binding.account_id:
        return None
    return f"A#{binding.exchange}#{binding.account_id}#{binding.binding_id}"


def shard_of(binding_id: str) -> int:
    return zlib.crc32(binding_id.encode()) % SHARDS


def encode_cursor(binding_id: str) -> str:
    return base64.urlsafe_b64encode(json.dumps({"after": binding_id}).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        after = json.loads(base64.urlsafe_b64decode(padded.encode()))["after"]
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise InvalidCursor("the cursor is not valid") from None
    if not isinstance(after, str) or not is_binding_id(after):
        raise InvalidCursor("the cursor is not valid")
    return after


def to_item(binding: Binding) -> dict[str, Any]:
    item = {
        "pk": _tenant_pk(binding.tenant),
        "sk": f"B#{binding.binding_id}",
        "type": "binding",
        "gsi1pk": f"T#{binding.tenant}#U#{binding.user_id}",
        "gsi1sk": f"B#{binding.binding_id}",
        "gsi2pk": f"X#{binding.exchange}#{shard_of(binding.binding_id):02d}",
        "gsi2sk": f"B#{binding.binding_id}",
        "binding_id": binding.binding_id,
        "tenant": binding.tenant,
        "user_id": binding.user_id,
        "exchange": binding.exchange,
        "label": binding.label,
        "key_type": binding.key_type.value,
        "api_key_masked": binding.api_key_masked,
        "api_key_hash": binding.api_key_hash,
        "scopes": [s.value for s in binding.scopes],
        "status": binding.status.value,
        "created_at": format_time(binding.created_at),
        "updated_at": format_time(binding.updated_at),
        "last_checked_at": format_time(binding.last_checked_at),
        "last_report": json.dumps(binding.last_report.to_dict()) if binding.last_report else None,
        "secret_id": binding.secret_id,
        "account_id": binding.account_id,
        "unknown_streak": binding.unknown_streak,
        "version": binding.version,
        "extra": json.dumps(binding.extra),
    }
    return {name: _serializer.serialize(value) for name, value in item.items()}


def from_item(raw: dict[str, Any]) -> Binding:
    item = {name: _deserializer.deserialize(value) for name, value in raw.items()}

    def moment(name: str) -> datetime | None:
        return parse_time(item.get(name))

    created, updated = moment("created_at"), moment("updated_at")
    assert created is not None
    assert updated is not None
    report = item.get("last_report")
    return Binding(
        binding_id=item["binding_id"],
        tenant=item["tenant"],
        user_id=item["user_id"],
        exchange=str(item["exchange"]),
        label=item.get("label"),
        key_type=KeyType(item["key_type"]),
        api_key_masked=item["api_key_masked"],
        api_key_hash=item["api_key_hash"],
        scopes=tuple(Scope(s) for s in item["scopes"]),
        status=Status(item["status"]),
        created_at=created,
        updated_at=updated,
        secret_id=item["secret_id"],
        last_checked_at=moment("last_checked_at"),
        last_report=Report.from_dict(json.loads(report)) if report else None,
        account_id=item.get("account_id"),
        unknown_streak=int(item.get("unknown_streak", 0)),
        version=int(item["version"]),
        extra=json.loads(item.get("extra") or "{}"),
    )


class DynamoBindingRepository:
    def __init__(self, client: Any, table_name: str) -> None:
        self._client = client
        self._table = table_name

    # ---------------------------------------------------------------- reads
    def get(self, tenant: str, binding_id: str) -> Binding | None:
        if not is_binding_id(binding_id):
            return None
        with storage_call("dynamodb:GetItem"):
            answer = self._client.get_item(
                TableName=self._table,
                Key={"pk": s(_tenant_pk(tenant)), "sk": s(f"B#{binding_id}")},
                ConsistentRead=True,
            )
        item = answer.get("Item")
        return from_item(item) if item else None

    def find_by_api_key(self, tenant: str, exchange: ExchangeName, api_key_hash: str) -> str | None:
        with storage_call("dynamodb:GetItem"):
            answer = self._client.get_item(
                TableName=self._table,
                Key={"pk": s(_tenant_pk(tenant)), "sk": s(_key_marker(exchange, api_key_hash))},
                ConsistentRead=True,
            )
        item = answer.get("Item")
        return item["binding_id"]["S"] if item else None

    def bindings_of_account(self, tenant: str, exchange: ExchangeName, account_id: str) -> list[str]:
        with storage_call("dynamodb:Query"):
            answer = self._client.query(
                TableName=self._table,
                KeyConditionExpression="pk = :pk AND begins_with(sk, :prefix)",
                ExpressionAttributeValues={
                    ":pk": s(_tenant_pk(tenant)),
                    ":prefix": s(f"A#{exchange}#{account_id}#"),
                },
            )
        return [item["binding_id"]["S"] for item in answer.get("Items", [])]

    def list(self, tenant: str, query: ListQuery) -> Page:
        user_id, exchange, status, limit, cursor = (
            query.user_id,
            query.exchange,
            query.status,
            query.limit,
            query.cursor,
        )
        params: dict[str, Any] = {"TableName": self._table, "ScanIndexForward": False}
        values: dict[str, Any] = {}
        if user_id is not None:
            params["IndexName"] = BY_USER
            params["KeyConditionExpression"] = "gsi1pk = :pk"
            values[":pk"] = s(f"T#{tenant}#U#{user_id}")
        else:
            params["KeyConditionExpression"] = "pk = :pk AND begins_with(sk, :b)"
            values[":pk"] = s(_tenant_pk(tenant))
            values[":b"] = s("B#")
        filters = []
        if exchange is not None:
            filters.append("exchange = :exchange")
            values[":exchange"] = s(exchange)
        if status is not None:
            filters.append("#status = :status")
            values[":status"] = s(status.value)
            params["ExpressionAttributeNames"] = {"#status": "status"}
        if filters:
            params["FilterExpression"] = " AND ".join(filters)
        params["ExpressionAttributeValues"] = values
        # Filters apply after DynamoDB reads a page, so read a little more than asked for.
        params["Limit"] = min(max(limit * 2, 25), 500)

        start = None
        if cursor is not None:
            after = decode_cursor(cursor)
            start = {"pk": s(_tenant_pk(tenant)), "sk": s(f"B#{after}")}
            if user_id is not None:
                start |= {"gsi1pk": s(f"T#{tenant}#U#{user_id}"), "gsi1sk": s(f"B#{after}")}

        items: list[Binding] = []
        while True:
            if start:
                params["ExclusiveStartKey"] = start
            with storage_call("dynamodb:Query"):
                answer = self._client.query(**params)
            page = answer.get("Items", [])
            for position, raw in enumerate(page):
                items.append(from_item(raw))
                if len(items) == limit:
                    more = position < len(page) - 1 or "LastEvaluatedKey" in answer
                    return Page(items, encode_cursor(items[-1].binding_id) if more else None)
            start = answer.get("LastEvaluatedKey")
            if not start:
                return Page(items, None)

    # --------------------------------------------------------------- writes
    def create(self, binding: Binding) -> None:
        actions = [
            {
                "Put": {
                    "TableName": self._table,
                    "Item": to_item(binding),
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            },
            self._put_key_marker(binding),
        ]
        if marker := self._put_account_marker(binding):
            actions.append(marker)
        self._transact("create", actions, binding)

    def save(self, binding: Binding, *, previous: Binding) -> Binding:
        saved = replace(binding, version=previous.version + 1)
        actions: list[dict[str, Any]] = [
            {
                "Put": {
                    "TableName": self._table,
                    "Item": to_item(saved),
                    "ConditionExpression": "version = :expected",
                    "ExpressionAttributeValues": {":expected": {"N": str(previous.version)}},
                }
            }
        ]
        if saved.api_key_hash != previous.api_key_hash:
            actions.append(self._delete_key_marker(previous))
            actions.append(self._put_key_marker(saved))
        if _account_marker(saved) != _account_marker(previous):
            if old := _account_marker(previous):
                actions.append({"Delete": {"TableName": self._table, "Key": self._key(previous.tenant, old)}})
            if marker := self._put_account_marker(saved):
                actions.append(marker)
        if len(actions) == 1:
            # Only the binding itself changes (every verify and audit check): a plain
            # conditional put is cheaper than a transaction.
            put = actions[0]["Put"]
            try:
                self._client.put_item(**put)
            except ClientError as error:
                if error_code(error) == "ConditionalCheckFailedException":
                    raise ConcurrentUpdate("the binding changed meanwhile; read it again and retry") from None
                raise StorageAdapterError("dynamodb:PutItem(save)", error_code(error)) from None
            except BotoCoreError as error:
                raise StorageAdapterError("dynamodb:PutItem(save)", type(error).__name__) from None
            return saved
        self._transact("save", actions, saved)
        return saved

    # ---------------------------------------------------------------- audit
    shards = SHARDS

    def iter_exchange(self, exchange: ExchangeName, shard: int) -> Iterator[tuple[str, str]]:
        """(tenant, binding_id) of one shard of an exchange's bindings, page by page (ByExchange)."""
        params: dict[str, Any] = {
            "TableName": self._table,
            "IndexName": BY_EXCHANGE,
            "KeyConditionExpression": "gsi2pk = :pk",
            "ExpressionAttributeValues": {":pk": s(f"X#{exchange}#{shard:02d}")},
            "ProjectionExpression": "tenant, binding_id",
        }
        while True:
            with storage_call("dynamodb:Query(ByExchange)"):
                answer = self._client.query(**params)
            for item in answer.get("Items", []):
                yield item["tenant"]["S"], item["binding_id"]["S"]
            if "LastEvaluatedKey" not in answer:
                return
            params["ExclusiveStartKey"] = answer["LastEvaluatedKey"]

    def delete(self, binding: Binding) -> None:
        actions = [
            {
                "Delete": {
                    "TableName": self._table,
                    "Key": self._key(binding.tenant, f"B#{binding.binding_id}"),
                    # The version read, not mere existence: the markers removed with it are the
                    # ones of that version (a rotate committed meanwhile has moved the key marker).
                    "ConditionExpression": "version = :expected",
                    "ExpressionAttributeValues": {":expected": {"N": str(binding.version)}},
                }
            },
            self._delete_key_marker(binding),
        ]
        if marker := _account_marker(binding):
            actions.append({"Delete": {"TableName": self._table, "Key": self._key(binding.tenant, marker)}})
        self._transact("delete", actions, binding)

    # -------------------------------------------------------------- helpers
    @staticmethod
    def _key(tenant: str, sk: str) -> dict[str, Any]:
        return {"pk": s(_tenant_pk(tenant)), "sk": s(sk)}

    def _put_key_marker(self, binding: Binding) -> dict[str, Any]:
        return {
            "Put": {
                "TableName": self._table,
                "Item": {
                    **self._key(binding.tenant, _key_marker(binding.exchange, binding.api_key_hash)),
                    "type": s("api_key"),
                    "binding_id": s(binding.binding_id),
                },
                "ConditionExpression": "attribute_not_exists(pk)",
            }
        }

    def _delete_key_marker(self, binding: Binding) -> dict[str, Any]:
        return {
            "Delete": {
                "TableName": self._table,
                "Key": self._key(binding.tenant, _key_marker(binding.exchange, binding.api_key_hash)),
            }
        }

    def _put_account_marker(self, binding: Binding) -> dict[str, Any] | None:
        marker = _account_marker(binding)
        if marker is None:
            return None
        return {
            "Put": {
                "TableName": self._table,
                "Item": {
                    **self._key(binding.tenant, marker),
                    "type": s("account"),
                    "binding_id": s(binding.binding_id),
                },
            }
        }

    # builtins.list: below `def list`, a bare `list` in this class's annotations is that method
    def _transact(self, operation: str, actions: builtins.list[dict[str, Any]], binding: Binding) -> None:
        try:
            self._client.transact_write_items(TransactItems=actions)
        except ClientError as error:
            if error_code(error) != "TransactionCanceledException":
                raise StorageAdapterError(f"dynamodb:TransactWriteItems({operation})", error_code(error)) from None
            reasons = [r.get("Code") for r in error.response.get("CancellationReasons", [])]
            if reasons and reasons[0] == "ConditionalCheckFailed":
                raise ConcurrentUpdate("the binding changed meanwhile; read it again and retry") from None
            if "ConditionalCheckFailed" in reasons[1:]:
                existing = self.find_by_api_key(binding.tenant, binding.exchange, binding.api_key_hash)
                raise AlreadyBound(existing or "unknown") from None
            raise StorageAdapterError(
                f"dynamodb:TransactWriteItems({operation})", ",".join(map(str, reasons))
            ) from None
        except BotoCoreError as error:  # connection failures, timeouts
            raise StorageAdapterError(f"dynamodb:TransactWriteItems({operation})", type(error).__name__) from None
