"""POST /bindings/{id}/verify: re-check now, store the report, alert on a status change."""

from __future__ import annotations

from functions.read import app as read_function
from functions.verify import app as verify_function
from simulators.base import Fault
from tests.support.api import created, get_event, verify_event
from tests.support.events import PLATFORM_B


def test_verify_checks_again_and_stores_the_report(stack):
    binding = created(stack, stack.exchanges.key("binance", "healthy"))
    response = stack.invoke(verify_function, verify_event(binding["binding_id"]))
    assert response.status == 200, response
    assert response.json["binding"]["status"] == "healthy"
    assert response.json["binding"]["last_report"] == response.json["report"]
    assert response.json["binding"]["updated_at"] >= binding["updated_at"]
    assert stack.alerts() == []  # nothing changed, nothing said


def test_a_status_change_is_stored_and_published_once(stack):
    key = stack.exchanges.key("binance", "healthy")
    binding = created(stack, key)
    # The user restricts the key to another IP on Binance: our egress is no longer allowed.
    stack.exchanges.simulators["binance"].keys[key.api_key].ip_whitelist = ("203.0.113.99",)

    response = stack.invoke(verify_function, verify_event(binding["binding_id"]))
    assert response.status == 200
    assert response.json["binding"]["status"] == "failing"
    assert [f["code"] for f in response.json["report"]["findings"]] == ["key_rejected"]

    alerts = stack.alerts()
    assert len(alerts) == 1
    alert = alerts[0]
    assert alert["subject"] == (f"keyhealth: binance binding {binding['binding_id']} healthy -> failing (key_rejected)")
    assert alert["attributes"] == {
        "type": "binding_status_changed",
        "severity": "critical",
        "exchange": "binance",
        "status": "failing",
    }
    body = alert["body"]
    assert body["type"] == "binding_status_changed"
    assert (body["previous_status"], body["status"]) == ("healthy", "failing")
    assert body["binding_id"] == binding["binding_id"]
    assert body["tenant"] == "111111111111:role/platform-backend"
    assert body["api_key_masked"] == binding["api_key_masked"]
    assert body["findings"][0]["code"] == "key_rejected"

    # Verified again, still failing: no new alert.
    assert stack.invoke(verify_function, verify_event(binding["binding_id"])).status == 200
    assert len(stack.alerts()) == 1


def test_a_transient_result_never_changes_the_stored_status(stack):
    binding = created(stack, stack.exchanges.key("bingx", "healthy spot and futures"))
    stack.exchanges.simulators["bingx"].fault = Fault.MAINTENANCE
    response = stack.invoke(verify_function, verify_event(binding["binding_id"]))
    assert response.status == 200
    assert response.json["report"]["status"] == "unknown"
    assert response.json["binding"]["status"] == "healthy"
    assert response.json["binding"]["last_report"]["status"] == "unknown"
    assert stack.alerts() == []
    stored = stack.invoke(read_function, get_event(binding["binding_id"])).json
    assert stored["status"] == "healthy"


def test_another_tenant_gets_404_and_nothing_changes(stack):
    binding = created(stack, stack.exchanges.key("bitget", "healthy"))
    before = stack.table_items()
    response = stack.invoke(verify_function, verify_event(binding["binding_id"], principal=PLATFORM_B))
    assert response.status == 404
    assert response.json["error"]["code"] == "binding_not_found"
    assert stack.table_items() == before


def test_an_unknown_binding_is_404(stack):
    response = stack.invoke(verify_function, verify_event("bnd_01JAAAAAAAAAAAAAAAAAAAAAAA"))
    assert response.status == 404
    assert stack.invoke(verify_function, verify_event("not-an-id")).status == 404


def test_a_concurrent_write_is_never_overwritten_silently(stack):
    key = stack.exchanges.key("binance", "healthy")
    binding = created(stack, key)
    item_key = {"pk": {"S": "T#111111111111:role/platform-backend"}, "sk": {"S": f"B#{binding['binding_id']}"}}

    def another_writer() -> None:  # e.g. a rotation that committed between verify's read and write
        stack.dynamodb.update_item(
            TableName="keyhealth-bindings",
            Key=item_key,
            UpdateExpression="SET version = version + :one, label = :label",
            ExpressionAttributeValues={":one": {"N": "1"}, ":label": {"S": "written by the other request"}},
        )

    stack.dynamodb.before["put_item"] = another_writer
    response = stack.invoke(verify_function, verify_event(binding["binding_id"]))

    assert response.status == 409
    assert response.json["error"]["code"] == "concurrent_update"
    stored = stack.dynamodb.get_item(TableName="keyhealth-bindings", Key=item_key)["Item"]
    assert stored["label"]["S"] == "written by the other request"
    assert stored["version"]["N"] == "2"
