"""The rolling audit's state between ticks in DynamoDB (audit.ports.TickStore), in the bindings table.

| item | pk | sk |
|---|---|---|
| the watermark and the claim of the tick in progress | `ROLLING` | `WATERMARK` |
| a tick claimed (its run), for the sliding window and the daily summary | `ROLLING` | `TICK#<claimed at>#<run_id>` |
| an incident open over the sliding window | `ROLLING` | `INCIDENT#<exchange>#<code>` |
| an incident opened (kept for the daily summary) | `ROLLING` | `OPENED#<opened at>#<exchange>#<code>` |
| a daily summary sent | `ROLLING` | `SUMMARY#<date>` |

One partition: a tick every few minutes writes a handful of items, far below a partition's 1,000
writes a second. Tick, opened-incident and summary items expire with the runs (`RUN_TTL_DAYS`); the watermark and the
incidents stay (an incident is closed by a finaliser, never by time alone).

The claim is a lease (`claim_run`, `claimed_until`) taken on condition that the watermark is the one the
dispatcher read and no other lease is live, as the finaliser's: two deliveries of one scheduled tick never
both dispatch it, and a dispatcher that died is taken over when its lease has expired.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from keyhealth.adapters.aws_errors import conditional, storage_call
from keyhealth.adapters.dynamodb_runs import RUN_TTL_DAYS
from keyhealth.adapters.dynamodb_values import n, s
from keyhealth.audit.ports import Tick
from keyhealth.audit.rolling import WindowIncident
from keyhealth.domain.errors import StorageAdapterError
from keyhealth.domain.model import format_time, parse_time

PK = "ROLLING"
WATERMARK = "WATERMARK"


def _time(value: datetime) -> str:
    return format_time(value) or ""


def _parse(value: str) -> datetime:
    parsed = parse_time(value)
    assert parsed is not None
    return parsed


class DynamoTickStore:
    def __init__(self, client: Any, table: str) -> None:
        self._client = client
        self._table = table

    def _key(self, sk: str) -> dict[str, Any]:
        return {"pk": s(PK), "sk": s(sk)}

    def _conditional(self, operation: str, call: Any, **params: Any) -> bool:
        """`call(**params)` on this table: False when its condition failed."""
        return conditional(operation, call, TableName=self._table, **params)

    # -------------------------------------------------------------- the tick
    def watermark(self) -> datetime | None:
        with storage_call("dynamodb:GetItem(watermark)"):
            item = self._client.get_item(TableName=self._table, Key=self._key(WATERMARK), ConsistentRead=True).get(
                "Item"
            )
        if not item or "watermark" not in item:
            return None
        return _parse(item["watermark"]["S"])

    def claim(self, run_id: str, expected: datetime | None, *, now: datetime, lease_seconds: float) -> bool:
        values: dict[str, Any] = {
            ":run": s(run_id),
            ":until": n(now.timestamp() + lease_seconds),
            ":now": n(now.timestamp()),
        }
        if expected is None:
            same_watermark = "attribute_not_exists(watermark)"
        else:
            same_watermark = "watermark = :expected"
            values[":expected"] = s(_time(expected))
        claimed = self._conditional(
            "dynamodb:UpdateItem(claim tick)",
            self._client.update_item,
            Key=self._key(WATERMARK),
            UpdateExpression="SET claim_run = :run, claimed_until = :until",
            ConditionExpression=f"{same_watermark} AND (attribute_not_exists(claimed_until) OR claimed_until <= :now)",
            ExpressionAttributeValues=values,
        )
        if claimed:
            with storage_call("dynamodb:PutItem(tick)"):
                self._client.put_item(
                    TableName=self._table,
                    Item={
                        **self._key(f"TICK#{_time(now)}#{run_id}"),
                        "run_id": s(run_id),
                        "started_at": s(_time(now)),
                        "ttl": n(int(now.timestamp()) + RUN_TTL_DAYS * 86400),
                    },
                )
        return claimed

    def advance(self, run_id: str, watermark: datetime) -> None:
        advanced = self._conditional(
            "dynamodb:UpdateItem(advance)",
            self._client.update_item,
            Key=self._key(WATERMARK),
            UpdateExpression="SET watermark = :w REMOVE claim_run, claimed_until",
            ConditionExpression="claim_run = :run",
            ExpressionAttributeValues={":w": s(_time(watermark)), ":run": s(run_id)},
        )
        if not advanced:  # our lease expired and another dispatcher took the tick over: it advances
            raise StorageAdapterError("dynamodb:UpdateItem(advance)", "the tick's claim was taken over")

    def release(self, run_id: str) -> None:
        self._conditional(
            "dynamodb:UpdateItem(release)",
            self._client.update_item,
            Key=self._key(WATERMARK),
            UpdateExpression="REMOVE claim_run, claimed_until",
            ConditionExpression="claim_run = :run",
            ExpressionAttributeValues={":run": s(run_id)},
        )

    def ticks(self, since: datetime, until: datetime) -> list[Tick]:
        # Times are fixed-width ISO-8601 UTC ("...Z"), so they sort as strings; "~" sorts after any run id.
        items = self._query("dynamodb:Query(ticks)", f"TICK#{_time(since)}#~", f"TICK#{_time(until)}#~")
        return [Tick(item["run_id"]["S"], _parse(item["started_at"]["S"])) for item in items]

    # ---------------------------------------------------------- incidents
    @staticmethod
    def _incident_sk(incident: WindowIncident) -> str:
        return f"INCIDENT#{incident.exchange}#{incident.code}"

    def open_incidents(self) -> list[WindowIncident]:
        # "INCIDENT$" is the first string after every "INCIDENT#..." key ("$" follows "#").
        return [self._incident(item) for item in self._query("dynamodb:Query(incidents)", "INCIDENT#", "INCIDENT$")]

    @staticmethod
    def _incident_item(incident: WindowIncident) -> dict[str, Any]:
        return {
            "exchange": s(incident.exchange),
            "code": s(incident.code),
            "count": n(incident.count),
            "total": n(incident.total),
            "opened_at": s(_time(incident.opened_at)),
            "held_at": s(_time(incident.held_at)),
        }

    @staticmethod
    def _incident(item: dict[str, Any]) -> WindowIncident:
        return WindowIncident(
            exchange=item["exchange"]["S"],
            code=item["code"]["S"],
            count=int(item["count"]["N"]),
            total=int(item["total"]["N"]),
            opened_at=_parse(item["opened_at"]["S"]),
            held_at=_parse(item["held_at"]["S"]),
        )

    def _query(self, operation: str, lo: str, hi: str) -> list[dict[str, Any]]:
        """The items of the partition whose sort key is in [lo, hi], every page."""
        params: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "pk = :pk AND sk BETWEEN :lo AND :hi",
            "ExpressionAttributeValues": {":pk": s(PK), ":lo": s(lo), ":hi": s(hi)},
            "ConsistentRead": True,
        }
        items: list[dict[str, Any]] = []
        while True:
            with storage_call(operation):
                answer = self._client.query(**params)
            items.extend(answer.get("Items", []))
            if "LastEvaluatedKey" not in answer:
                return items
            params["ExclusiveStartKey"] = answer["LastEvaluatedKey"]

    def open_incident(self, incident: WindowIncident) -> bool:
        opened = self._conditional(
            "dynamodb:PutItem(incident)",
            self._client.put_item,
            Item={**self._key(self._incident_sk(incident)), **self._incident_item(incident)},
            ConditionExpression="attribute_not_exists(pk)",
        )
        if opened:
            with storage_call("dynamodb:PutItem(opened)"):
                self._client.put_item(
                    TableName=self._table,
                    Item={
                        **self._key(f"OPENED#{_time(incident.opened_at)}#{incident.exchange}#{incident.code}"),
                        **self._incident_item(incident),
                        "ttl": n(int(incident.opened_at.timestamp()) + RUN_TTL_DAYS * 86400),
                    },
                )
        return opened

    def incidents_opened(self, since: datetime, until: datetime) -> list[WindowIncident]:
        items = self._query("dynamodb:Query(opened)", f"OPENED#{_time(since)}#~", f"OPENED#{_time(until)}#~")
        return [self._incident(item) for item in items]

    def hold_incident(self, incident: WindowIncident) -> None:
        # Only ever later: two finalisers judging at once keep the later hold.
        self._conditional(
            "dynamodb:UpdateItem(incident)",
            self._client.update_item,
            Key=self._key(self._incident_sk(incident)),
            UpdateExpression="SET held_at = :at",
            ConditionExpression="attribute_exists(pk) AND held_at < :at",
            ExpressionAttributeValues={":at": s(_time(incident.held_at))},
        )

    def close_incident(self, incident: WindowIncident) -> None:
        # Not if another finaliser saw the rule hold again since: it stays open.
        self._conditional(
            "dynamodb:DeleteItem(incident)",
            self._client.delete_item,
            Key=self._key(self._incident_sk(incident)),
            ConditionExpression="held_at = :at",
            ExpressionAttributeValues={":at": s(_time(incident.held_at))},
        )

    # ------------------------------------------------------------ summary
    def claim_summary(self, day: str) -> bool:
        return self._conditional(
            "dynamodb:PutItem(summary)",
            self._client.put_item,
            Item={**self._key(f"SUMMARY#{day}"), "ttl": n(int(_parse(f"{day}T00:00:00Z").timestamp()) + 86400 * 30)},
            ConditionExpression="attribute_not_exists(pk)",
        )
