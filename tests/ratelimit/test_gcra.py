"""GCRA: the admission bound over any window, and agreement with a leaky-bucket reference."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from authgate.ratelimit.gcra import Limit, gcra

limits = st.builds(
    lambda emission, burst: Limit(emission, burst, 1, 1),
    st.integers(1, 10_000),
    st.integers(1, 20),
)
# Non-decreasing arrival times with costs.
arrivals = st.lists(st.tuples(st.integers(0, 5_000), st.integers(1, 4)), max_size=80)


def run(limit: Limit, steps: list[tuple[int, int]]) -> list[tuple[int, int, bool]]:
    tat, now, out = 0, 0, []
    for gap, cost in steps:
        now += gap
        result = gcra(tat, now, limit, cost)
        if result.allowed:
            tat = result.tat
        out.append((now, cost, result.allowed))
    return out


def leaky_bucket(limit: Limit, steps: list[tuple[int, int]]) -> list[bool]:
    """The continuous-state leaky bucket (ITU-T I.371), written the obvious way: the level
    drains one unit per ns and may hold ``burst * emission`` units."""
    level, last, now, out = 0, 0, 0, []
    capacity = limit.burst * limit.emission_ns
    for gap, cost in steps:
        now += gap
        level = max(0, level - (now - last))
        last = now
        if level + cost * limit.emission_ns <= capacity:
            level += cost * limit.emission_ns
            out.append(True)
        else:
            out.append(False)
    return out


@settings(max_examples=300)
@given(limits, arrivals)
def test_never_admits_more_than_rate_times_window_plus_burst(
    limit: Limit, steps: list[tuple[int, int]]
) -> None:
    admitted = [(t, c) for t, c, ok in run(limit, steps) if ok]
    for i, (start, _) in enumerate(admitted):
        total = 0
        for end, cost in admitted[i:]:
            total += cost
            # cost admitted in [start, end] <= burst + (end - start) / emission, exactly
            assert total * limit.emission_ns <= limit.burst * limit.emission_ns + (end - start)


@settings(max_examples=300)
@given(limits, arrivals)
def test_agrees_with_a_leaky_bucket_reference(limit: Limit, steps: list[tuple[int, int]]) -> None:
    assert leaky_bucket(limit, steps) == [ok for _, _, ok in run(limit, steps)]


def test_burst_passes_at_once_then_one_per_emission() -> None:
    limit = Limit.per_minute(60, 3)  # one a second, burst 3
    second = 1_000_000_000
    tat, verdicts, remaining = 0, [], []
    for _ in range(4):
        result = gcra(tat, 0, limit)
        tat = result.tat if result.allowed else tat
        verdicts.append(result.allowed)
        remaining.append(result.remaining)
    assert verdicts == [True, True, True, False]
    assert remaining == [2, 1, 0, 0]
    denied = gcra(tat, 0, limit)
    assert second == denied.retry_after_ns
    assert 3 * second == denied.reset_ns
    assert gcra(tat, second, limit).allowed


def test_a_cost_above_the_burst_is_never_admitted() -> None:
    limit = Limit.per_minute(60, 2)
    assert not gcra(0, 10**15, limit, cost=3).allowed
