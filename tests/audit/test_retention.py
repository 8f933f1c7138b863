"""Export and retention: whole segments leave, the rest stays verifiable."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from click.testing import CliRunner

from authgate.audit.event import AuditEvent, EventType, new_event_id
from authgate.audit.log import Ledger
from authgate.audit.note import Signer, Verifier
from authgate.audit.segment import list_segments
from authgate.audit.verify import verify_log
from authgate.cli import main

SIGNER = Signer("test.local/w0", bytes(range(32)))
TRUSTED = [Verifier.from_vkey(SIGNER.vkey)]


def grow(folder: Path, start: int, count: int) -> None:
    """``count`` durable records, each its own batch, small segments, checkpoint per batch."""

    async def run() -> None:
        log = Ledger(folder, "test.local/w0", SIGNER, segment_bytes=600, checkpoint_interval=0.0)
        log.open()
        for n in range(start, start + count):
            await log.emit_durable(
                AuditEvent(new_event_id(), n, EventType.AUTHZ, "decide", "allow", "ok")
            )
        log.close()

    asyncio.run(run())


def test_an_export_of_a_middle_range_verifies_elsewhere(tmp_path: Path) -> None:
    log = tmp_path / "log"
    grow(log, 0, 40)
    assert len(list_segments(log / "segments")) > 4
    out = tmp_path / "export"
    runner = CliRunner()
    done = runner.invoke(
        main, ["audit", "export", str(log), str(out), "--from", "15", "--to", "25"]
    )
    assert done.exit_code == 0, done.output
    first = int(list_segments(out / "segments")[0].stem)
    assert 0 < first <= 15
    assert json.loads((out / "frontier.json").read_text())["size"] == first
    report = verify_log(out, TRUSTED)
    assert report.ok, report.problems
    # a forged frontier cannot make the exported records match the signed checkpoints
    forged = json.loads((out / "frontier.json").read_text())
    forged["nodes"][0] = "00" * 32
    (out / "frontier.json").write_text(json.dumps(forged))
    assert any("do not match" in p for p in verify_log(out, TRUSTED).problems)


def test_pruning_keeps_the_log_verifiable_and_writable(tmp_path: Path) -> None:
    log = tmp_path / "log"
    grow(log, 0, 40)
    before = len(list_segments(log / "segments"))
    indexed = CliRunner().invoke(main, ["audit", "query", str(log), "--limit", "1"])
    assert indexed.exit_code == 0  # the index now holds rows the prune will remove
    done = CliRunner().invoke(main, ["audit", "prune", str(log), "--before", "20"])
    assert done.exit_code == 0, done.output
    remaining = list_segments(log / "segments")
    assert 0 < len(remaining) < before
    assert int(remaining[0].stem) <= 20
    assert verify_log(log, TRUSTED).ok
    grow(log, 40, 5)  # the ledger recovers from the frontier and carries on
    report = verify_log(log, TRUSTED)
    assert report.ok, report.problems
    assert report.records == 45
    proof = CliRunner().invoke(main, ["audit", "proof", str(log), "30", "--json"])
    assert proof.exit_code == 0, proof.output  # proofs of later records stay possible
    assert json.loads(proof.stdout)["event"]["ts_ns"] == 30
    early = CliRunner().invoke(main, ["audit", "proof", str(log), "3"])
    assert early.exit_code == 2
    assert "pruned" in early.output


def test_prune_is_refused_while_a_server_holds_the_log(tmp_path: Path) -> None:
    log = tmp_path / "log"
    grow(log, 0, 10)
    holder = Ledger(log, "test.local/w0", SIGNER)
    holder.open()
    try:
        done = CliRunner().invoke(main, ["audit", "prune", str(log), "--before", "5"])
        assert done.exit_code == 2
        assert "running server" in done.output
    finally:
        holder.close()
