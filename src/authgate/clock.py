"""Time, injected. Pure functions take ``now_ns``; services take a :class:`Clock`."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """A source of wall-clock time in integer nanoseconds since the Unix epoch."""

    def now_ns(self) -> int:
        """Return the current time in nanoseconds."""
        ...


class SystemClock:
    """The real clock."""

    __slots__ = ()

    def now_ns(self) -> int:
        """Return ``time.time_ns()``."""
        return time.time_ns()


NS_PER_S = 1_000_000_000
