"""SqsTaskQueue on moto: audit tasks go to their exchange's queue, in batches of ten."""

from __future__ import annotations

from typing import Any

import pytest
from moto import mock_aws

from keyhealth.adapters.sqs_audit_tasks import SqsTaskQueue
from keyhealth.audit.model import AuditTask
from keyhealth.audit.ports import NotSent
from keyhealth.domain.errors import StorageAdapterError
from keyhealth.exchanges.registry import Exchange
from tests.support.aws import SESSION, Recording
from tests.support.faults import FaultyClient


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


def test_a_partial_failure_names_only_the_refused_tasks_and_sends_the_others():
    with mock_aws():
        # Given SQS refusing two entries of a batch of ten
        sqs = SESSION.client("sqs")
        url = sqs.create_queue(QueueName="audit-bitget")["QueueUrl"]
        tasks = [AuditTask("run-1", Exchange.BITGET, "t", f"bnd_{i}") for i in range(10)]
        refused = {"bnd_3", "bnd_7"}

        class PartlyRefusing(Recording):
            def send_message_batch(self, **params: Any) -> dict[str, Any]:
                entries = params["Entries"]
                taken = [e for e in entries if AuditTask.from_json(e["MessageBody"]).binding_id not in refused]
                answer = self._client.send_message_batch(QueueUrl=params["QueueUrl"], Entries=taken)
                failed = [e for e in entries if e not in taken]
                answer["Failed"] = [{"Id": e["Id"], "SenderFault": False, "Code": "InternalError"} for e in failed]
                return answer

        queue = SqsTaskQueue(PartlyRefusing(sqs), {Exchange.BITGET: url})
        # When the batch is sent
        with pytest.raises(NotSent) as not_sent:
            queue.send(tasks)
        # Then the error names exactly the refused tasks, and the others are in the queue
        assert sorted(t.binding_id for t in not_sent.value.unsent) == sorted(refused)
        assert "2 messages refused (InternalError)" in not_sent.value.reason
        assert sorted(t.binding_id for t in _drain(sqs, url)) == sorted(
            t.binding_id for t in tasks if t.binding_id not in refused
        )


def test_a_failed_call_names_its_batch_and_the_other_batches_are_still_sent():
    with mock_aws():
        sqs = Recording(SESSION.client("sqs"))
        urls = {e: sqs.create_queue(QueueName=f"audit-{e.value}")["QueueUrl"] for e in Exchange}
        faulty = FaultyClient(sqs)
        faulty.fail("send_message_batch")
        sends = 0

        class FirstCallFails(Recording):
            def send_message_batch(self, **params: Any) -> dict[str, Any]:
                nonlocal sends
                sends += 1
                if sends == 1:
                    return faulty.send_message_batch(**params)  # raises ServiceUnavailable
                return self._client.send_message_batch(**params)

        queue = SqsTaskQueue(FirstCallFails(sqs), urls)
        tasks = [AuditTask("run-1", Exchange.BINANCE, "t", f"bnd_{i:02d}") for i in range(15)]
        tasks.append(AuditTask("run-1", Exchange.BINGX, "t", "bnd_x"))
        with pytest.raises(NotSent) as not_sent:
            queue.send(tasks)
        assert [t.binding_id for t in not_sent.value.unsent] == [f"bnd_{i:02d}" for i in range(10)]
        assert not_sent.value.reason == "ServiceUnavailable"
        assert sorted(t.binding_id for t in _drain(sqs, urls[Exchange.BINANCE])) == [f"bnd_{i}" for i in range(10, 15)]
        assert [t.binding_id for t in _drain(sqs, urls[Exchange.BINGX])] == ["bnd_x"]


def test_with_a_queue_per_egress_ip_each_task_goes_to_the_queue_of_the_ip_it_names():
    ips = ("127.0.0.2", "127.0.0.3", "127.0.0.4")
    with mock_aws():
        sqs = SESSION.client("sqs")
        urls = {e: [sqs.create_queue(QueueName=f"audit-{e.value}-{n}")["QueueUrl"] for n in range(3)] for e in Exchange}
        queue = SqsTaskQueue(sqs, urls, egress_ips=ips)
        tasks = [AuditTask("run-1", Exchange.BITGET, "t", f"bnd_{i:02d}", ips[i % 3]) for i in range(12)]

        queue.send(tasks)

        for n, ip in enumerate(ips):
            received = _drain(sqs, urls[Exchange.BITGET][n])
            assert sorted(t.binding_id for t in received) == [t.binding_id for t in tasks if t.egress_ip == ip]
            assert {t.egress_ip for t in received} == {ip}  # the task keeps its IP through the queue
        assert all(_drain(sqs, url) == [] for url in urls[Exchange.BINANCE])


def _drain(sqs: Any, url: str) -> list[AuditTask]:
    tasks = []
    while messages := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
        for message in messages:
            tasks.append(AuditTask.from_json(message["Body"]))
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    return tasks
