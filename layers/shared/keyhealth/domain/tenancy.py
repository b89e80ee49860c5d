"""Who is calling: the tenant is the caller's IAM principal, normalised (contract section 1).

Every session of one role is one tenant: `arn:aws:sts::ACCT:assumed-role/ROLE/SESSION`
becomes `ACCT:role/ROLE`, and `arn:aws:iam::ACCT:user/NAME` becomes `ACCT:user/NAME`.
"""

from __future__ import annotations

import re

# IAM's own limits (IAM quotas): role and user names 1-64 characters, session names 2-64,
# paths at most 512; an ARN beyond them is not a principal AWS could have authenticated.
_NAME = r"[\w+=,.@-]{1,64}"
_PARTITION = r"arn:aws[a-z-]{0,10}"
_ASSUMED_ROLE = re.compile(rf"{_PARTITION}:sts::(\d{{12}}):assumed-role/({_NAME})/[\w+=,.@-]{{2,64}}", re.ASCII)
_IAM = re.compile(rf"{_PARTITION}:iam::(\d{{12}}):(user|role)/(?:[\w+=,./@-]{{0,510}}/)?({_NAME})", re.ASCII)
_MAX_ARN = 2048


class UnknownPrincipal(ValueError):
    """The caller's identity is missing or not an IAM user or role."""


def tenant_from_principal(arn: str | None) -> str:
    if not arn:
        raise UnknownPrincipal("the request carries no IAM principal")
    if len(arn) > _MAX_ARN:
        raise UnknownPrincipal("the caller is not an IAM user or role")
    if match := _ASSUMED_ROLE.fullmatch(arn):
        account, role = match.groups()
        return f"{account}:role/{role}"
    if match := _IAM.fullmatch(arn):
        account, kind, name = match.groups()
        return f"{account}:{kind}/{name}"
    raise UnknownPrincipal("the caller is not an IAM user or role")
