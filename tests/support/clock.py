"""A wall clock that tests can move forward: real time plus the seconds skipped so far.

Simulators, adapters, the circuit and the rate budget all read it, so skipping time (a
Retry-After, a window boundary) is seen the same way everywhere, and no test sleeps.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime


class SkippableClock:
    def __init__(self) -> None:
        self.skipped = 0.0
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return time.time() + self.skipped

    def skip(self, seconds: float) -> None:
        with self._lock:
            self.skipped += seconds

    def now(self) -> datetime:
        return datetime.fromtimestamp(self(), UTC).replace(microsecond=0)


class FakeClock:
    """A clock that moves only when a test moves it (`clock.now += 60`)."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
