"""The offline verifier catches each kind of tampering and says where."""

from __future__ import annotations

import asyncio
import struct
import zlib
from pathlib import Path

import pytest
from click.testing import CliRunner

from authgate.audit.event import AuditEvent, EventType, new_event_id
from authgate.audit.log import Ledger
from authgate.audit.note import Checkpoint, Signer, Verifier, sign_note
from authgate.audit.segment import ScanEnd, list_segments, scan
from authgate.audit.verify import verify_log
from authgate.cli import main

SIGNER = Signer("test.local/w0", bytes(range(32)))
TRUSTED = [Verifier.from_vkey(SIGNER.vkey)]


def build(folder: Path, count: int = 20) -> None:
    """A log of ``count`` records with a checkpoint after each: every awaited emit is its
    own batch, and an interval of 0 signs a checkpoint after every batch."""

    async def run() -> None:
        log = Ledger(folder, "test.local/w0", SIGNER, checkpoint_interval=0.0)
        log.open()
        for n in range(count):
            await log.emit_durable(
                AuditEvent(new_event_id(), n, EventType.AUTHZ, "decide", "allow", "ok")
            )
        log.close()

    asyncio.run(run())


def records(folder: Path) -> list[tuple[int, int]]:
    """(offset, length of frame) of every record in the only segment."""
    segment = list_segments(folder / "segments")[0]
    out = []
    for item in scan(segment, last=True):
        if not isinstance(item, ScanEnd):
            out.append((item.offset, 8 + len(item.payload)))
    return out


def segment(folder: Path) -> Path:
    return list_segments(folder / "segments")[0]


def problems(folder: Path) -> list[str]:
    report = verify_log(folder, TRUSTED)
    assert not report.ok
    return report.problems


def test_an_untouched_log_verifies(tmp_path: Path) -> None:
    build(tmp_path)
    report = verify_log(tmp_path, TRUSTED)
    assert report.ok, report.problems
    assert (report.records, report.checkpoints) == (20, 20)


def test_one_changed_byte_is_named_with_its_record(tmp_path: Path) -> None:
    build(tmp_path)
    offset, _ = records(tmp_path)[7]
    data = bytearray(segment(tmp_path).read_bytes())
    data[offset + 6] ^= 0x20
    segment(tmp_path).write_bytes(bytes(data))
    first, *rest = problems(tmp_path)
    assert f"@{offset}: record 7 fails its CRC" in first
    assert rest == [
        "checkpoint 20 was signed but the log ends after record 6: records 7..19 are missing"
    ]


def test_a_rewritten_record_with_a_fixed_crc_is_caught_by_the_checkpoints(
    tmp_path: Path,
) -> None:
    build(tmp_path)
    offset, length = records(tmp_path)[7]
    data = bytearray(segment(tmp_path).read_bytes())
    payload = bytearray(data[offset + 4 : offset + length - 4])
    payload[-3] ^= 0x01  # flip a bit of the event, then forge the frame's CRC
    data[offset + 4 : offset + length - 4] = payload
    data[offset + length - 4 : offset + length] = struct.pack(">I", zlib.crc32(payload))
    segment(tmp_path).write_bytes(bytes(data))
    found = problems(tmp_path)
    assert any("records 7..7 do not match checkpoint" in p for p in found), found


def test_a_deleted_record_is_caught(tmp_path: Path) -> None:
    build(tmp_path)
    offset, length = records(tmp_path)[12]
    data = segment(tmp_path).read_bytes()
    segment(tmp_path).write_bytes(data[:offset] + data[offset + length :])
    found = problems(tmp_path)
    assert any("records 12..12 do not match" in p for p in found), found


def test_two_swapped_records_are_caught(tmp_path: Path) -> None:
    build(tmp_path)
    (a, la), (b, lb) = records(tmp_path)[16], records(tmp_path)[17]
    data = segment(tmp_path).read_bytes()
    swapped = data[:a] + data[b : b + lb] + data[a : a + la] + data[b + lb :]
    segment(tmp_path).write_bytes(swapped)
    found = problems(tmp_path)
    assert found[0].startswith("records 16..16 do not match"), found


def test_a_truncated_tail_is_caught(tmp_path: Path) -> None:
    build(tmp_path)
    offset, _ = records(tmp_path)[18]
    with segment(tmp_path).open("r+b") as f:
        f.truncate(offset)
    found = problems(tmp_path)
    assert any("records 18..19 are missing" in p for p in found), found


