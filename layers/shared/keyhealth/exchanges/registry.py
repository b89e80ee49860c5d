"""Builds one adapter per exchange from the settings, sharing one HTTP client."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from keyhealth.config import Settings
from keyhealth.exchanges.base import ExchangeAdapter, new_http_client
from keyhealth.exchanges.binance import BinanceAdapter
from keyhealth.exchanges.bingx import BingXAdapter
from keyhealth.exchanges.bitget import BitgetAdapter
from keyhealth.model import Exchange

Adapters = dict[Exchange, ExchangeAdapter]


def http_client_for(settings: Settings) -> httpx.Client:
    return new_http_client(
        source_address=settings.egress_source_address,
        connect_timeout=settings.connect_timeout,
        read_timeout=settings.read_timeout,
    )


def build_adapters(settings: Settings, client: httpx.Client, *, clock: Callable[[], float] | None = None) -> Adapters:
    extra = {"clock": clock} if clock else {}
    common = {"client": client, "egress_ips": settings.egress_ips, **extra}
    return {
        Exchange.BINANCE: BinanceAdapter(
            base_url=settings.binance_base_url,
            futures_base_url=settings.binance_futures_base_url,
            **common,
        ),
        Exchange.BITGET: BitgetAdapter(base_url=settings.bitget_base_url, **common),
        Exchange.BINGX: BingXAdapter(base_url=settings.bingx_base_url, **common),
    }
