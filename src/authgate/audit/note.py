"""C2SP signed notes and tlog checkpoints, signed with Ed25519.

A checkpoint is the note text ``<origin>\\n<size>\\n<base64 root hash>\\n`` (C2SP
tlog-checkpoint). A signed note is that text, a blank line, and one line per signature:
``— <key name> <base64(4-byte key id || 64-byte signature)>`` (C2SP signed-note). The key id
of an Ed25519 key is the first four bytes of ``SHA-256(name || "\\n" || 0x01 || public key)``.

Keys are written as in Go's golang.org/x/mod/sumdb/note: a verifier key is
``<name>+<hex key id>+<base64(0x01 || public key)>``, a signer key is
``PRIVATE+KEY+<name>+<hex key id>+<base64(0x01 || seed)>``. A note may carry several
signatures (key rotation); :func:`open_note` accepts it when at least one comes from a
trusted key and none from a trusted key is bad. Both formats are pinned by the Go package's
and the C2SP specification's published vectors in ``tests/vectors/notes.json``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from authgate.errors import InvalidProof

ALG_ED25519 = 1
DASH = "\u2014"
MAX_NOTE_BYTES = 1 << 20
_NAME = re.compile(r"[^\s+]+")
_SIG_LINE = re.compile(DASH + r" (\S+) ([A-Za-z0-9+/=]+)")


def key_id(name: str, public: bytes) -> bytes:
    """The 4-byte id of an Ed25519 key named ``name``."""
    return hashlib.sha256(name.encode() + b"\n" + bytes([ALG_ED25519]) + public).digest()[:4]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidProof("invalid base64") from None


class Signer:
    """An Ed25519 note signer."""

    def __init__(self, name: str, seed: bytes) -> None:
        if not _NAME.fullmatch(name):
            raise InvalidProof("a key name has no spaces or '+'")
        self.name = name
        self._key = Ed25519PrivateKey.from_private_bytes(seed)
        self._seed = seed
        self.public = self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.id = key_id(name, self.public)

    @classmethod
    def generate(cls, name: str) -> Signer:
        """A new random key."""
        seed = Ed25519PrivateKey.generate().private_bytes_raw()
        return cls(name, seed)

    @classmethod
    def from_skey(cls, skey: str) -> Signer:
        """Parse ``PRIVATE+KEY+<name>+<hex id>+<base64>``."""
        parts = skey.strip().split("+", 4)
        if len(parts) != 5 or parts[:2] != ["PRIVATE", "KEY"]:
            raise InvalidProof("not a signer key")
        name, hex_id, blob = parts[2], parts[3], _unb64(parts[4])
        if len(blob) != 33 or blob[0] != ALG_ED25519:
            raise InvalidProof("not an Ed25519 signer key")
        signer = cls(name, blob[1:])
        if signer.id.hex() != hex_id:
            raise InvalidProof("signer key id does not match its key")
        return signer

    @property
    def skey(self) -> str:
        """The signer key string (a secret)."""
        blob = _b64(bytes([ALG_ED25519]) + self._seed)
        return f"PRIVATE+KEY+{self.name}+{self.id.hex()}+{blob}"

    @property
    def vkey(self) -> str:
        """The verifier key string to publish."""
        return f"{self.name}+{self.id.hex()}+{_b64(bytes([ALG_ED25519]) + self.public)}"

    def signature_line(self, text: str) -> str:
        """The signature line for ``text``."""
        signature = self._key.sign(text.encode())
        return f"{DASH} {self.name} {_b64(self.id + signature)}\n"


class Verifier(NamedTuple):
    """A trusted Ed25519 key."""

    name: str
    id: bytes
    key: Ed25519PublicKey

    @classmethod
    def from_vkey(cls, vkey: str) -> Verifier:
        """Parse ``<name>+<hex id>+<base64(0x01 || key)>``."""
        parts = vkey.strip().split("+", 2)
        if len(parts) != 3 or not _NAME.fullmatch(parts[0]):
            raise InvalidProof("not a verifier key")
        name, hex_id, blob = parts[0], parts[1], _unb64(parts[2])
        if len(blob) != 33 or blob[0] != ALG_ED25519:
            raise InvalidProof("not an Ed25519 verifier key")
        if key_id(name, blob[1:]).hex() != hex_id:
            raise InvalidProof("verifier key id does not match its key")
        return cls(name, bytes.fromhex(hex_id), Ed25519PublicKey.from_public_bytes(blob[1:]))


def sign_note(text: str, signers: Iterable[Signer]) -> str:
    """A signed note: ``text`` (ending in a newline), a blank line, signature lines."""
    if not text.endswith("\n") or "\r" in text:
        raise InvalidProof("note text must end in a newline and hold no CR")
    lines = [s.signature_line(text) for s in signers]
    if not lines:
        raise InvalidProof("a note needs at least one signature")
    return text + "\n" + "".join(lines)


class OpenedNote(NamedTuple):
    """A verified note: its text and the names of the trusted keys that signed it."""

    text: str
    signed_by: list[str]


def open_note(note: str, verifiers: Sequence[Verifier]) -> OpenedNote:
    """Verify a signed note; InvalidProof unless a trusted key signed it and no trusted
    key's signature fails. Signatures by unknown keys are ignored."""
    if len(note.encode()) > MAX_NOTE_BYTES or "\r" in note:
        raise InvalidProof("not a note")
    split = note.rfind("\n\n")
    if split < 0 or not note.endswith("\n"):
        raise InvalidProof("a note is text, a blank line and signature lines")
    text, block = note[: split + 1], note[split + 2 :]
    trusted = {(v.name, v.id): v for v in verifiers}
    signed_by: list[str] = []
    for line in block[:-1].split("\n"):
        match = _SIG_LINE.fullmatch(line)
        if match is None:
            raise InvalidProof(f"malformed signature line {line[:80]!r}")
        blob = _unb64(match[2])
        if len(blob) < 5:
            raise InvalidProof("signature too short")
        verifier = trusted.get((match[1], blob[:4]))
        if verifier is None:
            continue
        try:
            verifier.key.verify(blob[4:], text.encode())
        except InvalidSignature:
            raise InvalidProof(f"bad signature by trusted key {verifier.name}") from None
        signed_by.append(verifier.name)
    if not signed_by:
        raise InvalidProof("no signature by a trusted key")
    return OpenedNote(text, signed_by)


class Checkpoint(NamedTuple):
    """A C2SP tlog checkpoint: the log's origin, its size and its root hash."""

    origin: str
    size: int
    root: bytes

    def text(self) -> str:
        """The checkpoint's note text."""
        return f"{self.origin}\n{self.size}\n{_b64(self.root)}\n"

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        """Parse checkpoint text (extension lines after the third are allowed, ignored)."""
        lines = text.split("\n")
        if len(lines) < 4 or lines[-1] != "":
            raise InvalidProof("a checkpoint has origin, size and root lines")
        origin, size, root_b64 = lines[0], lines[1], lines[2]
        if not origin or not size.isdigit() or (size != "0" and size.startswith("0")):
            raise InvalidProof("malformed checkpoint origin or size")
        root = _unb64(root_b64)
        if len(root) != 32:
            raise InvalidProof("a checkpoint root is 32 bytes")
        return cls(origin, int(size), root)
