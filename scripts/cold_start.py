"""Cold start of each Lambda handler: what importing it costs beyond the libraries it cannot avoid.

For each handler, two fresh Python processes are timed, alternately, `--runs` times each:
- the libraries alone: boto3, the Powertools parts the handler uses, httpx where it calls an
  exchange (or Slack);
- the same libraries, then the handler module.
The ratio of the medians is the handler's cold-start cost relative to what it cannot avoid
(issue 9 asks for at most 1.2). Prints a table, then one JSON line.

    python scripts/cold_start.py [--runs 15]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: Every function is traced: Powertools Tracer and the X-Ray SDK it drives.
TRACING = ("aws_lambda_powertools.tracing", "aws_xray_sdk.core")
API = (
    *TRACING,
    "boto3",
    "aws_lambda_powertools.event_handler",
    "aws_lambda_powertools.event_handler.openapi.params",
    "aws_lambda_powertools.logging",
    "aws_lambda_powertools.metrics",
    "pydantic",
)
AUDIT = (*TRACING, "boto3", "aws_lambda_powertools.logging", "aws_lambda_powertools.metrics")

#: handler module -> the libraries it cannot avoid
HANDLERS: dict[str, tuple[str, ...]] = {
    "functions.bind.app": (*API, "aws_lambda_powertools.utilities.idempotency", "httpx"),
    "functions.verify.app": (*API, "httpx"),
    "functions.read.app": API,
    "functions.unbind.app": API,
    "functions.audit_dispatcher.app": AUDIT,
    "functions.audit_worker.app": (*AUDIT, "httpx"),
    "functions.slack_notifier.app": (*AUDIT, "httpx"),
    "functions.orphan_sweeper.app": AUDIT,
}


def _time(modules: tuple[str, ...]) -> float:
    code = "; ".join(f"import {m}" for m in modules)
    env = {**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'layers' / 'shared'}", "PYTHONDONTWRITEBYTECODE": "0"}
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=ROOT)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args(argv)
    results = {}
    for handler, libraries in HANDLERS.items():
        _time((*libraries, handler))  # compile and cache bytecode once, as a deployed package ships it
        alone, with_handler = [], []
        for _ in range(args.runs):
            alone.append(_time(libraries))
            with_handler.append(_time((*libraries, handler)))
        base, total = statistics.median(alone), statistics.median(with_handler)
        results[handler] = {
            "libraries_ms": round(base * 1000, 1),
            "with_handler_ms": round(total * 1000, 1),
            "ratio": round(total / base, 3),
        }
        row = results[handler]
        print(
            f"{handler:<34} libraries {row['libraries_ms']:7.1f} ms   with handler {row['with_handler_ms']:7.1f} ms"
            f"   ratio {row['ratio']:.3f}",
            flush=True,
        )
    print(json.dumps({"runs": args.runs, "handlers": results, "max_ratio": max(r["ratio"] for r in results.values())}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
