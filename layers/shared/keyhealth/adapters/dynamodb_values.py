"""DynamoDB attribute values in the low-level client's wire form (shared by the DynamoDB adapters)."""

from __future__ import annotations


def s(value: str) -> dict[str, str]:
    """A string attribute."""
    return {"S": value}


def n(value: float) -> dict[str, str]:
    """A number attribute (floats keep their full precision)."""
    return {"N": repr(value) if isinstance(value, float) else str(value)}
