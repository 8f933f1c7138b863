"""The ledger: group commit, durable acks, checkpoints, recovery, failing closed, crashes."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from authgate.audit import merkle
from authgate.audit.event import AuditEvent, EventType, decode, new_event_id
from authgate.audit.log import Ledger
from authgate.audit.note import Signer
from authgate.audit.segment import ScanEnd, list_segments, scan
from authgate.errors import AuditUnavailable, InvalidRecord

SEED = bytes(range(32))


def event(n: int) -> AuditEvent:
    return AuditEvent(new_event_id(), n, EventType.AUTHZ, "decide", "allow", "ok", f"p{n}")


def ledger(folder: Path, **options: int) -> Ledger:
    return Ledger(folder, "test.local/w0", Signer("test.local/w0", SEED), **options)


def payloads(folder: Path) -> list[bytes]:
    out = []
    segments = list_segments(folder / "segments")
    for i, path in enumerate(segments):
        for item in scan(path, last=i == len(segments) - 1):
            if not isinstance(item, ScanEnd):
                out.append(item.payload)
    return out


async def test_durable_events_are_on_disk_when_acknowledged(tmp_path: Path) -> None:
    log = ledger(tmp_path)
    log.open()
    seqs = await asyncio.gather(*(log.emit_durable(event(i)) for i in range(200)))
    assert sorted(seqs) == list(range(200))
    on_disk = payloads(tmp_path)
    assert len(on_disk) >= 200
    assert {decode(p).ts_ns for p in on_disk} == set(range(200))
    log.close()


async def test_checkpoint_matches_the_records_and_survives_reopen(tmp_path: Path) -> None:
    log = ledger(tmp_path, segment_bytes=2048)
    log.open()
    for wave in range(3):  # a segment rolls between batches once it is over its size
        for i in range(100):
            log.emit(event(wave * 100 + i))
        await log.emit_durable(event(1000 + wave))
    await log.emit_durable(event(300))
    log.close()
    leaves = [merkle.leaf_hash(p) for p in payloads(tmp_path)]
    checkpoint = log.latest_checkpoint()
    assert checkpoint is not None
    assert (checkpoint.size, checkpoint.root) == (304, merkle.root(leaves))
    assert len(list_segments(tmp_path / "segments")) > 1  # it rolled segments

    again = ledger(tmp_path, segment_bytes=2048)
    report = again.open()
    assert (report.size, report.truncated_bytes, report.checkpoint_size) == (304, 0, 304)
    await again.emit_durable(event(301))
    again.close()
    assert len(payloads(tmp_path)) == 305


async def test_a_torn_final_record_is_truncated_and_reported(tmp_path: Path) -> None:
    log = ledger(tmp_path)
    log.open()
    await log.emit_durable(event(0))
    log.close()
    last = list_segments(tmp_path / "segments")[-1]
    with last.open("ab") as f:
        f.write(b"\x00\x00\x01\x00partial")  # a crash in the middle of an append
    again = ledger(tmp_path)
    report = again.open()
    assert report.size == 1
    assert report.truncated_bytes == 11
    assert "torn" in report.notes[0]
    await again.emit_durable(event(1))
    again.close()
    assert [decode(p).ts_ns for p in payloads(tmp_path)] == [0, 1]


async def test_tampering_below_a_checkpoint_refuses_to_start(tmp_path: Path) -> None:
    log = ledger(tmp_path)
    log.open()
    for i in range(10):
        await log.emit_durable(event(i))
    log.close()
    segment = list_segments(tmp_path / "segments")[0]
    data = bytearray(segment.read_bytes())
    data[40] ^= 1  # a flipped bit inside an early record: its CRC fails
    segment.write_bytes(bytes(data))
    with pytest.raises(InvalidRecord, match="CRC"):
        ledger(tmp_path).open()


async def test_lost_records_below_a_checkpoint_refuse_to_start(tmp_path: Path) -> None:
    log = ledger(tmp_path)
    log.open()
    for i in range(10):
        await log.emit_durable(event(i))
    log.close()
    segment = list_segments(tmp_path / "segments")[0]
    records = [r for r in scan(segment, last=True) if not isinstance(r, ScanEnd)]
    with segment.open("r+b") as f:  # cut whole records off the end
        f.truncate(records[5].offset)
    with pytest.raises(InvalidRecord, match="missing"):
        ledger(tmp_path).open()


async def test_a_failed_fsync_fails_closed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = ledger(tmp_path)
    log.open()
    await log.emit_durable(event(0))

    def broken(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fdatasync", broken)
    with pytest.raises(AuditUnavailable):
        await log.emit_durable(event(1))
    await asyncio.sleep(0.05)
    with pytest.raises(AuditUnavailable, match="stopped"):
        log.emit(event(2))
    log.close()


def test_a_full_queue_refuses_counts_and_raises_the_alarm(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log = ledger(tmp_path, queue_max=10)  # not opened: nothing drains the queue
    for i in range(10):
        log.emit(event(i))
    for i in range(5):
        with pytest.raises(AuditUnavailable, match="full"):
            log.emit(event(10 + i))
    assert log.overflows == 5
    alarms = [r for r in caplog.records if "audit queue full" in r.getMessage()]
    assert [r.levelname for r in alarms] == ["ERROR"] * 3  # at 1, 2 and 4 refusals


CRASHER = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from authgate.audit.event import AuditEvent, EventType, new_event_id
    from authgate.audit.log import Ledger
    from authgate.audit.note import Signer

    async def main():
        log = Ledger(Path(sys.argv[1]), "test.local/w0", Signer("test.local/w0", bytes(range(32))))
        log.open()
        n = 0
        while True:
            waits = []
            for _ in range(50):
                waits.append(log.emit_durable(
                    AuditEvent(new_event_id(), n, EventType.AUTHZ, "decide", "allow", "ok")))
                n += 1
            for seq in await asyncio.gather(*waits):
                print(seq, flush=True)

    asyncio.run(main())
    """
)


