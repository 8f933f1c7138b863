"""API keys (DESIGN.md §4): ``agk_`` strings in the shape :mod:`authgate.secretfmt`
describes — a public key id, a 190-bit secret and a CRC-32 checksum. Only the secret's
keyed hash is stored."""

from __future__ import annotations

from authgate.secretfmt import (
    BASE62,
    CHECKSUM_LEN,
    SecretFormat,
    hash_secret,
    secret_matches,
)
from authgate.secretfmt import Parsed as ParsedKey
from authgate.secretfmt import is_id as is_key_id
from authgate.secretfmt import new_id as new_key_id

__all__ = [
    "BASE62",
    "CHECKSUM_LEN",
    "KEY_LEN",
    "PREFIX",
    "ParsedKey",
    "hash_secret",
    "is_key_id",
    "new_key",
    "new_key_id",
    "parse_key",
    "secret_matches",
]

KEYS = SecretFormat("agk_")
PREFIX = KEYS.prefix
KEY_LEN = KEYS.length


def new_key(key_id: str | None = None) -> tuple[str, ParsedKey]:
    """Return a new key string and its parts. The string is shown once and never stored."""
    return KEYS.new(key_id)


def parse_key(value: str) -> ParsedKey | None:
    """Split a key into id and secret; None when its shape or checksum is wrong."""
    return KEYS.parse(value)
