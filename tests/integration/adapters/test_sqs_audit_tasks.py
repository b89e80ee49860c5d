"""SqsTaskQueue on moto: audit tasks go to their exchange's queue, in batches of ten."""

from __future__ import annotations

from typing import Any

import pytest
from moto import mock_aws

from keyhealth.adapters.sqs_audit_tasks import SqsTaskQueue
from keyhealth.audit.model import AuditTask
from keyhealth.domain.errors import StorageAdapterError
from keyhealth.exchanges.registry import Exchange
from tests.support.aws import SESSION, Recording


def test_tasks_go_to_their_exchange_queue_in_batches_of_ten():
    with mock_aws():
        sqs = Recording(SESSION.client("sqs"))
        urls = {e: sqs.create_queue(QueueName=f"audit-{e.value}")["QueueUrl"] for e in Exchange}
        queue = SqsTaskQueue(sqs, urls)
        tasks = [
            AuditTask("run-1", Exchange.BINANCE if i % 5 else Exchange.BINGX, "t", f"bnd_{i:02d}") for i in range(28)
        ]

        queue.send(tasks)

        batches = [(p["QueueUrl"], len(p["Entries"])) for name, p in sqs.calls if name == "send_message_batch"]
        binance_url, bingx_url = urls[Exchange.BINANCE], urls[Exchange.BINGX]
        assert sorted(batches) == sorted([(binance_url, 10), (binance_url, 10), (binance_url, 2), (bingx_url, 6)])
        received = {exchange: _drain(sqs, url) for exchange, url in urls.items()}
        assert received[Exchange.BITGET] == []
        for exchange in (Exchange.BINANCE, Exchange.BINGX):
            expected = sorted(t.binding_id for t in tasks if t.exchange is exchange)
            assert sorted(t.binding_id for t in received[exchange]) == expected
            assert {t.exchange for t in received[exchange]} == {exchange}


def test_a_refused_message_is_a_storage_error():
    with mock_aws():
        sqs = SESSION.client("sqs")
        url = sqs.create_queue(QueueName="audit-bitget")["QueueUrl"]

        class Refusing(Recording):
            def send_message_batch(self, **params: Any) -> dict[str, Any]:
                return {"Successful": [], "Failed": [{"Id": "0", "SenderFault": False, "Code": "InternalError"}]}

        queue = SqsTaskQueue(Refusing(sqs), {Exchange.BITGET: url})
        with pytest.raises(StorageAdapterError):
            queue.send([AuditTask("run-1", Exchange.BITGET, "t", "bnd_1")])


def _drain(sqs: Any, url: str) -> list[AuditTask]:
    tasks = []
    while messages := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
        for message in messages:
            tasks.append(AuditTask.from_json(message["Body"]))
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    return tasks
