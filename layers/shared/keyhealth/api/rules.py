"""What every route refuses the same way: the body size limit, the user id shape, and the
`InvalidRequest` a rule breaks (400 with a stable code). Kept apart from the request models
so that routes taking no body do not import them (cold start)."""

from __future__ import annotations

MAX_BODY_BYTES = 16 * 1024
USER_ID_PATTERN = r"^[A-Za-z0-9._:@-]{1,128}$"
IDEMPOTENCY_HEADER = "Idempotency-Key"
IDEMPOTENCY_KEY_RULE = f"{IDEMPOTENCY_HEADER} must be 1 to 255 visible ASCII characters, sent once"


class InvalidRequest(ValueError):
    """A request that breaks an input rule: 400 with a stable `code`."""

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.field = field
