"""The tenant is the caller's IAM principal, normalised; anything IAM could not have
authenticated is refused (it would otherwise become a storage key)."""

from __future__ import annotations

import pytest

from keyhealth.domain.tenancy import UnknownPrincipal, tenant_from_principal


@pytest.mark.parametrize(
    ("arn", "tenant"),
    [
        ("arn:aws:sts::111111111111:assumed-role/platform-backend/session-1", "111111111111:role/platform-backend"),
        ("arn:aws:iam::111111111111:user/platform", "111111111111:user/platform"),
        ("arn:aws:iam::111111111111:user/team/a/platform", "111111111111:user/platform"),
        ("arn:aws-cn:iam::111111111111:role/r", "111111111111:role/r"),
        ("arn:aws:iam::111111111111:user/" + "u" * 64, "111111111111:user/" + "u" * 64),
    ],
)
def test_sessions_of_one_role_are_one_tenant(arn, tenant):
    assert tenant_from_principal(arn) == tenant


@pytest.mark.parametrize(
    "arn",
    [
        None,
        "",
        "arn:aws:iam::111111111111:user/" + "a" * 10_000,  # no IAM name is that long
        "arn:aws:iam::111111111111:user/" + "u" * 65,
        "arn:aws:iam::111111111111:user/platform\n",  # a trailing newline is not part of any ARN
        "arn:aws:iam::111111111111:user/pla\x00tform",
        "arn:aws:iam::111111111111:user/plätform",
        "arn:aws:sts::111111111111:assumed-role/r/" + "s" * 65,
        "arn:aws:iam::111111111111:group/admins",
        "arn:aws:sts::111111111111:federated-user/bob",
    ],
)
def test_anything_iam_could_not_have_authenticated_is_refused(arn):
    with pytest.raises(UnknownPrincipal):
        tenant_from_principal(arn)
