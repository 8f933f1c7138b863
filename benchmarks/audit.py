"""The audit ledger's throughput and latency, against a bare write + fdatasync baseline.

Run with ``scripts/bench audit`` (pinned to one core). In one run:

- baseline: the same framed records written with ``os.write`` + ``fdatasync`` per batch of
  the same size, no hashing, no queue, no thread;
- the ledger in durable mode: every event awaited until fsynced (windows of concurrent
  waiters), with the Merkle tree and signed checkpoints every second;
- enqueue latency of ``emit`` (async mode) and durable-ack latency under that load;
- forward-auth req/s through ``authgate serve`` with the ledger on and off (wrk).

Budget (DESIGN.md §5): ≥ 100,000 durable events/s on one core; enqueue ≤ 5 µs median.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from authgate.audit.event import AuditEvent, EventType, encode, new_event_id
from authgate.audit.log import Ledger
from authgate.audit.note import Signer
from authgate.audit.segment import frame, header

BUDGET = 100_000


def sample_events(n: int) -> list[AuditEvent]:
    return [
        AuditEvent(
            new_event_id(),
            time.time_ns(),
            EventType.AUTHZ,
            "decide",
            "allow",
            "ok",
            "agt_01JEXAMPLE0000000000000000",
            "7n3kq0v9x2mb",
            2,
            1,
            "chat",
            "POST",
            "/v1/chat/completions",
            200,
            f"req-{i}",
            None,
            7,
        )
        for i in range(n)
    ]


def baseline(folder: Path, payloads: list[bytes], batch: int) -> float:
    """Events/s for framing + write + fdatasync per batch, nothing else."""
    path = folder / "baseline.seg"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.write(fd, header(0))
    started = time.perf_counter()
    for i in range(0, len(payloads), batch):
        data = b"".join(frame(p) for p in payloads[i : i + batch])
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fdatasync(fd)
    elapsed = time.perf_counter() - started
    os.close(fd)
    return len(payloads) / elapsed


async def window_run(folder: Path, events: list[AuditEvent], window: int) -> float:
    """Events/s when every event is made durable and acknowledged a window at a time
    (emit each, await the last: records are written in order, so all are durable)."""
    log = Ledger(folder, "bench.local/w2", Signer.generate("bench.local/w2"), queue_max=10**7)
    log.open()
    started = time.perf_counter()
    for lo in range(0, len(events), window):
        chunk = events[lo : lo + window]
        for event in chunk[:-1]:
            log.emit(event)
        await log.emit_durable(chunk[-1])
    elapsed = time.perf_counter() - started
    await asyncio.to_thread(log.close)
    return len(events) / elapsed


async def durable_run(folder: Path, events: list[AuditEvent], window: int) -> dict[str, float]:
    """Events/s with every event awaited on its own future, and the ack latencies."""
    log = Ledger(folder, "bench.local/w0", Signer.generate("bench.local/w0"))
    log.open()
    latencies = np.empty(len(events), dtype=np.int64)
    clock = time.perf_counter_ns

    async def one(i: int, event: AuditEvent) -> None:
        start = clock()
        await log.emit_durable(event)
        latencies[i] = clock() - start

    started = time.perf_counter()
    for lo in range(0, len(events), window):
        await asyncio.gather(*(one(i, events[i]) for i in range(lo, min(lo + window, len(events)))))
    elapsed = time.perf_counter() - started
    checkpoints = len(list((folder / "checkpoints").glob("*.note")))
    await asyncio.to_thread(log.close)
    us = latencies / 1000.0
    return {
        "events_per_s": len(events) / elapsed,
        "ack_p50_us": float(np.percentile(us, 50)),
        "ack_p99_us": float(np.percentile(us, 99)),
        "checkpoints": checkpoints,
    }


async def paced_acks(folder: Path, events: list[AuditEvent], rate: int) -> dict[str, float]:
    """Durable-ack latency at a steady ``rate`` per second (not saturated)."""
    log = Ledger(folder, "bench.local/w3", Signer.generate("bench.local/w3"))
    log.open()
    clock = time.perf_counter_ns
    samples: list[int] = []

    async def one(event: AuditEvent) -> None:
        start = clock()
        await log.emit_durable(event)
        samples.append(clock() - start)

    tasks = []
    started = time.perf_counter()
    for i, event in enumerate(events):
        delay = started + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(event)))
    await asyncio.gather(*tasks)
    await asyncio.to_thread(log.close)
    us = np.array(samples) / 1000.0
    return {"p50_us": float(np.percentile(us, 50)), "p99_us": float(np.percentile(us, 99))}


def enqueue_latency(folder: Path, events: list[AuditEvent]) -> dict[str, float]:
    """Per-call cost of ``emit`` (encode + bounded queue), timed one by one."""
    log = Ledger(folder, "bench.local/w1", Signer.generate("bench.local/w1"), queue_max=10**7)
    log.open()
    samples = np.empty(len(events), dtype=np.int64)
    clock = time.perf_counter_ns
    emit = log.emit
    for i, event in enumerate(events):
        start = clock()
        emit(event)
        samples[i] = clock() - start
    log.close()
    us = samples / 1000.0
    return {"p50_us": float(np.percentile(us, 50)), "p99_us": float(np.percentile(us, 99))}


def forward_auth_pair(seconds: int) -> dict[str, float]:
    """wrk req/s through authgate serve with the ledger on, then off."""
    from benchmarks import forward_auth as fa

    out: dict[str, float] = {}
    for label, enabled in (("ledger_on", "true"), ("ledger_off", "false")):
        with tempfile.TemporaryDirectory() as tmp:
            runs = fa.authgate_runs(
                Path(tmp), 1000, seconds, 50, {"AUTHGATE_AUDIT__ENABLED": enabled}
            )
        out[label] = runs["valid"]["rps"]
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="audit ledger benchmark")
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--window", type=int, default=4096, help="concurrent durable waiters")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--wrk-seconds", type=int, default=5, help="0 skips forward-auth")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    events = sample_events(args.events)
    payloads = [encode(e) for e in events]
    base_runs, ledger_runs, window_runs = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            base_runs.append(baseline(Path(tmp), payloads, args.window))
            (Path(tmp) / "baseline.seg").unlink()
            ledger_runs.append(asyncio.run(durable_run(Path(tmp) / f"l{r}", events, args.window)))
            window_runs.append(asyncio.run(window_run(Path(tmp) / f"w{r}", events, args.window)))
        enqueue = enqueue_latency(Path(tmp) / "enqueue", events)
        paced = asyncio.run(paced_acks(Path(tmp) / "paced", events[:3000], 1000))
    results: dict[str, Any] = {
        "events": args.events,
        "window": args.window,
        "rounds": args.rounds,
        "baseline_events_per_s": statistics.median(base_runs),
        "ledger_events_per_s": statistics.median(window_runs),
        "ledger_per_event_futures_events_per_s": statistics.median(
            r["events_per_s"] for r in ledger_runs
        ),
        "ack_p50_us": statistics.median(r["ack_p50_us"] for r in ledger_runs),
        "ack_p99_us": statistics.median(r["ack_p99_us"] for r in ledger_runs),
        "checkpoints_per_run": [r["checkpoints"] for r in ledger_runs],
        "paced_ack_p50_us": paced["p50_us"],
        "paced_ack_p99_us": paced["p99_us"],
        "enqueue_p50_us": enqueue["p50_us"],
        "enqueue_p99_us": enqueue["p99_us"],
    }
    results["ratio_to_baseline"] = results["ledger_events_per_s"] / results["baseline_events_per_s"]
    if args.wrk_seconds:
        results["forward_auth_rps"] = forward_auth_pair(args.wrk_seconds)
    ok = results["ledger_events_per_s"] >= BUDGET and results["enqueue_p50_us"] <= 5.0
    results["within_budget"] = ok
    if args.json:
        print(json.dumps(results, indent=2))
        return 0 if ok else 1
    print(
        f"audit ledger benchmark — {args.events} events x {args.rounds} rounds, durable "
        f"windows of {args.window}, one core (median of rounds)\n"
    )
    print(f"{'':<44}{'events/s':>12}")
    base_label = "baseline: frame + write + fdatasync/batch"
    print(f"{base_label:<44}{results['baseline_events_per_s']:>12,.0f}")
    ledger_label = "ledger: durable, Merkle tree, checkpoints"
    print(f"{ledger_label:<44}{results['ledger_events_per_s']:>12,.0f}")
    futures_label = "  same, one awaited future per event"
    print(f"{futures_label:<44}{results['ledger_per_event_futures_events_per_s']:>12,.0f}")
    print(f"ratio to baseline: {results['ratio_to_baseline']:.2f}")
    print(
        f"durable-ack latency: P50 {results['ack_p50_us']:,.0f} us, "
        f"P99 {results['ack_p99_us']:,.0f} us (per-event futures, {args.window} in flight)"
    )
    print(
        f"durable-ack latency at 1,000 events/s: P50 {results['paced_ack_p50_us']:,.0f} us, "
        f"P99 {results['paced_ack_p99_us']:,.0f} us"
    )
    print(
        f"enqueue latency (emit): P50 {results['enqueue_p50_us']:.2f} us, "
        f"P99 {results['enqueue_p99_us']:.2f} us"
    )
    if "forward_auth_rps" in results:
        fa = results["forward_auth_rps"]
        print(
            f"forward-auth via wrk: ledger on {fa['ledger_on']:,.0f} req/s, "
            f"off {fa['ledger_off']:,.0f} req/s"
        )
    print(f"\nwithin budget (>= {BUDGET:,} events/s, enqueue P50 <= 5 us): {'yes' if ok else 'NO'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
