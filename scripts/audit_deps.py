"""Audit pinned Python dependencies for known vulnerabilities with pip-audit (`make audit-deps`).

Each requirements file is audited on its own (the layer's is what is deployed), with pip-audit's --strict:
a dependency that cannot be resolved or looked up fails the audit rather than being skipped. Known
vulnerabilities that do not apply are listed, each with its reason, in scripts/pip-audit-ignore.txt.

pip-audit needs a vulnerability service: PyPI's per-version JSON API (its default) or OSV. Both are probed
first. When neither answers, nothing can be audited: that fails, or with --if-unreachable=warn prints a
notice saying so and exits 0 (for CI on machines that reach PyPI's package index but not those APIs).

    python scripts/audit_deps.py [--if-unreachable fail|warn] [--osv-url URL] REQUIREMENTS...
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import urllib.error
import urllib.request
from importlib.metadata import version
from pathlib import Path

IGNORE_FILE = Path(__file__).resolve().parent / "pip-audit-ignore.txt"
PYPI_PROBE = "https://pypi.org/pypi/pip-audit/{version}/json"  # the per-version API pip-audit's PyPI service uses
OSV_URL = "https://api.osv.dev/v1/query"  # pip-audit's default; --osv-url for a mirror
TIMEOUT = 15


def ignored_vulnerabilities(path: Path = IGNORE_FILE) -> list[str]:
    """IDs from `ID  reason...` lines; a line without a reason is an error."""
    ids = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        vuln_id, _, reason = line.partition(" ")
        if not reason.strip():
            raise SystemExit(f"{path.name}:{number}: {vuln_id} has no reason (write `ID  why it does not apply`)")
        ids.append(vuln_id)
    return ids


def _answers(request: urllib.request.Request) -> str | None:
    """None when the service answered 200, else why not."""
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:  # noqa: S310 - fixed https URLs
            return None if response.status == 200 else f"HTTP {response.status}"
    except urllib.error.HTTPError as error:
        return f"HTTP {error.code}"
    except (urllib.error.URLError, OSError) as error:
        return str(getattr(error, "reason", error))


def vulnerability_service(osv_url: str = OSV_URL) -> tuple[str | None, list[str]]:
    """("pypi" or "osv", []) for the first service that answers, or (None, why each did not)."""
    pip_audit = version("pip-audit")
    pypi = PYPI_PROBE.format(version=pip_audit)
    why_not = _answers(urllib.request.Request(pypi))  # noqa: S310 - a fixed https URL
    if why_not is None:
        return "pypi", []
    reasons = [f"PyPI's per-version JSON API ({pypi}): {why_not}"]
    query = json.dumps({"package": {"name": "pip-audit", "ecosystem": "PyPI"}, "version": pip_audit}).encode()
    osv = urllib.request.Request(osv_url, data=query, headers={"Content-Type": "application/json"})  # noqa: S310
    why_not = _answers(osv)
    if why_not is None:
        return "osv", []
    return None, [*reasons, f"OSV ({osv_url}): {why_not}"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--if-unreachable", choices=("fail", "warn"), default="fail")
    parser.add_argument("--osv-url", default=OSV_URL, help="an OSV query API (a mirror), used when PyPI's is not")
    parser.add_argument("requirements", nargs="+", type=Path)
    args = parser.parse_args(argv)
    ignore = ignored_vulnerabilities()
    service, reasons = vulnerability_service(args.osv_url)
    if service is None:
        print("audit-deps: NOT RUN - no vulnerability service answers from here, so no dependency was audited:")
        for reason in reasons:
            print(f"  {reason}")
        return 0 if args.if_unreachable == "warn" else 3
    failed = []
    for requirements in args.requirements:
        command = [sys.executable, "-m", "pip_audit", "--strict", "--progress-spinner", "off", "--aliases", "on"]
        command += ["--vulnerability-service", service, "--osv-url", args.osv_url, "--requirement", str(requirements)]
        for vuln_id in ignore:
            command += ["--ignore-vuln", vuln_id]
        print(f"audit-deps: {requirements} ({service})", flush=True)
        if subprocess.run(command, check=False).returncode != 0:
            failed.append(str(requirements))
    if failed:
        print(f"audit-deps: failed for {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
