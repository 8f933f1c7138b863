"""GCRA, the generic cell rate algorithm: pure integer math, time injected.

A limit of ``rate`` requests per ``period`` with ``burst`` allows ``burst`` requests at once
and then one every ``emission = period / rate``. The only state is the theoretical arrival
time (TAT). Over any window of length L, what GCRA admits costs at most
``burst + L / emission`` — the property tests check exactly that bound, and check that GCRA
agrees decision for decision with a leaky bucket written the obvious way.

All times are integer nanoseconds, so the bound holds exactly, without float rounding.
"""

from __future__ import annotations

from typing import NamedTuple


class Limit(NamedTuple):
    """``burst`` at once, then one request every ``emission_ns``."""

    emission_ns: int
    burst: int
    rate: int
    period_s: int

    @classmethod
    def per_minute(cls, rate: int, burst: int) -> Limit:
        """``rate`` requests a minute with ``burst``."""
        return cls(60_000_000_000 // rate, burst, rate, 60)


class GcraResult(NamedTuple):
    """The outcome of one GCRA step, and what the ``RateLimit-*`` headers report.

    ``tat`` is the new state when allowed (unchanged otherwise); ``remaining`` is how many
    more unit-cost requests would pass right now; ``reset_ns`` is how long until the
    limiter is back to full burst; ``retry_after_ns`` how long until this request would
    pass (0 if it did); ``limit`` is the limit it was checked against.
    """

    allowed: bool
    tat: int
    remaining: int
    reset_ns: int
    retry_after_ns: int
    limit: Limit

    @property
    def reset_s(self) -> int:
        """Seconds until the limit is back to full burst, rounded up."""
        return -(-self.reset_ns // 1_000_000_000)

    @property
    def retry_after_s(self) -> int:
        """Seconds to wait before retrying, rounded up (0 when allowed)."""
        return -(-self.retry_after_ns // 1_000_000_000)


def gcra(tat: int, now: int, limit: Limit, cost: int = 1) -> GcraResult:
    """One GCRA step for a request of ``cost`` at ``now`` against the state ``tat``."""
    emission = limit.emission_ns
    tolerance = emission * limit.burst
    base = tat if tat > now else now
    new_tat = base + emission * cost
    allow_at = new_tat - tolerance
    if now < allow_at:
        backlog = base - now
        return GcraResult(
            False, tat, (tolerance - backlog) // emission, backlog, allow_at - now, limit
        )
    return GcraResult(
        True, new_tat, (tolerance - (new_tat - now)) // emission, new_tat - now, 0, limit
    )
