"""Export and retention: whole segments leave the log, and the tree stays checkable.

A log whose first segment does not start at record 0 carries ``frontier.json``: the Merkle
frontier (the perfect subtrees left of the cut) at its first record. The frontier is not
signed, and need not be: the roots it produces at later signed checkpoints only match if it is
the true one. The ledger's recovery and the verifier both start from it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from authgate.audit.merkle import Frontier, leaf_hash
from authgate.audit.segment import ScanEnd, fsync_directory, list_segments, scan
from authgate.errors import InvalidProof

FRONTIER = "frontier.json"


def load_frontier(directory: Path) -> Frontier:
    """The frontier the log starts from (empty for a log that starts at record 0)."""
    path = directory / FRONTIER
    if not path.exists():
        return Frontier()
    try:
        data = json.loads(path.read_text())
        return Frontier.restore(int(data["size"]), [bytes.fromhex(n) for n in data["nodes"]])
    except (ValueError, KeyError, TypeError):
        raise InvalidProof(f"{path} is not a frontier") from None


def _write_frontier(directory: Path, frontier: Frontier) -> None:
    path = directory / FRONTIER
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"size": frontier.size, "nodes": [n.hex() for n in frontier.nodes]}))
    tmp.replace(path)
    fsync_directory(directory)


def frontier_at(directory: Path, seq: int) -> Frontier:
    """The frontier just before record ``seq``, by hashing the records before it."""
    frontier = load_frontier(directory)
    if seq < frontier.size:
        raise InvalidProof(f"records before {frontier.size} are no longer in this log")
    segments = list_segments(directory / "segments")
    for i, path in enumerate(segments):
        for item in scan(path, last=i == len(segments) - 1):
            if isinstance(item, ScanEnd) or item.seq < frontier.size:
                continue
            if item.seq >= seq:
                return frontier
            frontier.append(leaf_hash(item.payload))
    if frontier.size != seq:
        raise InvalidProof(f"the log has no record {seq}")
    return frontier


def export(directory: Path, first: int, last: int, out: Path) -> list[str]:
    """Copy the segments holding records ``first``..``last`` (whole segments), the
    checkpoints that cover them, the verifier key and the frontier at the first copied
    record into ``out``. Returns the copied segment names."""
    segments = list_segments(directory / "segments")
    starts = [int(p.stem) for p in segments]
    chosen = [
        p
        for i, p in enumerate(segments)
        if starts[i] <= last and (i + 1 == len(segments) or starts[i + 1] > first)
    ]
    if not chosen:
        raise InvalidProof(f"no segment holds records {first}..{last}")
    (out / "segments").mkdir(parents=True, exist_ok=False)
    (out / "checkpoints").mkdir()
    for path in chosen:
        shutil.copy2(path, out / "segments" / path.name)
    start = int(chosen[0].stem)
    following = segments.index(chosen[-1]) + 1
    if following < len(segments):
        end = starts[following]
    else:  # the live segment: count its records
        end = int(chosen[-1].stem) + sum(
            1 for item in scan(chosen[-1], last=True) if not isinstance(item, ScanEnd)
        )
    for note in (directory / "checkpoints").glob("*.note"):
        if start < int(note.stem) <= end:  # checkpoints over exactly the exported records
            shutil.copy2(note, out / "checkpoints" / note.name)
    shutil.copy2(directory / "log.vkey", out / "log.vkey")
    if start > 0:
        _write_frontier(out, frontier_at(directory, start))
    return [p.name for p in chosen]


def prune(directory: Path, before: int) -> list[str]:
    """Delete the whole segments whose records all come before ``before`` (export them
    first). The log must not be running. Returns the deleted segment names."""
    segments = list_segments(directory / "segments")
    starts = [int(p.stem) for p in segments]
    doomed = [p for i, p in enumerate(segments[:-1]) if starts[i + 1] <= before]
    if not doomed:
        return []
    keep_from = starts[len(doomed)]
    _write_frontier(directory, frontier_at(directory, keep_from))  # before anything goes
    for path in doomed:
        path.unlink()
    fsync_directory(directory / "segments")
    return [p.name for p in doomed]
