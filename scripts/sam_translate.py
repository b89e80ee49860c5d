"""template.yaml -> the CloudFormation that AWS's SAM transform makes of it (aws-sam-translator).

`make lint-template` runs cfn-lint on the output (cfn-lint on the SAM template alone misses an invalid
Runtime and bad Refs); tests/unit/test_template.py asserts the security properties on it.

    python scripts/sam_translate.py [--parameter Name=Value ...] [--output build/template.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

TEMPLATE = Path(__file__).resolve().parents[1] / "template.yaml"
REGION = "eu-west-1"


class _NoManagedPolicies:
    """The template names no SAM policy by name, so nothing is looked up in IAM (no AWS call)."""

    def load(self) -> dict[str, str]:
        return {}


def translate(parameters: dict[str, str] | None = None, template: Path = TEMPLATE) -> dict[str, Any]:
    from samtranslator.translator.transform import transform
    from samtranslator.yaml_helper import yaml_parse

    os.environ.setdefault("AWS_DEFAULT_REGION", REGION)  # the translator reads the region for pseudo parameters
    document = yaml_parse(template.read_text())
    # What `sam package` does first: local code folders become S3 objects.
    for resource in document["Resources"].values():
        properties = resource.get("Properties", {})
        for name in ("CodeUri", "ContentUri"):
            if isinstance(properties.get(name), str) and not properties[name].startswith("s3://"):
                properties[name] = f"s3://keyhealth-artifacts/{properties[name].strip('/')}.zip"
    return transform(document, dict(parameters or {}), _NoManagedPolicies())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parameter", action="append", default=[], help="Name=Value (repeatable)")
    parser.add_argument("--output", type=Path, help="write here instead of stdout")
    args = parser.parse_args(argv)
    parameters = dict(p.split("=", 1) for p in args.parameter)
    text = json.dumps(translate(parameters), indent=1, sort_keys=True) + "\n"
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
