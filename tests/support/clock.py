"""The suite's clocks and sleeps; every test that needs a clock takes one of these.

`SkippableClock` is a wall clock that tests can move forward: real time plus the seconds
skipped so far. Simulators, adapters, the circuit and the rate budget all read it, so skipping
time (a Retry-After, a window boundary) is seen the same way everywhere, and no test sleeps.

`FakeClock` stands still until a test moves it (`clock.now += 60`); `RecordingSleep` records
each wait instead of sleeping, and moves a `FakeClock` on by it when given one.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

#: Where a `FakeClock` starts unless told otherwise (2023-11-14T22:13:20Z).
START = 1_700_000_000.0


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
    """A clock that moves only when a test moves it (`clock.now += 60`).

    `now` is the epoch-seconds float the clock answers; `datetime()` is the same moment as an
    aware UTC datetime (whole seconds), for the collaborators that want one (`Services.now`).
    """

    def __init__(self, now: float = START) -> None:
        self.now = now
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def skip(self, seconds: float) -> None:
        self.now += seconds

    def sleep(self, seconds: float) -> None:
        """A sleep on this clock: recorded in `sleeps`, and the clock moves on by it."""
        self.sleeps.append(seconds)
        self.now += seconds

    def datetime(self) -> datetime:
        return datetime.fromtimestamp(self.now, UTC).replace(microsecond=0)


class RecordingSleep:
    """A sleep that records each wait and never blocks; with a `FakeClock`, it moves that clock
    on by the wait, as a real sleep would move real time."""

    def __init__(self, clock: FakeClock | None = None) -> None:
        self.clock = clock
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        if self.clock is not None:
            self.clock.now += seconds
