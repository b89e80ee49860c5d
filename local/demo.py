"""`make demo`: with `make run` going, binds every demo key through the local API, runs an audit and
prints what keyhealth found, with the remedies and the alerts it raised. A webhook receiver on loopback is
registered first (PUT /webhook) and each event delivered to it is printed with its signature checked.

Healthy and degraded keys are bound (201); failing keys are tried and refused (422 with their
report: nothing is stored). A key bound by an earlier `make demo` answers 409 and is kept.
Exits 1 if an answer differs from what the demo key promises, 3 if the stack cannot be reached.
"""

from __future__ import annotations

import re
import sys
import textwrap
import time
from typing import Any

from keyhealth_cli.api import ApiClient, default_api_url
from keyhealth_cli.errors import UNKNOWN, CliError
from keyhealth_cli.render import error_line, render_summary, table
from local.webhook_receiver import Delivery, DemoReceiver, start_receiver

DEMO_PRINCIPAL = "arn:aws:iam::111111111111:user/demo-platform"


def user_id(key: dict[str, Any]) -> str:
    return "demo-" + re.sub(r"[^A-Za-z0-9._:@-]+", "-", f"{key['exchange']}-{key['label']}").strip("-")


def bind(api: ApiClient, key: dict[str, Any]) -> dict[str, Any]:
    body = {
        "user_id": user_id(key),
        "exchange": key["exchange"],
        "api_key": key["api_key"],
        "api_secret": key["api_secret"].strip(),  # as a person pastes it (PEM keys end in a newline)
        "passphrase": key["passphrase"],
        "key_type": key["key_type"],
        "label": key["label"],
        "scopes": key["scopes"],
    }
    answer = api.request("POST", "/bindings", body=body)
    result: dict[str, Any] = {"key": key, "http": answer.status, "binding_id": None, "report": None}
    if isinstance(answer.body, dict):
        result["report"] = answer.body.get("report")
        if answer.status == 201:
            result["binding_id"] = answer.body["binding"]["binding_id"]
        elif answer.status == 409:  # bound by an earlier demo: keep it, re-check it
            result["binding_id"] = answer.body["error"].get("binding_id")
            verified = api.request("POST", f"/bindings/{result['binding_id']}/verify")
            result["report"] = (verified.body or {}).get("report") if verified.status == 200 else None
        elif answer.status == 400:  # refused before the exchange is asked (e.g. a malformed key)
            result["refused"] = error_line(answer)
        elif answer.status != 422:
            result["error"] = error_line(answer)
    return result


def as_promised(result: dict[str, Any]) -> bool:
    key, report = result["key"], result["report"] or {}
    if result.get("refused"):  # the API's own validation caught what the exchange would refuse
        return key["expected_status"] == "failing"
    codes = sorted(f["code"] for f in report.get("findings", []))
    return report.get("status") == key["expected_status"] and codes == sorted(key["expected_codes"])


def run_audit(api: ApiClient, wait: float = 120.0) -> dict[str, Any] | None:
    started = api.request("POST", "/_local/audit", body={})
    if started.status != 202:
        raise CliError(f"the audit did not start: {error_line(started)}", UNKNOWN)
    run_id = started.body["run_id"]
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        state = api.request("GET", f"/_local/audit/{run_id}")
        if state.status == 200 and state.body.get("summary"):
            return state.body["summary"]
        time.sleep(0.25)
    return None


def show_delivery(delivery: Delivery) -> None:
    event = delivery.event
    what = event.get("binding_id") or event.get("message", "")
    check = "signature verified" if delivery.verified else "SIGNATURE INVALID"
    again = " (a redelivery: same id)" if delivery.duplicate else ""
    print(f"  [webhook] {event.get('type')} {event.get('id')} {what}: {check}{again}")


def register_webhook(api: ApiClient, receiver: DemoReceiver, url: str) -> None:
    """The demo's receiver as this tenant's webhook; an earlier demo's is replaced and its secret rotated (the
    secret is shown only when created or rotated)."""
    answer = api.request("PUT", "/webhook", body={"url": url})
    if answer.status != 200:
        raise CliError(f"the webhook was not set: {error_line(answer)}", UNKNOWN)
    secret = answer.body.get("secret")
    if secret is None:
        rotated = api.request("POST", "/webhook/secret")
        if rotated.status != 200:
            raise CliError(f"the webhook secret was not rotated: {error_line(rotated)}", UNKNOWN)
        secret = rotated.body["secret"]
    receiver.secret = secret


def wait_for(receiver: DemoReceiver, event_id: str, wait: float = 15.0) -> bool:
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        with receiver.lock:
            if any(d.event.get("id") == event_id for d in receiver.deliveries):
                return True
        time.sleep(0.2)
    return False


