"""Proofs served from a log directory: inclusion of a record in the latest signed checkpoint,
and consistency between two tree sizes. Leaf hashes come from the query index."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from authgate.audit import index, merkle
from authgate.audit.note import Checkpoint, Verifier, open_note
from authgate.audit.retention import load_frontier
from authgate.errors import InvalidProof


def latest_note(directory: Path) -> str:
    """The newest signed checkpoint note of the log."""
    notes = sorted((directory / "checkpoints").glob("*.note"))
    if not notes:
        raise InvalidProof("the log has no signed checkpoint yet")
    return notes[-1].read_text()


def latest_checkpoint(directory: Path) -> tuple[str, Checkpoint]:
    """The newest note and its checkpoint, verified with the log's own key."""
    note = latest_note(directory)
    verifier = Verifier.from_vkey((directory / "log.vkey").read_text())
    return note, Checkpoint.parse(open_note(note, [verifier]).text)


def _whole_log(directory: Path) -> None:
    if load_frontier(directory).size:
        raise InvalidProof(
            "this log was pruned; proofs need its records from 0 (use the export that holds them)"
        )


def inclusion(directory: Path, seq: int) -> dict[str, Any]:
    """Record ``seq``'s inclusion proof against the latest checkpoint, verified."""
    _whole_log(directory)
    note, checkpoint = latest_checkpoint(directory)
    if not 0 <= seq < checkpoint.size:
        raise InvalidProof(f"record {seq} is not covered by checkpoint {checkpoint.size}")
    leaves = index.leaves(directory)[: checkpoint.size]
    proof = merkle.inclusion_proof(seq, leaves)
    merkle.verify_inclusion(seq, checkpoint.size, leaves[seq], proof, checkpoint.root)
    return {
        "seq": seq,
        "tree_size": checkpoint.size,
        "leaf_hash": leaves[seq].hex(),
        "proof": [p.hex() for p in proof],
        "checkpoint": note,
    }


def consistency(directory: Path, size1: int, size2: int) -> dict[str, Any]:
    """The consistency proof between tree sizes ``size1`` <= ``size2`` of the log."""
    _whole_log(directory)
    leaves = index.leaves(directory)
    if not 0 <= size1 <= size2 <= len(leaves):
        raise InvalidProof(f"need 0 <= from <= to <= {len(leaves)}")
    proof = merkle.consistency_proof(size1, leaves[:size2])
    return {
        "from": size1,
        "to": size2,
        "from_root": merkle.root(leaves[:size1]).hex(),
        "to_root": merkle.root(leaves[:size2]).hex(),
        "proof": [p.hex() for p in proof],
    }
