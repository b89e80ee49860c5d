"""Who is calling: the tenant is the caller's IAM principal, normalised (contract section 1).

Every session of one role is one tenant: `arn:aws:sts::ACCT:assumed-role/ROLE/SESSION`
becomes `ACCT:role/ROLE`, and `arn:aws:iam::ACCT:user/NAME` becomes `ACCT:user/NAME`.
"""

from __future__ import annotations

import re

_ASSUMED_ROLE = re.compile(r"^arn:aws[a-z-]*:sts::(\d{12}):assumed-role/([^/]+)/[^/]+$")
_IAM = re.compile(r"^arn:aws[a-z-]*:iam::(\d{12}):(user|role)/(?:[\w+=,.@-]+/)*([\w+=,.@-]+)$")


class UnknownPrincipal(ValueError):
    """The caller's identity is missing or not an IAM user or role."""


def tenant_from_principal(arn: str | None) -> str:
    if not arn:
        raise UnknownPrincipal("the request carries no IAM principal")
    if match := _ASSUMED_ROLE.match(arn):
        account, role = match.groups()
        return f"{account}:role/{role}"
    if match := _IAM.match(arn):
        account, kind, name = match.groups()
        return f"{account}:{kind}/{name}"
    raise UnknownPrincipal("the caller is not an IAM user or role")
