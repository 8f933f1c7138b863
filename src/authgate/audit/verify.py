"""The offline verifier: check a log directory (or an export of one) without trusting anyone.

It re-reads every segment, checks each record's framing, CRC and canonical encoding,
recomputes every leaf and the tree, and checks every signed checkpoint: its signature by a
trusted key, and its root against the tree of the records at its size (which also proves
each checkpoint consistent with the one before, as both are prefixes of the same records).
Problems are reported where they are: the segment, byte offset and sequence number of a bad
record, or the range of records that a checkpoint does not match.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from authgate.audit.event import decode
from authgate.audit.merkle import leaf_hash
from authgate.audit.note import Checkpoint, Verifier, open_note
from authgate.audit.retention import load_frontier
from authgate.audit.segment import ScanEnd, list_segments, scan
from authgate.errors import AuthgateError


@dataclass
class Report:
    """The outcome of a verification."""

    records: int = 0
    checkpoints: int = 0
    root: bytes = b""
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing is wrong and at least one checkpoint vouches for the records."""
        return not self.problems and self.checkpoints > 0


def trusted_keys(directory: Path, vkeys: Sequence[str]) -> list[Verifier]:
    """The given verifier keys, or the log's own ``log.vkey`` when none are given."""
    if vkeys:
        return [Verifier.from_vkey(v) for v in vkeys]
    return [Verifier.from_vkey((directory / "log.vkey").read_text())]


def verify_log(directory: Path, verifiers: Sequence[Verifier]) -> Report:
    """Verify every record and checkpoint under ``directory``."""
    report = Report()
    checkpoints: dict[int, tuple[Path, Checkpoint]] = {}
    for path in sorted((directory / "checkpoints").glob("*.note")):
        try:
            cp = Checkpoint.parse(open_note(path.read_text(), verifiers).text)
        except AuthgateError as exc:
            report.problems.append(f"checkpoint {path.name}: {exc.message}")
            continue
        checkpoints[cp.size] = (path, cp)
    report.checkpoints = len(checkpoints)

    try:
        frontier = load_frontier(directory)  # an export or a pruned log starts past record 0
    except AuthgateError as exc:
        report.problems.append(exc.message)
        return report
    good_until = frontier.size  # records before this are vouched for (or not ours to check)
    mismatches = 0
    segments = list_segments(directory / "segments")
    try:
        for path in segments:
            if path.stem != f"{frontier.size:020d}":
                report.problems.append(
                    f"{path.name}: expected the segment starting at record {frontier.size}"
                )
                break
            for item in scan(path, last=False):
                if isinstance(item, ScanEnd):
                    continue
                try:
                    decode(item.payload)
                except AuthgateError as exc:
                    report.problems.append(
                        f"{path.name}@{item.offset}: record {item.seq}: {exc.message}"
                    )
                frontier.append(leaf_hash(item.payload))
                found = checkpoints.get(frontier.size)
                if found is not None:
                    if found[1].root == frontier.root():
                        if not mismatches:
                            good_until = frontier.size
                    else:
                        mismatches += 1
                        if mismatches == 1:  # the first one locates the damage
                            report.problems.append(
                                f"records {good_until}..{frontier.size - 1} do not match "
                                f"checkpoint {found[0].name} (every record before "
                                f"{good_until} does)"
                            )
    except AuthgateError as exc:  # framing or CRC: the scan names segment, offset, record
        report.problems.append(exc.message)
    if mismatches > 1:
        report.problems.append(f"{mismatches - 1} later checkpoints do not match either")
    report.records = frontier.size
    report.root = frontier.root()
    beyond = sorted(size for size in checkpoints if size > frontier.size)
    if beyond:
        report.problems.append(
            f"checkpoint {beyond[-1]} was signed but the log ends after record "
            f"{frontier.size - 1}: records {frontier.size}..{beyond[-1] - 1} are missing"
        )
    return report
