"""Logs, traces and metrics, the same way in every function: one Powertools Logger, one
entry-point decorator (logging context and X-Ray trace), and CloudWatch metrics in Embedded
Metric Format."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from aws_lambda_powertools import Logger
from aws_lambda_powertools.metrics import MetricUnit, single_metric

if TYPE_CHECKING:
    from keyhealth.canary.ports import CanaryState

SERVICE = "keyhealth"
NAMESPACE = "keyhealth"

#: The one logger of every function. Uncaught exceptions are not logged by Powertools: their
#: text is not known to be free of secrets (the API logs the type only, see api/http.py).
logger = Logger(service=SERVICE, log_uncaught_exceptions=False)

Handler = TypeVar("Handler", bound=Callable[..., Any])


def tracing_enabled() -> bool:
    """The template turns X-Ray off by setting POWERTOOLS_TRACE_DISABLED (parameter Tracing)."""
    return os.environ.get("POWERTOOLS_TRACE_DISABLED", "").strip().lower() not in ("1", "true")


@functools.cache
def tracer() -> Any:
    """The one Powertools Tracer. Only botocore is patched: its X-Ray subsegments record the
    operation and whitelisted names (table, queue, topic), never a request body (so never a
    SecretString). HTTP clients are not patched: an exchange URL carries the request's
    signature, and the Slack webhook's URL is a credential."""
    from aws_lambda_powertools import Tracer

    return Tracer(service=SERVICE, patch_modules=("botocore",))


def entry_point(*, correlation_id_path: str | None = None) -> Callable[[Handler], Handler]:
    """The decorator of every Lambda entry point: the invocation's logging context, never the
    event (a bind event carries the secret), and no key of one invocation left on the next;
    then its X-Ray trace, which records neither the answer nor the error's text (either may
    hold what a client sent)."""
    log_context = logger.inject_lambda_context(
        correlation_id_path=correlation_id_path,
        log_event=False,
        clear_state=True,
    )

    def decorate(handler: Handler) -> Handler:
        logged: Handler = log_context(handler)
        if not tracing_enabled():
            return logged
        traced: Handler = tracer().capture_lambda_handler(logged, capture_response=False, capture_error=False)
        return traced

    return decorate


def emit_run_metrics(summary: dict[str, Any]) -> None:
    """Per run: checked and each status, per exchange; and the checks per second achieved."""
    for exchange, row in summary["by_exchange"].items():
        for name, value in row.items():
            metric = "Checked" if name == "total" else f"Bindings{name.title()}"
            with single_metric(
                name=metric,
                unit=MetricUnit.Count,
                value=value,
                namespace=NAMESPACE,
                default_dimensions={"exchange": exchange},
            ):
                pass
    with single_metric(
        name="AuditChecksPerSecond",
        unit=MetricUnit.CountPerSecond,
        value=summary["checks_per_second"],
        namespace=NAMESPACE,
    ):
        pass
    with single_metric(name="AuditRunsFinished", unit=MetricUnit.Count, value=1, namespace=NAMESPACE):
        pass


def record_check(exchange: str, status: str) -> None:
    """One key check, by exchange and outcome."""
    with single_metric(
        name="KeyChecks",
        unit=MetricUnit.Count,
        value=1,
        namespace=NAMESPACE,
        default_dimensions={"exchange": exchange, "outcome": status},
    ):
        pass


def record_canary(state: CanaryState) -> None:
    """One egress canary probe, by exchange and egress IP: its latency, the exchange's clock offset, up or not."""
    dimensions = {"exchange": state.exchange, "egress_ip": state.egress_ip}
    figures = [
        ("CanaryUp", MetricUnit.Count, 0.0 if state.down else 1.0),
        ("CanaryLatency", MetricUnit.Milliseconds, state.latency_ms),
    ]
    if state.clock_offset_ms is not None:
        figures.append(("CanaryClockOffset", MetricUnit.Milliseconds, float(state.clock_offset_ms)))
    for name, unit, value in figures:
        with single_metric(name=name, unit=unit, value=value, namespace=NAMESPACE, default_dimensions=dimensions):
            pass
