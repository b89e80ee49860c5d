"""Run checkov over CloudFormation templates and fail on anything but a clean, complete scan.

checkov alone exits 0 when a template does not parse or does not exist (it counts a "parsing error" and
scans nothing): here that fails, as does any failed check, a template with no resource scanned, or a skip
without a reason. Skips are printed with their reasons, so the log shows what was accepted and why.

checkov and `sam validate` take no parameter values (checkov resolves a `Ref` to the parameter's Default;
cfn-lint's `--parameters` is ignored on a SAM template), so `--render-to` writes a template as deployed with
given values instead: a copy whose parameters' Defaults are those values, which `make lint-template` then
lints and scans like the original (e.g. `CredentialStore=kms`).

    python scripts/checkov_scan.py --checkov .venv-checkov/bin/checkov [--config-file F] TEMPLATE...
    python scripts/checkov_scan.py --render-to OUT --parameter NAME=VALUE [--parameter ...] TEMPLATE
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

NO_COMMENT = "No comment provided"  # what checkov reports for a Metadata skip without a comment


class _CfnLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short tags (!Ref, !Sub, ...), each kept as {tag: value}."""


def _tagged(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return {"!" + suffix: value}


_CfnLoader.add_multi_constructor("!", _tagged)


def _load(text: str, json_template: bool) -> dict[str, Any]:
    document = json.loads(text) if json_template else yaml.load(text, Loader=_CfnLoader)  # noqa: S506 - SafeLoader
    if not isinstance(document, dict):
        raise SystemExit("not a template: its top level is not a mapping")
    return document


def _yaml_with_default(text: str, name: str, value: str | int) -> str:
    """`text` with the Default line of parameter `name` (top-level Parameters, two-space indent) set to
    `value`, or added under the parameter's name; every other line is kept as it is."""
    section = re.search(r"^Parameters:[ \t]*\n(?P<body>(?:(?:[ \t].*)?\n)*)", text, re.MULTILINE)
    if section is None:
        raise SystemExit("no top-level Parameters section")
    body = section.group("body")
    block = re.search(rf"^  {re.escape(name)}:[ \t]*\n(?P<fields>(?:(?: {{4}}.*)?\n)*)", body, re.MULTILINE)
    if block is None:
        raise SystemExit(f"no parameter {name} in the Parameters section")
    line = f"    Default: {json.dumps(value)}"
    fields, replaced = re.subn(r"^    Default:.*$", line, block.group("fields"), count=1, flags=re.MULTILINE)
    if not replaced:
        fields = f"{line}\n{fields}"
    body = body[: block.start("fields")] + fields + body[block.end("fields") :]
    return text[: section.start("body")] + body + text[section.end("body") :]


def render(template: Path, parameters: dict[str, str], output: Path) -> None:
    """Write `template` as deployed with `parameters` to `output`: the same template with those parameters'
    Defaults set to the values. A YAML template keeps its text (tags, comments, checkov skips) but for the
    Default lines; a JSON one is written again. Each value must be one of the parameter's AllowedValues,
    and the copy is read back: it must differ from the original in those Defaults only."""
    json_template = template.suffix == ".json"
    text = template.read_text()
    original = _load(text, json_template)
    expected = copy.deepcopy(original)
    declared = expected.get("Parameters") or {}
    for name, value in parameters.items():
        if name not in declared:
            raise SystemExit(f"{template}: no parameter {name}")
        allowed = declared[name].get("AllowedValues")
        if allowed is not None and value not in [str(a) for a in allowed]:
            raise SystemExit(f"{template}: {name}={value} is not one of its AllowedValues {allowed}")
        # A parameter whose AllowedValues are numbers (EgressIpCount) gets a number: cfn-lint compares types.
        typed = allowed is not None and all(isinstance(a, int) and not isinstance(a, bool) for a in allowed)
        declared[name]["Default"] = int(value) if typed else value
    if json_template:
        rendered = json.dumps(expected, indent=1, sort_keys=True) + "\n"
    else:
        rendered = text
        for name in parameters:
            rendered = _yaml_with_default(rendered, name, declared[name]["Default"])
    if _load(rendered, json_template) != expected:
        raise SystemExit(f"{template}: rendering {parameters} changed more than those Defaults")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(rendered)


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
    parser.add_argument("--checkov", help="the checkov executable (to scan)")
    parser.add_argument("--config-file", help="checkov --config-file")
    parser.add_argument("--render-to", type=Path, help="write TEMPLATE with the --parameter Defaults here; no scan")
    parser.add_argument("--parameter", action="append", default=[], help="Name=Value (repeatable; with --render-to)")
    parser.add_argument("templates", nargs="+")
    args = parser.parse_args(argv)
    if args.render_to or args.parameter:
        if not (args.render_to and args.parameter and len(args.templates) == 1):
            parser.error("--render-to takes one TEMPLATE and at least one --parameter")
        if any("=" not in p for p in args.parameter):
            parser.error("--parameter is Name=Value")
        parameters = dict(p.split("=", 1) for p in args.parameter)
        render(Path(args.templates[0]), parameters, args.render_to)
        print(f"{args.render_to}: {args.templates[0]} with Default {', '.join(args.parameter)}")
        return 0
    if not args.checkov:
        parser.error("--checkov is required to scan")
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
