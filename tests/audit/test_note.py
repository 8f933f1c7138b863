"""Signed notes and checkpoints: published vectors, rotation, tampering, strict parsing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from authgate.audit.note import (
    Checkpoint,
    Signer,
    Verifier,
    open_note,
    sign_note,
)
from authgate.errors import InvalidProof

VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).parent.parent / "vectors" / "notes.json").read_text()
)
GO = VECTORS["go"]


def test_go_vector_signs_byte_for_byte() -> None:
    signer = Signer.from_skey(GO["skey"])
    assert signer.vkey == GO["vkey"]
    assert signer.skey == GO["skey"]
    assert sign_note(GO["text"], [signer]) == GO["text"] + "\n" + GO["signature_line"]


def test_go_vector_opens_and_cosignatures_are_accepted() -> None:
    peter = Verifier.from_vkey(GO["vkey"])
    enoch = Verifier.from_vkey(GO["other_vkey"])
    both = GO["text"] + "\n" + GO["signature_line"] + GO["other_signature_line"]
    assert open_note(both, [peter]).signed_by == ["PeterNeumann"]  # unknown keys ignored
    assert open_note(both, [peter, enoch]).signed_by == ["PeterNeumann", "EnochRoot"]
    assert open_note(both, [enoch]).text == GO["text"]


def test_spec_vector_opens() -> None:
    spec = VECTORS["spec"]
    opened = open_note(spec["note"], [Verifier.from_vkey(spec["vkey"])])
    assert opened.text == "This is an example message.\n"


def test_checkpoints_round_trip_and_rotation() -> None:
    old, new = Signer.generate("authgate.local/w0"), Signer.generate("authgate.local/w0")
    cp = Checkpoint("authgate.local/w0", 42, bytes(range(32)))
    note = sign_note(cp.text(), [new, old])  # during rotation both sign
    for trusted in ([Verifier.from_vkey(old.vkey)], [Verifier.from_vkey(new.vkey)]):
        assert Checkpoint.parse(open_note(note, trusted).text) == cp
    assert cp.text() == "authgate.local/w0\n42\nAAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n"


def test_tampering_is_refused() -> None:
    signer = Signer.generate("log")
    trusted = [Verifier.from_vkey(signer.vkey)]
    note = sign_note(Checkpoint("log", 7, b"\x01" * 32).text(), [signer])
    forged_size = note.replace("\n7\n", "\n8\n", 1)
    with pytest.raises(InvalidProof, match="bad signature"):
        open_note(forged_size, trusted)
    stranger = Signer.generate("log")
    with pytest.raises(InvalidProof, match="no signature by a trusted key"):
        open_note(sign_note(Checkpoint("log", 7, b"\x01" * 32).text(), [stranger]), trusted)
    with pytest.raises(InvalidProof):
        open_note(note.replace("\u2014", "-"), trusted)


@pytest.mark.parametrize(
    "vkey",
    [
        "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "PeterNeumann+c74f20a3+AhpcQcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "PeterNeumann+c74f20a3",
        "",
    ],
)
def test_bad_verifier_keys_are_refused(vkey: str) -> None:
    with pytest.raises(InvalidProof):
        Verifier.from_vkey(vkey)


@given(st.text(max_size=200))
def test_arbitrary_notes_open_or_raise_invalid_proof(text: str) -> None:
    trusted = [Verifier.from_vkey(GO["vkey"])]
    try:
        opened = open_note(text, trusted)
    except InvalidProof:
        return
    assert text.startswith(opened.text)


@given(st.text(max_size=120))
def test_arbitrary_checkpoint_text_parses_or_raises(text: str) -> None:
    try:
        cp = Checkpoint.parse(text)
    except InvalidProof:
        return
    assert cp.size >= 0
    assert len(cp.root) == 32
