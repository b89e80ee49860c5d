"""CloudWatch metrics in Embedded Metric Format, from the run summary."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit, single_metric

NAMESPACE = "keyhealth"


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
