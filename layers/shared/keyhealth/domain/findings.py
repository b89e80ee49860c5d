"""Messages and remedies for every finding code, written for a user of that exchange.

The health model knows no exchange; each exchange's spec carries the words its UI uses
(`ExchangeUi`: where the whitelist is, what the permission tick-boxes are called) and this
catalogue puts them into sentences, so that a remedy can be followed without reading our
docs. Exchange adapters (and use cases, for the findings they add) call `make_finding`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from keyhealth.domain.exchange import ExchangeUi
from keyhealth.domain.model import Finding, FindingCode, PlannedEgressIp, Report, format_time


def _join(items: Sequence[str]) -> str:
    items = list(items)
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _scope_labels(ui: ExchangeUi, scopes: Sequence[str]) -> list[str]:
    labels = {"spot": ui.spot, "futures": ui.futures, "read": ui.read}
    return [f"'{labels.get(s, s)}'" for s in scopes]


def make_finding(
    code: FindingCode,
    ui: ExchangeUi,
    *,
    egress_ips: Sequence[str] = (),
    missing_ips: Sequence[str] = (),
    planned: Sequence[PlannedEgressIp] = (),
    scopes: Sequence[str] = (),
    candidates: Sequence[FindingCode] = (),
    expires_at: datetime | None = None,
    fields: Sequence[str] = (),
    retry_after: float | None = None,
    detail: str | None = None,
    exchange_code: str | int | None = None,
    exchange_message: str | None = None,
) -> Finding:
    """Build the finding `code` with a message and remedy in the words of the exchange's UI.

    Only the context a code needs is read; `detail` adds a sentence the adapter knows
    (e.g. "the futures account was opened after the key was created").
    """
    ips = _join(list(missing_ips or egress_ips)) or "the platform's egress IP"
    when = format_time(expires_at) or "soon"
    c = FindingCode
    message: str
    remedy: str
    if code is c.INVALID_API_KEY:
        message = f"{ui.name} does not know this API key: it was deleted, mistyped, or belongs to another account."
        remedy = f"Check the key on {ui.name} ({ui.api_page}); if it is gone, create a new one and paste it again."
    elif code is c.INVALID_SECRET:
        message = f"{ui.name} knows this API key but rejects the signature: the secret (or private key) is wrong."
        remedy = (
            f"Copy the secret again from when the key was created on {ui.name}; it cannot be shown twice, "
            "so if it is lost, create a new key."
        )
    elif code is c.INVALID_PASSPHRASE:
        message = f"The passphrase does not match this {ui.name} API key."
        remedy = (
            f"Enter the passphrase you chose when creating the key. {ui.name} cannot recover it: "
            f"if it is lost, delete the key in {ui.api_page} and create a new one."
        )
    elif code is c.IP_NOT_WHITELISTED:
        message = f"This key is restricted to certain IPs and {ips} is not among them."
        remedy = f"Add {ips} to the key's IP whitelist on {ui.name}: {ui.api_page}, {ui.whitelist}."
    elif code is c.IP_WHITELIST_INCOMPLETE:
        message = (
            f"This key is restricted to certain IPs and {ips} is not among them: the platform also sends "
            f"requests from there, and {ui.name} rejects every one of them."
        )
        remedy = (
            f"Add {ips} to the key's IP whitelist on {ui.name} ({ui.api_page}, {ui.whitelist}), "
            "keeping the IPs already there."
        )
    elif code is c.PLANNED_IP_MISSING:
        dated = [f"{p.ip} (from {p.effective_at.isoformat()})" for p in planned]
        first = min((p.effective_at for p in planned), default=None)
        by = f"before {first.isoformat()}" if first else "before the switch"
        message = (
            f"The platform will also send requests from {_join(dated) or 'a new IP'}; this key's IP whitelist "
            "lacks it, so the key will stop working for those requests then."
        )
        remedy = (
            f"{by.capitalize()}, add {_join([p.ip for p in planned]) or 'the new IP'} to the key's IP whitelist "
            f"on {ui.name} ({ui.api_page}, {ui.whitelist}), keeping the IPs already there."
        )
    elif code is c.KEY_REJECTED:
        reasons = {
            c.INVALID_API_KEY: "the key does not exist (deleted or mistyped)",
            c.IP_NOT_WHITELISTED: f"the key is IP-restricted and {ips} is not on its list",
            c.SCOPE_NOT_PERMITTED: "the key lacks a permission this check needs",
        }
        listed = [reasons.get(cand, cand.value) for cand in candidates] or list(reasons.values())
        message = f"{ui.name} rejected the key without saying why. Possible causes: " + "; ".join(listed) + "."
        remedy = (
            f"Open {ui.api_page} on {ui.name}: check the key still exists and matches what you pasted, "
            f"and that {ips} is in its trusted IPs ({ui.whitelist})."
        )
    elif code is c.SCOPE_NOT_PERMITTED:
        labels = _join(_scope_labels(ui, scopes)) or "a required permission"
        message = f"This key lacks the permission the platform needs: {labels}."
        remedy = f"Edit the key on {ui.name} ({ui.api_page}) and enable {labels}."
    elif code is c.TRADING_PERMISSION_EXPIRED:
        message = (
            f"The key's trading permission expired on {when}: {ui.name} lapses trading rights "
            "on keys without an IP restriction."
        )
        remedy = (
            f"Edit the key on {ui.name} ({ui.api_page}), restrict it to {ips} ({ui.whitelist}) "
            f"and tick '{ui.spot}' again; keys with trusted IPs do not lapse."
        )
    elif code is c.ACCOUNT_RESTRICTED:
        message = f"{ui.name} reports this account or key as frozen, disabled or restricted."
        remedy = f"Contact {ui.name} support or read the account's security notices; the key is unusable until then."
    elif code is c.WITHDRAW_ENABLED:
        message = "This key can withdraw funds; the platform never needs that."
        remedy = f"Edit the key on {ui.name} ({ui.api_page}) and untick '{ui.withdraw}'."
    elif code is c.NO_IP_RESTRICTION:
        message = "This key works from any IP address, so anyone who obtains it can use it."
        remedy = f"Restrict the key to {ips} on {ui.name}: {ui.api_page}, {ui.whitelist}."
    elif code is c.TRADING_PERMISSION_EXPIRING:
        message = f"The key's trading permission lapses on {when} because the key has no IP restriction."
        remedy = (
            f"Restrict the key to {ips} on {ui.name} ({ui.api_page}, {ui.whitelist}); "
            "trading rights of IP-restricted keys do not lapse."
        )
    elif code is c.INACTIVITY_DELETION_RISK:
        message = (
            f"{ui.name} deletes trading keys without an IP binding after 14 days without use; this key may disappear."
        )
        remedy = f"Bind {ips} to the key on {ui.name} ({ui.api_page}, {ui.whitelist}); bound keys do not expire."
    elif code is c.WHITESPACE_TRIMMED:
        what = _join(list(fields)) or "a credential"
        message = f"Leading or trailing spaces were removed from {what}."
        remedy = "Nothing to do; next time copy the value without surrounding spaces."
    elif code is c.RATE_LIMITED:
        wait = f" Retry after {int(retry_after)} s." if retry_after else ""
        message = f"{ui.name} throttled the platform's requests; the key could not be checked now.{wait}"
        remedy = "Nothing for the key owner to do; the platform retries later."
    elif code is c.EXCHANGE_UNAVAILABLE:
        message = f"{ui.name} could not answer (maintenance, overload or a connection failure)."
        remedy = "Nothing for the key owner to do; the platform retries later."
    elif code is c.TIMEOUT:
        message = f"{ui.name} did not answer in time."
        remedy = "Nothing for the key owner to do; the platform retries later."
    elif code is c.CLOCK_SKEW:
        message = f"{ui.name} rejected the request's timestamp even after correcting for its clock."
        remedy = "Operators: check the platform's clock synchronisation; the check is retried later."
    elif code is c.EGRESS_BLOCKED:
        message = f"{ui.name} refuses requests from the platform's egress IP {ips}."
        remedy = (
            "Operators: the platform's egress IP is banned or in a location the exchange restricts; "
            "move the egress to another region or wait out the ban."
        )
    elif code is c.CREDENTIALS_UNREADABLE:
        message = (
            f"The platform could not decrypt the {ui.name} credentials it stores for this key, "
            f"so the key was not checked on {ui.name}."
        )
        remedy = (
            "Operators: check that the KMS key of the stored credentials is enabled and not pending deletion, "
            "that its key policy and the function's role still allow kms:Decrypt (with this stack's encryption "
            "context), and whether the secret or credential item was restored or copied from another stack or "
            "binding. Nothing for the key owner to do, unless the stored credentials are lost for good: then "
            "the platform rotates this binding's credentials with the key submitted again."
        )
    else:  # pragma: no cover - the enum is closed
        raise ValueError(code)
    if detail:
        message = f"{message} {detail}"
    return Finding(
        code=code,
        message=message,
        remedy=remedy,
        exchange_code=exchange_code,
        exchange_message=exchange_message,
    )


def credentials_unreadable_report(ui: ExchangeUi, checked_at: datetime) -> Report:
    """The report of a check that could not decrypt the binding's stored credentials: `unknown`, with the
    operator finding `credentials_unreadable`. The exchange was not asked (so no egress IP)."""
    return Report(
        checked_at=checked_at, egress_ip=None, findings=(make_finding(FindingCode.CREDENTIALS_UNREADABLE, ui),)
    )
