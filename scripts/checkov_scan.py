"""Run checkov over CloudFormation templates and fail on anything but a clean, complete scan.

checkov alone exits 0 when a template does not parse or does not exist (it counts a "parsing error" and
scans nothing): here that fails, as does any failed check, a template with no resource scanned, or a skip
without a reason. Skips are printed with their reasons, so the log shows what was accepted and why.

    python scripts/checkov_scan.py --checkov .venv-checkov/bin/checkov [--config-file F] TEMPLATE...
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

NO_COMMENT = "No comment provided"  # what checkov reports for a Metadata skip without a comment


def scan(checkov: str, templates: list[str], config_file: str | None) -> list[dict[str, Any]]:
    command = [checkov, "--framework", "cloudformation", "--skip-download", "-o", "json"]
    if config_file:
        command += ["--config-file", config_file]
    for template in templates:
        command += ["-f", template]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError:
        sys.stderr.write(done.stderr)
        raise SystemExit(f"checkov: no JSON report (exit {done.returncode})") from None
    return report if isinstance(report, list) else [report]


def problems(reports: list[dict[str, Any]], templates: list[str]) -> list[str]:
    found: list[str] = []
    scanned: set[str] = set()
    for report in reports:
        if "results" not in report:  # checkov's answer when nothing was scanned at all
            continue
        results = report["results"]
        for error in results.get("parsing_errors", []):
            found.append(f"parsing error: {error}")
        for check in results["failed_checks"]:
            found.append(
                f"FAILED {check['check_id']} {check['resource']} ({check['file_path'].lstrip('/')}): "
                f"{check['check_name']}"
            )
        for check in results["skipped_checks"]:
            comment = (check.get("check_result") or {}).get("suppress_comment", "")
            if not comment.strip() or comment == NO_COMMENT:
                found.append(f"skip without a reason: {check['check_id']} {check['resource']}")
        for kind in ("passed_checks", "failed_checks", "skipped_checks"):
            scanned |= {Path(check["file_path"]).name for check in results[kind]}
    for template in templates:
        if Path(template).name not in scanned:
            found.append(f"{template}: nothing scanned (missing, unparsable or empty)")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkov", required=True, help="the checkov executable")
    parser.add_argument("--config-file", help="checkov --config-file")
    parser.add_argument("templates", nargs="+")
    args = parser.parse_args(argv)
    reports = scan(args.checkov, args.templates, args.config_file)
    for report in reports:
        skipped: dict[tuple[str, str], set[str]] = {}
        for check in report.get("results", {}).get("skipped_checks", []):
            comment = (check.get("check_result") or {}).get("suppress_comment", "")
            skipped.setdefault((check["check_id"], comment), set()).add(check["resource"].split(".")[-1])
        for (check_id, comment), resources in sorted(skipped.items()):
            print(f"  skipped {check_id} on {', '.join(sorted(resources))}: {comment}")
        if summary := report.get("summary"):
            print(
                f"checkov {summary.get('checkov_version', '?')} {' '.join(args.templates)}: "
                f"{summary['resource_count']} resources, {summary['passed']} passed, "
                f"{summary['skipped']} skipped, {summary['failed']} failed, {summary['parsing_errors']} parsing errors"
            )
    found = problems(reports, args.templates)
    for problem in found:
        print(problem)
    if found:
        print(f"checkov: {len(found)} problem(s)")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
