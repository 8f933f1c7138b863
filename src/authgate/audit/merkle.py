"""RFC 6962 / RFC 9162 Merkle trees: hashes, roots, inclusion and consistency proofs. Pure.

Leaves are hashed ``SHA-256(0x00 || data)`` and interior nodes ``SHA-256(0x01 || left ||
right)``; a tree of n leaves splits at the largest power of two below n. Proof generation
follows RFC 6962 §2.1.1-2.1.2 (PATH and PROOF); verification follows RFC 9162 §2.1.3.2 and
§2.1.4.2 and raises :class:`~authgate.errors.InvalidProof` rather than returning a bool.

:class:`Frontier` keeps the O(log n) perfect subtrees on the right edge of a growing tree,
so the ledger gets the root of every size without keeping the leaves in memory.

The Certificate Transparency reference vectors (roots of sizes 0-8, inclusion and
consistency proofs) are pinned in ``tests/vectors/merkle.json``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

from authgate.errors import InvalidProof

EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    """The hash of a leaf's bytes."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """The hash of an interior node."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


Subtree = Callable[[int, int], bytes]  # MTH of the leaves [lo, hi)


def root(leaves: Sequence[bytes]) -> bytes:
    """MTH(D[n]) of a list of leaf hashes."""
    if not leaves:
        return EMPTY_ROOT
    return _over(leaves)(0, len(leaves))


def _over(leaves: Sequence[bytes]) -> Subtree:
    def mth(lo: int, hi: int) -> bytes:
        n = hi - lo
        if n == 1:
            return leaves[lo]
        k = _split(n)
        return node_hash(mth(lo, lo + k), mth(lo + k, hi))

    return mth


def inclusion_proof(index: int, leaves: Sequence[bytes]) -> list[bytes]:
    """PATH(index, D[n]): the audit path of leaf ``index`` in the tree of ``leaves``."""
    return path_in(index, len(leaves), _over(leaves))


def path_in(index: int, size: int, mth: Subtree) -> list[bytes]:
    """PATH(index, D[size]) over any source of subtree hashes."""
    if not 0 <= index < size:
        raise InvalidProof(f"leaf {index} is not in a tree of size {size}")
    return _path(index, 0, size, mth)


def _path(m: int, lo: int, hi: int, mth: Subtree) -> list[bytes]:
    n = hi - lo
    if n == 1:
        return []
    k = _split(n)
    if m < k:
        return [*_path(m, lo, lo + k, mth), mth(lo + k, hi)]
    return [*_path(m - k, lo + k, hi, mth), mth(lo, lo + k)]


def consistency_proof(size1: int, leaves: Sequence[bytes]) -> list[bytes]:
    """PROOF(size1, D[n]): proves the tree of the first ``size1`` leaves is a prefix."""
    return consistency_in(size1, len(leaves), _over(leaves))


def consistency_in(size1: int, size2: int, mth: Subtree) -> list[bytes]:
    """PROOF(size1, D[size2]) over any source of subtree hashes."""
    if not 0 <= size1 <= size2:
        raise InvalidProof(f"size {size1} is not within a tree of size {size2}")
    if size1 in (0, size2):
        return []
    return _subproof(size1, 0, size2, True, mth)


def _subproof(m: int, lo: int, hi: int, whole: bool, mth: Subtree) -> list[bytes]:
    n = hi - lo
    if m == n:
        return [] if whole else [mth(lo, hi)]
    k = _split(n)
    if m <= k:
        return [*_subproof(m, lo, lo + k, whole, mth), mth(lo + k, hi)]
    return [*_subproof(m - k, lo + k, hi, False, mth), mth(lo, lo + k)]


