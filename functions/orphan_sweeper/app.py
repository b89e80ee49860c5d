"""The daily orphan sweep (EventBridge Scheduler, or an operator invoking it by hand with any event):
secrets under the stack's prefix that no binding points to are scheduled for deletion, and one warning
alert says how many (keyhealth.bindings.sweeper). Answers `{"checked": n, "removed": n, "failed": n}`.

A listing or alert failure fails the invocation (the function's errors alarm); a rerun is safe, since a
secret already scheduled for deletion is no orphan.
"""

from __future__ import annotations

import re
from typing import Any

from keyhealth.bindings.sweeper import sweep_orphans
from keyhealth.observability import entry_point, logger
from keyhealth.wiring import container

_SCHEDULED_TIME = re.compile(r"^[0-9T:.+Z-]{1,40}$")


@entry_point()
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, int]:
    scheduled = event.get("scheduled_time") if isinstance(event, dict) else None
    if isinstance(scheduled, str) and _SCHEDULED_TIME.match(scheduled):
        logger.append_keys(scheduled_time=scheduled)
    return sweep_orphans(container().services).counts()
