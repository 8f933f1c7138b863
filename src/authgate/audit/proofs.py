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


def _tree(directory: Path) -> tuple[int, merkle.Subtree]:
    """The log's size and its subtree hashes (standing in the frontier for pruned leaves)."""
    frontier = load_frontier(directory)
    later = index.leaves(directory, frontier.size)
    size = frontier.size + len(later)
    return size, merkle.after_cut(frontier.size, frontier.nodes, later)


def inclusion(directory: Path, seq: int) -> dict[str, Any]:
    """Record ``seq``'s inclusion proof against the latest checkpoint, verified."""
    note, checkpoint = latest_checkpoint(directory)
    if not 0 <= seq < checkpoint.size:
        raise InvalidProof(f"record {seq} is not covered by checkpoint {checkpoint.size}")
    _, mth = _tree(directory)
    leaf = mth(seq, seq + 1)
    proof = merkle.path_in(seq, checkpoint.size, mth)
    merkle.verify_inclusion(seq, checkpoint.size, leaf, proof, checkpoint.root)
    return {
        "seq": seq,
        "tree_size": checkpoint.size,
        "leaf_hash": leaf.hex(),
        "proof": [p.hex() for p in proof],
        "checkpoint": note,
    }


def consistency(directory: Path, size1: int, size2: int) -> dict[str, Any]:
    """The consistency proof between tree sizes ``size1`` <= ``size2`` of the log."""
    size, mth = _tree(directory)
    if not 0 <= size1 <= size2 <= size:
        raise InvalidProof(f"need 0 <= from <= to <= {size}")
    proof = merkle.consistency_in(size1, size2, mth)
    return {
        "from": size1,
        "to": size2,
        "from_root": (mth(0, size1) if size1 else merkle.EMPTY_ROOT).hex(),
        "to_root": (mth(0, size2) if size2 else merkle.EMPTY_ROOT).hex(),
        "proof": [p.hex() for p in proof],
    }
