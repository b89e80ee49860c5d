"""Wires the audit's real collaborators once per Lambda container."""

from __future__ import annotations

from functools import cache

from keyhealth.api import runtime as api_runtime
from keyhealth.audit.usecases import AuditDeps
from keyhealth.config import settings
from keyhealth.exchanges import binance, bingx, bitget
from keyhealth.model import Exchange
from keyhealth.ratelimits import RatePlan

PLANS: dict[Exchange, RatePlan] = {
    Exchange.BINANCE: binance.RATE_PLAN,
    Exchange.BITGET: bitget.RATE_PLAN,
    Exchange.BINGX: bingx.RATE_PLAN,
}


@cache
def audit_deps() -> AuditDeps:
    from keyhealth.aws.audit import DynamoCircuit, DynamoRateBudget, DynamoRunStore
    from keyhealth.aws.clients import client

    config = settings()
    dynamodb = client("dynamodb")
    return AuditDeps(
        services=api_runtime.services(),
        budget=DynamoRateBudget(
            dynamodb,
            config.table_name,
            PLANS,
            share=config.audit_budget_share,
            window_scale=config.audit_window_scale,
        ),
        circuit=DynamoCircuit(dynamodb, config.table_name),
        runs=DynamoRunStore(dynamodb, config.table_name),
        plans=PLANS,
        max_wait_seconds=config.audit_max_wait_seconds,
    )


@cache
def task_queue():
    from keyhealth.aws.audit import SqsTaskQueue
    from keyhealth.aws.clients import client

    config = settings()
    return SqsTaskQueue(client("sqs"), {exchange: config.queue_url_for(exchange) for exchange in Exchange})
