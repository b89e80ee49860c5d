"""Ids that sort by creation time: bindings (`bnd_`, newest-first lists) and events (`evt_`, the feed's order),
each a prefix and a ULID."""

from __future__ import annotations

import os
import re
import threading
import time

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
BINDING_ID = re.compile(r"^bnd_[0-9A-HJKMNP-TV-Z]{26}$")

# Monotonic ULIDs (as the ULID spec describes): ids made in the same millisecond, or with the
# same injected clock reading (the use cases pass a time truncated to the second), would
# otherwise sort by their random part and a list would not be newest first.
_lock = threading.Lock()
_last = (-1, 0)  # (millis, value) of the last id made in this process


def new_binding_id(now: float | None = None) -> str:
    return "bnd_" + new_ulid(now)


def new_ulid(now: float | None = None) -> str:
    """26 Crockford base-32 characters: 48 bits of milliseconds, 80 random (monotonic within a millisecond)."""
    global _last
    millis = int((time.time() if now is None else now) * 1000)
    with _lock:
        last_millis, last_value = _last
        fresh = (millis << 80) | int.from_bytes(os.urandom(10), "big")
        value = last_value + 1 if millis == last_millis else fresh
        _last = (millis, value)
    chars = []
    for _ in range(26):
        value, digit = divmod(value, 32)
        chars.append(_CROCKFORD[digit])
    return "".join(reversed(chars))


def is_binding_id(text: str) -> bool:
    return bool(BINDING_ID.match(text))
