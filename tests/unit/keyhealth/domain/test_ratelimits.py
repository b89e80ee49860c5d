"""Rate plans: what a check costs in each exchange's own per-IP pools, and the audit rate
that the configured share of those pools allows."""

from __future__ import annotations

import pytest

from keyhealth.domain.ratelimits import RatePlan
from keyhealth.exchanges import binance, bingx, bitget
from keyhealth.exchanges.registry import Exchange

PLANS: dict[Exchange, RatePlan] = {
    Exchange.BINANCE: binance.RATE_PLAN,
    Exchange.BITGET: bitget.RATE_PLAN,
    Exchange.BINGX: bingx.RATE_PLAN,
}

SAPI = f"sapi:{binance.API_RESTRICTIONS_PATH}"
BINGX_PERMISSIONS = f"interface:{bingx.API_PERMISSIONS_PATH}"

#: every path each adapter may call, with its documented per-IP weight (exchanges.md 1.4, 2.4, 3.4)
WEIGHTS = {
    Exchange.BINANCE: {
        binance.API_RESTRICTIONS_PATH: [(SAPI, 1)],
        binance.ACCOUNT_PATH: [("api", 20)],
        binance.FUTURES_ACCOUNT_CONFIG_PATH: [("fapi", 5)],
        binance.SERVER_TIME_PATH: [("api", 1)],
    },
    Exchange.BITGET: {
        bitget.ACCOUNT_INFO_CLASSIC: [("ip_requests", 1)],
        bitget.ACCOUNT_INFO_UNIFIED: [("ip_requests", 1)],
        bitget.SERVER_TIME: [("ip_requests", 1)],
    },
    Exchange.BINGX: {
        bingx.API_PERMISSIONS_PATH: [("account_group_requests", 1), (BINGX_PERMISSIONS, 1)],
        bingx.UID_PATH: [("account_group_requests", 1), (f"interface:{bingx.UID_PATH}", 1)],
        bingx.SERVER_TIME_PATH: [("account_group_requests", 1), (f"interface:{bingx.SERVER_TIME_PATH}", 1)],
    },
}


def test_every_exchange_has_a_plan_for_itself():
    assert {exchange: plan.exchange for exchange, plan in PLANS.items()} == {e: e for e in Exchange}


@pytest.mark.parametrize(
    ("exchange", "path", "weights"),
    [(exchange, path, weights) for exchange, paths in WEIGHTS.items() for path, weights in paths.items()],
)
def test_each_path_an_adapter_calls_weighs_what_the_exchange_documents(exchange, path, weights):
    assert PLANS[exchange].weights(path) == weights


@pytest.mark.parametrize("exchange", list(Exchange))
def test_every_pool_a_path_spends_from_is_declared_with_its_limit(exchange):
    plan = PLANS[exchange]
    for path in WEIGHTS[exchange]:
        for pool, _ in plan.weights(path):
            assert plan.pool(pool).limit > 0, (path, pool)


@pytest.mark.parametrize(
    ("exchange", "cost"),
    [
        (Exchange.BINANCE, {SAPI: 1}),
        (Exchange.BITGET, {"ip_requests": 1}),
        (Exchange.BINGX, {"account_group_requests": 1, BINGX_PERMISSIONS: 1}),
    ],
)
def test_the_audit_light_check_costs_one_request(exchange, cost):
    assert PLANS[exchange].audit_check_cost() == cost


@pytest.mark.parametrize(
    ("exchange", "rate"),
    [
        (Exchange.BINANCE, 100.0),  # half of 12,000/min on its own /sapi endpoint, weight 1
        (Exchange.BITGET, 50.0),  # half of 6,000/min per IP
        (Exchange.BINGX, 15.0),  # half of 300 per 10 s per interface (the group's 2,000 would allow 100/s)
    ],
)
def test_checks_per_second_at_half_the_budget(exchange, rate):
    assert PLANS[exchange].checks_per_second(0.5) == pytest.approx(rate)


def test_checks_per_second_scales_with_the_share():
    for plan in PLANS.values():
        assert plan.checks_per_second(1.0) == pytest.approx(2 * plan.checks_per_second(0.5))


@pytest.mark.parametrize(
    ("exchange", "paths", "cost"),
    [
        # a timestamp error: the exchange clock is read and the call retried
        (
            Exchange.BINANCE,
            [binance.API_RESTRICTIONS_PATH, binance.SERVER_TIME_PATH, binance.API_RESTRICTIONS_PATH],
            {SAPI: 2, "api": 1},
        ),
        # a bind that confirms futures and identifies the account
        (
            Exchange.BINANCE,
            [binance.API_RESTRICTIONS_PATH, binance.FUTURES_ACCOUNT_CONFIG_PATH, binance.ACCOUNT_PATH],
            {SAPI: 1, "fapi": 5, "api": 20},
        ),
        # a unified trading account: the classic call is refused, then v3 answers
        (Exchange.BITGET, [bitget.ACCOUNT_INFO_CLASSIC, bitget.ACCOUNT_INFO_UNIFIED], {"ip_requests": 2}),
        (
            Exchange.BINGX,
            [bingx.API_PERMISSIONS_PATH, bingx.UID_PATH],
            {"account_group_requests": 2, BINGX_PERMISSIONS: 1, f"interface:{bingx.UID_PATH}": 1},
        ),
    ],
)
def test_the_cost_of_several_calls_adds_up_per_pool(exchange, paths, cost):
    assert PLANS[exchange].cost(paths) == cost


def test_binance_pools_are_per_minute_with_the_published_limits():
    plan = PLANS[Exchange.BINANCE]
    assert {p.name: (p.limit, p.window_seconds) for p in plan.pools} == {
        "api": (6000, 60),
        SAPI: (12000, 60),
        "fapi": (2400, 60),
    }


def test_backoffs_wait_at_least_as_long_as_each_exchange_needs():
    assert PLANS[Exchange.BINANCE].default_backoff_seconds == 5.0
    assert PLANS[Exchange.BITGET].max_backoff_seconds == 300.0  # the 5-minute IP lockout
    assert PLANS[Exchange.BINGX].default_backoff_seconds == 300.0  # "recover after 5 minutes"
    for plan in PLANS.values():
        assert 0 < plan.default_backoff_seconds <= plan.max_backoff_seconds


def test_bingx_pools_are_found_behind_a_base_url_path_prefix():
    from keyhealth.exchanges import bingx

    plan = bingx.RATE_PLAN
    prefixed = plan.cost(["/proxy/bingx" + bingx.API_PERMISSIONS_PATH])
    assert prefixed == plan.cost([bingx.API_PERMISSIONS_PATH])
    assert all(plan.pool(name) for name in prefixed)  # every pool named exists


def test_window_budgets_are_whole_units_never_rounded_up():
    from keyhealth.exchanges import bingx

    pool = f"interface:{bingx.API_PERMISSIONS_PATH}"  # 300 per 10 s
    assert bingx.RATE_PLAN.window_budget(pool, 0.5) == (10.0, 150)
    assert bingx.RATE_PLAN.window_budget(pool, 0.15, 0.1) == (1.0, 4)  # 4.5 units: 4 may be spent
    assert bingx.RATE_PLAN.checks_per_second(0.15, 0.1) == 4.0
