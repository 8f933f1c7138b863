"""In-process decision cost: API-key allow with 10,000 principals loaded, and denies.

Run with ``scripts/bench decide``. Each case calls ``DecisionEngine.decide`` in a loop, timing
every call with ``perf_counter_ns``; the same loop around a do-nothing function with the same
signature is the bare baseline, measured in the same run, so the timer's own cost is visible.
Throughput comes from a separate untimed loop. Several rounds; the report gives the median
of the rounds' medians and P99s, with the spread across rounds.

Budget (DESIGN.md §5): API-key decision ≤ 10 µs median, ≤ 50 µs P99.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from authgate.audit.sink import MemorySink
from authgate.clock import SystemClock
from authgate.config import Route, Settings, Tier
from authgate.decide import DecisionEngine
from authgate.identity.ids import Kind
from authgate.identity.keys import new_key
from authgate.identity.service import IdentityService
from authgate.identity.store import MemoryIdentityStore
from authgate.policy import build_policy
from authgate.ratelimit.local import LocalLimiter
from authgate.testing import TEST_PEPPER, fast_passwords

Decide = Callable[[str, str, Mapping[str, str], str], object]
MEDIAN_BUDGET_US = 10.0
P99_BUDGET_US = 50.0

# Limits high enough that the allow case stays an allow for the whole run.
TIERS = tuple(
    Tier(level=i, name=n, requests_per_minute=100_000_000, burst=100_000_000)
    for i, n in enumerate(["guest", "user", "advanced", "trusted", "privileged", "system"])
)
ROUTES = (
    Route(name="models", path="/v1/models", methods=("GET",), min_tier=0),
    Route(name="chat", path="/v1/chat/completions", methods=("POST",), min_tier=1),
    Route(name="agents", path="/v1/agents/{id}/tasks", min_tier=2, scopes=("agents",)),
    Route(name="tune", path="/v1/fine_tuning/*", min_tier=4),
    Route(name="v1", path="/v1/*", min_tier=2),
)


async def build(principals: int) -> tuple[DecisionEngine, list[str], IdentityService]:
    settings = Settings(tiers=TIERS, routes=ROUTES, passwords=fast_passwords())
    identity = IdentityService(
        MemoryIdentityStore(), TEST_PEPPER, SystemClock(), settings.passwords
    )
    await identity.start()
    keys = []
    for i in range(principals):
        p = await identity.create_principal(Kind.AGENT, f"agent-{i}", 1 + i % 3, ["agents"])
        keys.append((await identity.issue_key(p.id)).key)
    engine = DecisionEngine(
        identity.directory, build_policy(settings), LocalLimiter(), MemorySink(), SystemClock()
    )
    return engine, keys, identity


def timed(fn: Decide, requests: list[tuple[str, str, dict[str, str]]], n: int) -> np.ndarray:
    samples = np.empty(n, dtype=np.int64)
    clock = time.perf_counter_ns
    count = len(requests)
    for i in range(n):
        method, path, headers = requests[i % count]
        start = clock()
        fn(method, path, headers, "10.0.0.1")
        samples[i] = clock() - start
    return samples


def throughput(fn: Decide, requests: list[tuple[str, str, dict[str, str]]], n: int) -> float:
    count = len(requests)
    start = time.perf_counter()
    for i in range(n):
        method, path, headers = requests[i % count]
        fn(method, path, headers, "10.0.0.1")
    return n / (time.perf_counter() - start)


def baseline(method: str, path: str, headers: Mapping[str, str], client: str) -> None:
    """The bare baseline: a call with decide's signature that does nothing."""


def measure(
    fn: Decide, requests: list[tuple[str, str, dict[str, str]]], n: int, rounds: int
) -> dict[str, Any]:
    medians, p99s, rates = [], [], []
    for _ in range(rounds):
        gc.collect()
        samples = timed(fn, requests, n) / 1000.0
        medians.append(float(np.median(samples)))
        p99s.append(float(np.percentile(samples, 99)))
        rates.append(throughput(fn, requests, n))
    return {
        "median_us": statistics.median(medians),
        "p99_us": statistics.median(p99s),
        "median_us_range": [min(medians), max(medians)],
        "p99_us_range": [min(p99s), max(p99s)],
        "per_second": statistics.median(rates),
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--principals", type=int, default=10_000)
    parser.add_argument("--calls", type=int, default=200_000, help="calls per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)

    engine, keys, identity = asyncio.run(build(args.principals))
    allow = [("GET", "/v1/models", {"authorization": f"Bearer {k}"}) for k in keys]
    agents = [
        ("POST", f"/v1/agents/a{i}/tasks", {"x-api-key": k}) for i, k in enumerate(keys) if i % 3
    ]
    unknown = [("GET", "/v1/models", {"x-api-key": new_key()[0]}) for _ in range(1000)]
    tier = [("POST", "/v1/fine_tuning/jobs", {"x-api-key": k}) for k in keys]
    cases = {
        "allow: api key, GET /v1/models": (allow, True),
        "allow: api key, {param} route + scope": (agents, True),
        "deny: unknown key (401)": (unknown, False),
        "deny: insufficient tier (403)": (tier, False),
    }
    for name, (requests, expect) in cases.items():  # measure the path we say we measure
        outcomes = {engine.decide(m, p, h, "10.0.0.1").allowed for m, p, h in requests[:2000]}
        if outcomes != {expect}:
            print(f"case {name!r} did not decide as expected: {outcomes}", file=sys.stderr)
            return 2

    results: dict[str, Any] = {
        "python": platform.python_version(),
        "principals": args.principals,
        "calls_per_round": args.calls,
        "rounds": args.rounds,
        "baseline": measure(baseline, allow, args.calls, args.rounds),
        "cases": {},
    }
    for name, (requests, _) in cases.items():
        results["cases"][name] = measure(engine.decide, requests, args.calls, args.rounds)
    asyncio.run(identity.close())

    ok = all(
        r["median_us"] <= MEDIAN_BUDGET_US and r["p99_us"] <= P99_BUDGET_US
        for r in results["cases"].values()
    )
    results["within_budget"] = ok
    if args.json:
        print(json.dumps(results, indent=2))
        return 0 if ok else 1
    base = results["baseline"]
    print(
        f"authgate decide benchmark — {args.principals} principals, {args.rounds} rounds x "
        f"{args.calls} calls, Python {results['python']}"
    )
    print(f"budget: median <= {MEDIAN_BUDGET_US} us, P99 <= {P99_BUDGET_US} us\n")
    print(f"{'case':<40}{'median us':>10}{'P99 us':>9}{'per second':>13}{'x baseline':>12}")
    rows = [("bare baseline (empty call + timer)", base), *results["cases"].items()]
    for name, r in rows:
        ratio = r["median_us"] / base["median_us"]
        print(
            f"{name:<40}{r['median_us']:>10.2f}{r['p99_us']:>9.2f}"
            f"{r['per_second']:>13,.0f}{ratio:>12.1f}"
        )
    print(f"\nwithin budget: {'yes' if ok else 'NO'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