@pytest.mark.parametrize("delay", [0.3, 0.6, 0.9])
def test_kill_9_loses_nothing_acknowledged(tmp_path: Path, delay: float) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", CRASHER, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    time.sleep(delay + 0.5)  # start-up, then heavy appending
    proc.send_signal(signal.SIGKILL)
    out, _ = proc.communicate()
    acknowledged = [int(line) for line in out.split()]
    assert acknowledged, "the writer acknowledged nothing before the kill"
    log = ledger(tmp_path)
    report = log.open()
    log.close()
    assert report.size > max(acknowledged)
    assert len(payloads(tmp_path)) == report.size
    from authgate.audit.note import Verifier
    from authgate.audit.verify import verify_log

    verified = verify_log(tmp_path, [Verifier.from_vkey(Signer("test.local/w0", SEED).vkey)])
    assert verified.ok, verified.problems  # and the restarted log verifies end to end


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs: a real file system that runs out of space."""
    mountpoint = tmp_path / "disk"
    mountpoint.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mountpoint)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        if os.environ.get("CI") == "true":
            pytest.fail(f"cannot mount a tmpfs under CI: {done.stderr!r}")
        pytest.skip("mounting a tmpfs needs root")
    yield mountpoint
    subprocess.run(["umount", "-l", str(mountpoint)], check=False)


async def test_disk_full_fails_closed_and_keeps_what_was_acknowledged(
    small_disk: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log = ledger(small_disk / "log", segment_bytes=1 << 30)
    log.open()
    acked: list[int] = []

    async def fill() -> None:
        for i in range(100_000):  # ~100 bytes each: the 256 KiB disk fills long before
            acked.append(await log.emit_durable(event(i)))

    with pytest.raises(AuditUnavailable):
        await fill()
    acknowledged = len(acked)
    assert acknowledged > 100
    with pytest.raises(AuditUnavailable):  # async mode is refused too: no silent drops
        log.emit(event(-1))
    assert any("failing closed" in r.getMessage() for r in caplog.records)  # the alarm
    log.close()
    on_disk = payloads(small_disk / "log")
    assert len(on_disk) >= acknowledged
    assert [decode(p).ts_ns for p in on_disk[:acknowledged]] == list(range(acknowledged))


async def test_disk_full_answers_503_over_http_in_durable_mode(small_disk: Path) -> None:
    from authgate.dataplane.app import build_router
    from authgate.dataplane.server import Limits, Server
    from authgate.decide import DecisionEngine
    from authgate.identity.ids import Kind
    from authgate.testing import make_harness
    from tests.dataplane.conftest import exchange, statuses

    bed = await make_harness()
    p = await bed.identity.create_principal(Kind.AGENT, "a", 5)
    key = (await bed.identity.issue_key(p.id)).key
    log = ledger(small_disk / "log", segment_bytes=1 << 30)
    log.open()
    engine = DecisionEngine(
        bed.identity.directory, bed.engine.policy, bed.engine.limiter, log, bed.clock
    )
    server = Server(build_router(engine, dict, durable=True), Limits())
    await server.start("127.0.0.1", 0)
    request = f"GET /v1/authorize/v1/models HTTP/1.1\r\nX-API-Key: {key}\r\n\r\n".encode()
    seen: list[int] = []
    try:
        for _ in range(5000):  # until the 256 KiB disk is full
            seen += statuses(await exchange(server.ports[0], request * 20))
            if 503 in seen:
                break
    finally:
        await server.shutdown(1)
        log.close()
        await bed.identity.close()
    first_503 = seen.index(503)
    assert set(seen[:first_503]) <= {200, 429}
    assert 200 in seen[:first_503]
    assert set(seen[first_503:]) == {503}  # once full, every answer fails closed