def after_cut(
    frontier_size: int, frontier_nodes: Sequence[bytes], later: Sequence[bytes]
) -> Subtree:
    """Subtree hashes of a tree whose leaves before ``frontier_size`` are gone: the frontier's
    perfect subtrees stand in for them. Every subtree that proofs of later leaves need is
    a frontier node or is built from them and later leaves; asking for one inside a
    frontier node raises InvalidProof."""
    blocks: dict[tuple[int, int], bytes] = {}
    lo = 0
    bits = [b for b in range(frontier_size.bit_length() - 1, -1, -1) if frontier_size >> b & 1]
    for bit, node in zip(bits, frontier_nodes, strict=True):
        blocks[(lo, lo + (1 << bit))] = node
        lo += 1 << bit

    def mth(lo: int, hi: int) -> bytes:
        known = blocks.get((lo, hi))
        if known is not None:
            return known
        n = hi - lo
        if n == 1:
            if lo < frontier_size:
                raise InvalidProof(f"leaf {lo} was pruned; this proof needs it")
            return later[lo - frontier_size]
        k = _split(n)
        return node_hash(mth(lo, lo + k), mth(lo + k, hi))

    return mth


def verify_inclusion(
    index: int, size: int, leaf: bytes, proof: Sequence[bytes], expected_root: bytes
) -> None:
    """Check that ``leaf`` (a leaf hash) is at ``index`` in the tree of ``size`` with
    ``expected_root``. Raises InvalidProof otherwise (RFC 9162 §2.1.3.2)."""
    if not 0 <= index < size:
        raise InvalidProof(f"leaf {index} is outside a tree of size {size}")
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            raise InvalidProof("inclusion proof is too long")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise InvalidProof("inclusion proof is too short")
    if r != expected_root:
        raise InvalidProof("inclusion proof does not lead to the root")


def verify_consistency(
    size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes
) -> None:
    """Check that the tree of ``size1`` with ``root1`` is a prefix of the tree of
    ``size2`` with ``root2``. Raises InvalidProof otherwise (RFC 9162 §2.1.4.2)."""
    if size1 > size2 or size1 < 0:
        raise InvalidProof(f"cannot prove size {size1} consistent with size {size2}")
    if size1 == size2:
        if proof or root1 != root2:
            raise InvalidProof("equal sizes need an empty proof and equal roots")
        return
    if size1 == 0:
        if proof:
            raise InvalidProof("consistency with the empty tree needs an empty proof")
        return
    if not proof:
        raise InvalidProof("consistency proof is empty")
    path = list(proof)
    if size1 & (size1 - 1) == 0:  # an exact power of two: the old root is a node
        path.insert(0, root1)
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise InvalidProof("consistency proof is too long")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise InvalidProof("consistency proof is too short")
    if fr != root1 or sr != root2:
        raise InvalidProof("consistency proof does not reproduce both roots")


class Frontier:
    """The right edge of a growing tree: one perfect subtree per set bit of the size."""

    __slots__ = ("nodes", "size")

    def __init__(self) -> None:
        self.size = 0
        self.nodes: list[bytes] = []  # largest subtree first

    @classmethod
    def restore(cls, size: int, nodes: Sequence[bytes]) -> Frontier:
        """A frontier saved earlier (one node per set bit of ``size``, largest first)."""
        if size < 0 or len(nodes) != bin(size).count("1") or any(len(n) != 32 for n in nodes):
            raise InvalidProof(f"a frontier of size {size} has {bin(size).count('1')} nodes")
        frontier = cls()
        frontier.size = size
        frontier.nodes = list(nodes)
        return frontier

    def append(self, leaf: bytes) -> None:
        """Add one leaf hash."""
        self.nodes.append(leaf)
        self.size += 1
        merged = self.size
        while not merged & 1:  # every trailing zero bit is a pair of equal subtrees
            right = self.nodes.pop()
            self.nodes[-1] = node_hash(self.nodes[-1], right)
            merged >>= 1

    def root(self) -> bytes:
        """The root of the tree so far."""
        if not self.nodes:
            return EMPTY_ROOT
        r = self.nodes[-1]
        for left in reversed(self.nodes[:-1]):
            r = node_hash(left, r)
        return r