def main() -> int:
    api = ApiClient(default_api_url(), local=True, principal=DEMO_PRINCIPAL)
    receiver = DemoReceiver(on_delivery=show_delivery)
    server = start_receiver(receiver)
    try:
        health = api.request("GET", "/_local/health")
        if health.status != 200:
            raise CliError(f"{api.base_url} is not the keyhealth local stack (start it with `make run`)", UNKNOWN)
        alerts_from = api.request("GET", "/_local/alerts").body["next"]
        keys = api.request("GET", "/_local/demo-keys").body["keys"]
        print(f"keyhealth demo against {api.base_url} as {DEMO_PRINCIPAL}: {len(keys)} demo keys\n")
        register_webhook(api, receiver, f"{server.url}/keyhealth-events")
        print(f"0. A webhook receiver at {server.url}/keyhealth-events (PUT /webhook): deliveries show as [webhook]\n")

        results = [bind(api, key) for key in keys]
        rows = [
            (
                r["key"]["exchange"],
                r["key"]["label"],
                r["key"]["expected_status"],
                r["http"],
                (r["report"] or {}).get("status", "-"),
                ",".join(f["code"] for f in (r["report"] or {}).get("findings", [])) or "-",
                ("yes (400)" if r.get("refused") else "yes") if as_promised(r) else "NO",
            )
            for r in results
        ]
        print("1. Bind every demo key (POST /bindings)")
        print(table(("exchange", "label", "expected", "http", "status", "findings", "as promised"), rows))

        for r in results:
            if r.get("refused"):
                print(f"  {r['key']['exchange']} / {r['key']['label']}: {r['refused']}")
        refused = [r for r in results if r["http"] == 422]
        print(f"\n2. The {len(refused)} refused keys (422: nothing stored), and what their owners must do")
        for r in refused:
            print(f"\n  {r['key']['exchange']} / {r['key']['label']}")
            for finding in r["report"]["findings"]:
                print(f"    - {finding['code']} ({finding['severity']}): {finding['message']}")
                print(
                    textwrap.fill(f"Fix: {finding['remedy']}", 110, initial_indent="      ", subsequent_indent="      ")
                )

        print("\n3. The scheduled audit, run now (POST /_local/audit)")
        summary = run_audit(api)
        print(render_summary(summary) if summary else "the audit did not finish in time")

        bound = [r for r in results if r["binding_id"]]
        print(f"\n4. The {len(bound)} bindings after the audit (GET /bindings/{{id}})")
        rows = []
        remedies = []
        for r in bound:
            answer = api.request("GET", f"/bindings/{r['binding_id']}")
            if answer.status != 200:
                continue
            binding = answer.body
            findings = (binding.get("last_report") or {}).get("findings") or []
            rows.append(
                (
                    binding["binding_id"],
                    binding["exchange"],
                    binding.get("label"),
                    binding["status"],
                    ",".join(f["code"] for f in findings) or "-",
                )
            )
            for f in findings:
                remedies.append(f"- {binding['exchange']}/{binding.get('label')} [{f['code']}] {f['remedy']}")
        print(table(("binding_id", "exchange", "label", "status", "findings"), rows))
        if remedies:
            print("\n  Remedies:")
            print("\n".join("  " + textwrap.shorten(line, 200) for line in remedies))

        time.sleep(1.5)  # the alert sink polls the topic's queue once a second
        alerts = api.request("GET", "/_local/alerts", query={"after": alerts_from}).body["alerts"]
        print(f"\n5. Alerts raised ({len(alerts)}; the stack's terminal prints them in full)")
        for alert in alerts:
            print(f"  [{alert['attributes'].get('severity', '?')}] {alert['subject']}")

        ping = api.request("POST", "/webhook/test")
        delivered = ping.status == 202 and wait_for(receiver, ping.body["event_id"])
        with receiver.lock:
            got, unverified = len(receiver.deliveries), sum(not d.verified for d in receiver.deliveries)
        print(f"\n6. Webhook deliveries: {got}, {got - unverified} with a valid signature (GET /events lists them)")
        if not delivered:
            print("the ping (POST /webhook/test) did not arrive in time", file=sys.stderr)
            return UNKNOWN
        if unverified:
            print(f"{unverified} delivery(ies) had an invalid signature", file=sys.stderr)
            return 1

        wrong = [r for r in results if not as_promised(r)]
        errors = [r["error"] for r in results if r.get("error")]
        for error in errors:
            print(f"unexpected answer: {error}", file=sys.stderr)
        if wrong:
            print(f"\n{len(wrong)} answer(s) differ from what the demo keys promise.", file=sys.stderr)
            return 1
        print("\nEvery demo key got the answer it promises.")
        return 0
    except CliError as error:
        print(f"keyhealth demo: {error}", file=sys.stderr)
        return error.code
    finally:
        api.request("DELETE", "/webhook")  # the receiver goes with this process: stop sending to it
        api.close()
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
