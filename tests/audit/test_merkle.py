"""RFC 6962 Merkle trees: CT reference vectors, and properties against a naive tree."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from authgate.audit import merkle
from authgate.errors import InvalidProof

VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).parent.parent / "vectors" / "merkle.json").read_text()
)
LEAVES = [merkle.leaf_hash(bytes.fromhex(x)) for x in VECTORS["leaves"]]


def h(x: str) -> bytes:
    return bytes.fromhex(x)


def naive_root(leaves: list[bytes]) -> bytes:
    """Bottom-up: pair neighbours level by level; an unpaired last node moves up as it is.
    An independent formulation of RFC 6962's MTH."""
    if not leaves:
        return merkle.EMPTY_ROOT
    level = list(leaves)
    while len(level) > 1:
        nxt = [merkle.node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


def test_reference_roots() -> None:
    frontier = merkle.Frontier()
    assert merkle.root([]).hex() == VECTORS["roots"][0] == frontier.root().hex()
    for size in range(1, 9):
        frontier.append(LEAVES[size - 1])
        assert merkle.root(LEAVES[:size]).hex() == VECTORS["roots"][size]
        assert frontier.root().hex() == VECTORS["roots"][size]


@pytest.mark.parametrize("vector", VECTORS["inclusion"])
def test_reference_inclusion_proofs(vector: dict[str, Any]) -> None:
    index, size = vector["index"], vector["size"]
    proof = merkle.inclusion_proof(index, LEAVES[:size])
    assert [p.hex() for p in proof] == vector["proof"]
    merkle.verify_inclusion(index, size, LEAVES[index], proof, h(VECTORS["roots"][size]))


@pytest.mark.parametrize("vector", VECTORS["consistency"])
def test_reference_consistency_proofs(vector: dict[str, Any]) -> None:
    size1, size2 = vector["size1"], vector["size2"]
    proof = merkle.consistency_proof(size1, LEAVES[:size2])
    assert [p.hex() for p in proof] == vector["proof"]
    roots = VECTORS["roots"]
    merkle.verify_consistency(size1, size2, proof, h(roots[size1]), h(roots[size2]))


leaf_lists = st.lists(st.binary(max_size=8), min_size=1, max_size=40).map(
    lambda items: [merkle.leaf_hash(x) for x in items]
)


@settings(max_examples=150)
@given(leaf_lists)
def test_root_and_frontier_agree_with_the_naive_tree(leaves: list[bytes]) -> None:
    frontier = merkle.Frontier()
    for i, leaf in enumerate(leaves, start=1):
        frontier.append(leaf)
        assert frontier.root() == merkle.root(leaves[:i]) == naive_root(leaves[:i])
    assert len(frontier.nodes) == bin(len(leaves)).count("1")  # O(log n) memory


def flip(data: bytes, bit: int) -> bytes:
    i = bit // 8 % len(data)
    return data[:i] + bytes([data[i] ^ (1 << (bit % 8))]) + data[i + 1 :]


@settings(max_examples=150)
@given(leaf_lists, st.data())
def test_inclusion_proofs_verify_and_tampering_fails(
    leaves: list[bytes], data: st.DataObject
) -> None:
    size = len(leaves)
    top = naive_root(leaves)
    index = data.draw(st.integers(0, size - 1))
    proof = merkle.inclusion_proof(index, leaves)
    merkle.verify_inclusion(index, size, leaves[index], proof, top)
    bit = data.draw(st.integers(0, 255))
    with pytest.raises(InvalidProof):
        merkle.verify_inclusion(index, size, flip(leaves[index], bit), proof, top)
    with pytest.raises(InvalidProof):
        merkle.verify_inclusion(index, size, leaves[index], proof, flip(top, bit))
    if proof:
        which = data.draw(st.integers(0, len(proof) - 1))
        bad = [*proof[:which], flip(proof[which], bit), *proof[which + 1 :]]
        with pytest.raises(InvalidProof):
            merkle.verify_inclusion(index, size, leaves[index], bad, top)
        with pytest.raises(InvalidProof):
            merkle.verify_inclusion(index, size, leaves[index], proof[:-1], top)
    other = data.draw(st.integers(0, size - 1))
    if leaves[other] != leaves[index]:
        with pytest.raises(InvalidProof):
            merkle.verify_inclusion(other, size, leaves[index], proof, top)


@settings(max_examples=150)
@given(leaf_lists, st.data())
def test_consistency_proofs_verify_and_tampering_fails(
    leaves: list[bytes], data: st.DataObject
) -> None:
    size2 = len(leaves)
    size1 = data.draw(st.integers(0, size2))
    root1, root2 = naive_root(leaves[:size1]), naive_root(leaves)
    proof = merkle.consistency_proof(size1, leaves)
    merkle.verify_consistency(size1, size2, proof, root1, root2)
    if 0 < size1 < size2:
        bit = data.draw(st.integers(0, 255))
        with pytest.raises(InvalidProof):
            merkle.verify_consistency(size1, size2, proof, flip(root1, bit), root2)
        with pytest.raises(InvalidProof):
            merkle.verify_consistency(size1, size2, proof, root1, flip(root2, bit))
        which = data.draw(st.integers(0, len(proof) - 1))
        bad = [*proof[:which], flip(proof[which], bit), *proof[which + 1 :]]
        with pytest.raises(InvalidProof):
            merkle.verify_consistency(size1, size2, bad, root1, root2)


def test_a_rewritten_history_is_not_consistent() -> None:
    old = LEAVES[:5]
    forged = [*LEAVES[:2], merkle.leaf_hash(b"rewritten"), *LEAVES[3:8]]
    proof = merkle.consistency_proof(5, forged)
    with pytest.raises(InvalidProof):
        merkle.verify_consistency(5, 8, proof, merkle.root(old), merkle.root(forged))


@pytest.mark.parametrize(("index", "size"), [(-1, 3), (3, 3), (0, 0)])
def test_out_of_range_inclusion_is_refused(index: int, size: int) -> None:
    with pytest.raises(InvalidProof):
        merkle.verify_inclusion(index, size, LEAVES[0], [], merkle.root(LEAVES[:3]))


@settings(max_examples=150)
@given(leaf_lists, st.data())
def test_proofs_after_a_cut_equal_the_full_trees(leaves: list[bytes], data: st.DataObject) -> None:
    size = len(leaves)
    cut = data.draw(st.integers(0, size))
    frontier = merkle.Frontier()
    for leaf in leaves[:cut]:
        frontier.append(leaf)
    mth = merkle.after_cut(frontier.size, frontier.nodes, leaves[cut:])
    assert mth(0, size) == merkle.root(leaves)
    for index in range(cut, size):
        assert merkle.path_in(index, size, mth) == merkle.inclusion_proof(index, leaves)
    size1 = data.draw(st.integers(cut, size))
    assert merkle.consistency_in(size1, size, mth) == merkle.consistency_proof(size1, leaves)
    if cut > 0:  # an earlier leaf's proof is either still the true one or refused
        early = data.draw(st.integers(0, cut - 1))
        try:
            partial = merkle.path_in(early, size, mth)
        except InvalidProof as exc:
            refusal = exc.message
            assert "pruned" in refusal
        else:
            assert partial == merkle.inclusion_proof(early, leaves)
