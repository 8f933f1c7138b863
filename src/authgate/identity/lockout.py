"""Lockout after too many failed logins, counted per principal and per client address.

Memory stays bounded: entries whose window and lock have passed are swept, and past
``max_entries`` the oldest are dropped.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from authgate.errors import LockedOut

NS = 1_000_000_000


class _Entry:
    __slots__ = ("failures", "locked_until")

    def __init__(self) -> None:
        self.failures: deque[int] = deque()
        self.locked_until = 0


class Lockout:
    """Counts failures per key (``p:<principal>``, ``a:<address>``) in a sliding window."""

    def __init__(
        self, max_failures: int, window_s: float, lockout_s: float, max_entries: int = 100_000
    ) -> None:
        self.max_failures = max_failures
        self.window_ns = int(window_s * NS)
        self.lockout_ns = int(lockout_s * NS)
        self.max_entries = max_entries
        self._entries: dict[str, _Entry] = {}

    def check(self, keys: Iterable[str], now_ns: int) -> None:
        """Raise LockedOut when any of ``keys`` is locked at ``now_ns``."""
        wait = 0
        for key in keys:
            entry = self._entries.get(key)
            if entry is not None and entry.locked_until > now_ns:
                wait = max(wait, entry.locked_until - now_ns)
        if wait:
            raise LockedOut(wait / NS)

    def fail(self, keys: Iterable[str], now_ns: int) -> None:
        """Record one failure against each key; lock those that reach the limit."""
        for key in keys:
            entry = self._entries.get(key)
            if entry is None:
                if len(self._entries) >= self.max_entries:
                    self._sweep(now_ns)
                entry = self._entries[key] = _Entry()
            failures = entry.failures
            failures.append(now_ns)
            while failures and failures[0] <= now_ns - self.window_ns:
                failures.popleft()
            if len(failures) >= self.max_failures:
                entry.locked_until = now_ns + self.lockout_ns
                failures.clear()

    def succeed(self, key: str) -> None:
        """Forget the failures of ``key`` after a successful login."""
        self._entries.pop(key, None)

    def __len__(self) -> int:
        return len(self._entries)

    def _sweep(self, now_ns: int) -> None:
        horizon = now_ns - self.window_ns
        stale = [
            k
            for k, e in self._entries.items()
            if e.locked_until <= now_ns and (not e.failures or e.failures[-1] <= horizon)
        ]
        for key in stale:
            del self._entries[key]
        overflow = len(self._entries) - self.max_entries + 1
        if overflow > 0:
            for key in list(self._entries)[:overflow]:
                del self._entries[key]
