"""The local limiter: per-key state, and memory that stays bounded."""

from __future__ import annotations

from authgate.ratelimit.gcra import Limit
from authgate.ratelimit.local import LocalLimiter

LIMIT = Limit.per_minute(60, 2)
SECOND = 1_000_000_000


def test_keys_have_independent_budgets() -> None:
    limiter = LocalLimiter()
    assert limiter.hit("a", 0, LIMIT).allowed
    assert limiter.hit("a", 0, LIMIT).allowed
    assert not limiter.hit("a", 0, LIMIT).allowed
    assert limiter.hit("b", 0, LIMIT).allowed


def test_idle_entries_are_swept() -> None:
    limiter = LocalLimiter(sweep_interval_ns=10 * SECOND)
    for i in range(1000):
        limiter.hit(f"k{i}", 0, LIMIT)
    assert len(limiter) == 1000
    limiter.hit("late", 11 * SECOND, LIMIT)  # every earlier TAT (1 s) has passed
    assert len(limiter) == 1


def test_memory_is_bounded_under_a_flood_of_busy_keys() -> None:
    limiter = LocalLimiter(max_keys=100, sweep_interval_ns=10**18)
    for i in range(10_000):
        limiter.hit(f"k{i}", i, LIMIT)  # all busy: TAT one second ahead
        assert len(limiter) <= 100
    assert limiter.evictions > 0


def test_peek_does_not_count() -> None:
    limiter = LocalLimiter()
    for _ in range(5):
        assert limiter.peek("a", 0, LIMIT).remaining == 1
    assert limiter.hit("a", 0, LIMIT).allowed
