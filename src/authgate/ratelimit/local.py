"""An in-memory GCRA limiter for one process, with bounded memory.

A key whose TAT lies in the past is indistinguishable from a key never seen, so such entries
are dropped by a sweep that runs every ``sweep_interval`` or when the table grows past
``max_keys``. If a table full of busy keys still exceeds ``max_keys``, the keys closest to
idle are dropped first (they lose the least state) down to 90 % of ``max_keys``, so a flood
of new keys costs one sort per tenth of the table, and ``evictions`` counts them.
"""

from __future__ import annotations

from authgate.ratelimit.gcra import GcraResult, Limit, gcra


class LocalLimiter:
    """GCRA state per key in a dict."""

    def __init__(self, max_keys: int = 1_000_000, sweep_interval_ns: int = 10**10) -> None:
        self.max_keys = max_keys
        self.sweep_interval_ns = sweep_interval_ns
        self.evictions = 0
        self._tat: dict[str, int] = {}
        self._next_sweep = 0

    def hit(self, key: str, now: int, limit: Limit, cost: int = 1) -> GcraResult:
        """Count a request of ``cost`` against ``key`` and return the verdict."""
        table = self._tat
        result = gcra(table.get(key, now), now, limit, cost)
        if result.allowed:
            table[key] = result.tat
            if now >= self._next_sweep or len(table) > self.max_keys:
                self.sweep(now)
        return result

    def peek(self, key: str, now: int, limit: Limit) -> GcraResult:
        """The verdict a unit request would get, without counting it."""
        return gcra(self._tat.get(key, now), now, limit, 1)

    def sweep(self, now: int) -> None:
        """Drop idle entries; then, if still over ``max_keys``, the ones nearest to idle."""
        self._next_sweep = now + self.sweep_interval_ns
        table = self._tat
        idle = [k for k, tat in table.items() if tat <= now]
        for key in idle:
            del table[key]
        if len(table) > self.max_keys:
            overflow = len(table) - self.max_keys * 9 // 10
            for key in sorted(table, key=table.__getitem__)[:overflow]:
                del table[key]
            self.evictions += overflow

    def __len__(self) -> int:
        return len(self._tat)
