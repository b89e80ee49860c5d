"""Binding ids: `bnd_` + a ULID, so that ids sort by creation time (newest-first lists)."""

from __future__ import annotations

import os
import re
import time

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
BINDING_ID = re.compile(r"^bnd_[0-9A-HJKMNP-TV-Z]{26}$")


def new_binding_id(now: float | None = None) -> str:
    millis = int((time.time() if now is None else now) * 1000)
    value = (millis << 80) | int.from_bytes(os.urandom(10), "big")
    chars = []
    for _ in range(26):
        value, digit = divmod(value, 32)
        chars.append(_CROCKFORD[digit])
    return "bnd_" + "".join(reversed(chars))


def is_binding_id(text: str) -> bool:
    return bool(BINDING_ID.match(text))
