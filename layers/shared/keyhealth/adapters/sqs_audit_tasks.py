"""The audit's work queues in SQS (audit.ports.TaskQueue), one per exchange and egress IP."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from keyhealth.adapters.aws_errors import storage_call
from keyhealth.audit.model import AuditTask
from keyhealth.audit.ports import NotSent
from keyhealth.domain.errors import StorageAdapterError
from keyhealth.domain.exchange import ExchangeName


class SqsTaskQueue:
    """One queue per exchange, so that a throttled exchange's backlog never blocks another's; with several
    egress IPs, one per exchange and IP (`queue_urls[exchange]` in the order of `egress_ips`), each drained
    by the worker that leaves from that IP, so that a task is checked from the IP it names."""

    def __init__(
        self,
        client: Any,
        queue_urls: Mapping[ExchangeName, str | Sequence[str]],
        egress_ips: Sequence[str] = (),
    ) -> None:
        self._client = client
        self._urls = {
            exchange: (urls,) if isinstance(urls, str) else tuple(urls) for exchange, urls in queue_urls.items()
        }
        self._index = {ip: i for i, ip in enumerate(egress_ips)}

    def url_for(self, task: AuditTask) -> str:
        urls = self._urls[task.exchange]
        if len(urls) == 1 or task.egress_ip is None:
            return urls[0]
        return urls[self._index[task.egress_ip]]

    def send(self, tasks: list[AuditTask]) -> None:
        """Every batch is tried; `NotSent` names the tasks of refused entries and of failed calls
        (a call that timed out may have been taken after all: sending it again makes a duplicate,
        which the run's recording counts once)."""
        by_queue: dict[str, list[AuditTask]] = {}
        for task in tasks:
            by_queue.setdefault(self.url_for(task), []).append(task)
        unsent: list[AuditTask] = []
        reason = ""
        for url, items in by_queue.items():
            for start in range(0, len(items), 10):
                batch = items[start : start + 10]
                entries = [{"Id": str(i), "MessageBody": task.to_json()} for i, task in enumerate(batch)]
                try:
                    with storage_call("sqs:SendMessageBatch"):
                        answer = self._client.send_message_batch(QueueUrl=url, Entries=entries)
                except StorageAdapterError as error:
                    unsent.extend(batch)
                    reason = error.reason
                    continue
                if failed := answer.get("Failed"):
                    refused = {str(entry.get("Id")) for entry in failed}
                    unsent.extend(task for i, task in enumerate(batch) if str(i) in refused)
                    reason = f"{len(failed)} messages refused ({failed[0].get('Code', 'unknown')})"
        if unsent:
            raise NotSent("sqs:SendMessageBatch", reason, unsent)


#: SQS's own limit on a message's visibility timeout.
MAX_VISIBILITY_SECONDS = 43_200


class SqsRedelivery:
    """Puts a received audit task back for later: its visibility is set to when it may run again."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self._urls: dict[str, str] = {}

    def _queue_url(self, queue_arn: str) -> str:
        """arn:aws:sqs:REGION:ACCOUNT:NAME -> the queue's URL, as the SQS client wants it."""
        if queue_arn not in self._urls:
            account, name = queue_arn.split(":")[4:6]
            with storage_call("sqs:GetQueueUrl"):
                answer = self._client.get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account)
            self._urls[queue_arn] = answer["QueueUrl"]
        return self._urls[queue_arn]

    def delay(self, queue_arn: str, receipt_handle: str, seconds: float) -> None:
        """Never early: the delay is rounded up to whole seconds (at least 1, at most SQS's limit)."""
        with storage_call("sqs:ChangeMessageVisibility"):
            self._client.change_message_visibility(
                QueueUrl=self._queue_url(queue_arn),
                ReceiptHandle=receipt_handle,
                VisibilityTimeout=min(max(math.ceil(seconds), 1), MAX_VISIBILITY_SECONDS),
            )
