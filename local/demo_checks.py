"""`make check-demo`: check every demo key once through the real adapters (no AWS, no API).

Starts the three exchange simulators on loopback, seeds their demo keys, checks each key
from the egress address 127.0.0.2 (as the NAT's Elastic IP would be seen) and prints the
reports as a table, with each finding's remedy. Exits 1 if a report differs from what the
demo key says keyhealth should find, so this doubles as an end-to-end smoke test.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

from keyhealth import wiring
from keyhealth.config import Settings
from keyhealth.domain.credentials import Credentials, KeyType, Secret
from keyhealth.domain.exchange import CheckResult
from keyhealth.domain.model import Scope
from keyhealth.exchanges.registry import SPECS
from simulators import simulator_module
from simulators.base import DemoKey, SimulatorServer

DEFAULT_EGRESS = "127.0.0.2"


@dataclass(frozen=True)
class DemoOutcome:
    key: DemoKey
    result: CheckResult

    @property
    def as_expected(self) -> bool:
        report = self.result.report
        # The order of findings carries no meaning; the set of codes does.
        expected = sorted(self.key.expected_codes)
        return report.status.value == self.key.expected_status and sorted(report.codes) == expected


@contextmanager
def running_simulators(egress_ip: str) -> Iterator[tuple[dict[str, str], list[DemoKey]]]:
    """Start the simulators and seed their demo keys; yields (env overrides, demo keys)."""
    with ExitStack() as stack:
        keys: list[DemoKey] = []
        urls: dict[str, str] = {}
        for spec in SPECS:
            module = simulator_module(spec.name)
            simulator = module.SIMULATOR()
            keys.extend(module.seed_demo(simulator, egress_ip))
            url = stack.enter_context(SimulatorServer(simulator)).url
            # One simulator serves every base URL of its exchange (Binance's spot, /sapi and /fapi).
            urls.update({base.variable: url for base in spec.base_urls})
        yield urls, keys


def check_demo_keys(egress_ip: str = DEFAULT_EGRESS) -> list[DemoOutcome]:
    with running_simulators(egress_ip) as (urls, keys):
        settings = Settings.from_env({**urls, "EGRESS_IPS": egress_ip, "KEYHEALTH_EGRESS_SOURCE": egress_ip})
        checkers = wiring.Container(wiring.Environment(settings=settings)).checkers
        outcomes = []
        for key in keys:
            credentials = Credentials(
                api_key=key.api_key,
                api_secret=Secret(key.api_secret),
                passphrase=Secret(key.passphrase) if key.passphrase is not None else None,
                key_type=KeyType(key.key_type),
            )
            result = checkers[key.exchange].check(credentials, {Scope(s) for s in key.scopes}, identify_account=True)
            outcomes.append(DemoOutcome(key, result))
        return outcomes


def render_table(outcomes: Sequence[DemoOutcome], *, remedies: bool = True) -> str:
    header = ("exchange", "demo key", "scopes", "status", "findings", "ok")
    rows = [
        (
            o.key.exchange,
            o.key.label,
            ",".join(o.key.scopes),
            o.result.report.status.value,
            ", ".join(o.result.report.codes) or "-",
            "yes" if o.as_expected else f"NO (expected {o.key.expected_status}: {', '.join(o.key.expected_codes)})",
        )
        for o in outcomes
    ]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    out = [line.format(*header).rstrip(), line.format(*("-" * w for w in widths))]
    out += [line.format(*row).rstrip() for row in rows]
    if remedies:
        out.append("")
        out.append("What to do, per key:")
        for o in outcomes:
            for finding in o.result.report.findings:
                prefix = f"- {o.key.exchange}/{o.key.label} [{finding.code.value}] "
                text = f"{finding.message} -> {finding.remedy}"
                out.append(textwrap.fill(text, width=118, initial_indent=prefix, subsequent_indent="    "))
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--egress-ip", default=DEFAULT_EGRESS, help="loopback source address of exchange calls")
    parser.add_argument("--no-remedies", action="store_true", help="print only the table")
    args = parser.parse_args(argv)
    outcomes = check_demo_keys(args.egress_ip)
    print(f"keyhealth demo: {len(outcomes)} demo keys checked live against the simulators from {args.egress_ip}\n")
    print(render_table(outcomes, remedies=not args.no_remedies))
    wrong = [o for o in outcomes if not o.as_expected]
    if wrong:
        print(f"\n{len(wrong)} report(s) differ from what the demo keys expect.", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