def test_a_replaced_checkpoint_is_caught(tmp_path: Path) -> None:
    build(tmp_path)
    latest = sorted((tmp_path / "checkpoints").glob("*.note"))[-1]
    impostor = Signer.generate("test.local/w0")
    latest.write_text(sign_note(Checkpoint("test.local/w0", 20, b"\x00" * 32).text(), [impostor]))
    found = problems(tmp_path)
    assert any("no signature by a trusted key" in p for p in found), found


def test_the_cli_exit_code_says_it(tmp_path: Path) -> None:
    build(tmp_path)
    runner = CliRunner()
    ok = runner.invoke(main, ["audit", "verify", str(tmp_path), "--key", SIGNER.vkey])
    assert ok.exit_code == 0, ok.output
    assert ok.stdout.startswith("OK    20 records")
    offset, _ = records(tmp_path)[3]
    data = bytearray(segment(tmp_path).read_bytes())
    data[offset + 5] ^= 1
    segment(tmp_path).write_bytes(bytes(data))
    bad = runner.invoke(main, ["audit", "verify", str(tmp_path)])
    assert bad.exit_code == 1
    assert "record 3" in bad.stdout


@pytest.mark.parametrize("junk", [b"", b"AGSEG\x01\x00\x00", b"\x00" * 40])
def test_junk_segments_are_problems_not_tracebacks(tmp_path: Path, junk: bytes) -> None:
    build(tmp_path, count=3)
    segment(tmp_path).write_bytes(junk)
    assert problems(tmp_path)


def test_proof_and_tail_from_the_cli(tmp_path: Path) -> None:
    import json

    build(tmp_path)
    runner = CliRunner()
    proof = runner.invoke(main, ["audit", "proof", str(tmp_path), "7", "--json"])
    assert proof.exit_code == 0, proof.output
    view = json.loads(proof.stdout)
    assert (view["seq"], view["tree_size"], view["event"]["ts_ns"]) == (7, 20, 7)
    assert len(view["proof"]) == 5  # ceil(log2(20))
    missing = runner.invoke(main, ["audit", "proof", str(tmp_path), "20"])
    assert missing.exit_code == 2
    assert "not covered" in missing.output
    tail = runner.invoke(main, ["audit", "tail", str(tmp_path), "-n", "3"])
    assert [json.loads(line)["seq"] for line in tail.stdout.splitlines()] == [17, 18, 19]


def test_query_index_is_derived_and_rebuildable(tmp_path: Path) -> None:
    import json
    import sqlite3

    from authgate.audit import index

    async def run() -> None:
        log = Ledger(tmp_path, "test.local/w0", SIGNER)
        log.open()
        for n in range(30):
            principal = "agt_A" if n % 3 == 0 else "agt_B"
            await log.emit_durable(
                AuditEvent(
                    new_event_id(), n * 1_000_000_000, EventType.AUTHZ, "decide",
                    "deny" if n % 5 == 0 else "allow", "ok", principal,
                    request_id=f"r{n}", correlation_id="c1" if n < 4 else None,
                )
            )  # fmt: skip
        log.close()

    asyncio.run(run())
    hits = index.query(tmp_path, index.Query(principal="agt_A", outcome="deny"))
    assert [h["seq"] for h in hits] == [0, 15]
    assert [h["seq"] for h in index.query(tmp_path, index.Query(correlation_id="c1"))] == [
        0,
        1,
        2,
        3,
    ]
    window = index.Query(since_ns=10 * 10**9, until_ns=13 * 10**9)
    assert [h["seq"] for h in index.query(tmp_path, window)] == [10, 11, 12]
    # the index is derived: damage it, rebuild it, get the same answers
    db = sqlite3.connect(index.index_path(tmp_path))
    db.execute("DELETE FROM events WHERE seq > 5")
    db.commit()
    db.close()
    assert index.rebuild(tmp_path) == 30
    assert [
        h["seq"] for h in index.query(tmp_path, index.Query(principal="agt_A", outcome="deny"))
    ] == [0, 15]
    cli = CliRunner().invoke(main, ["audit", "query", str(tmp_path), "--request-id", "r7"])
    assert [json.loads(line)["seq"] for line in cli.stdout.splitlines()] == [7]
