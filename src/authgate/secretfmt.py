"""The shape of authgate's secret strings: API keys (``agk_``) and handoff tickets
(``agh_``) (DESIGN.md §4).

::

    agk_7n3kq0v9x2mb_Xo4C1v6l9ZcQ0eR8yT2uW5aB3dF7gH1jbdf1caf5
    └┬┘ └────┬─────┘ └──────────────┬───────────────┘└───┬───┘
   prefix  public id:       secret: 32 chars base62   checksum: CRC-32 of everything
           12 chars         (190 bits)                before it, 8 lower-case hex digits
           base32

(That key is a published test vector in tests/vectors/api_keys.json, not a credential.)

The checksum lets a typo or a foreign string be rejected before any lookup, and the fixed
shape lets secret scanners match ``agk_[0-9a-z]{12}_[0-9A-Za-z]{32}[0-9a-f]{8}``. CRC-32
detects every error confined to 32 consecutive bits, so every single-character change is
caught.

Only ``HMAC-SHA256(pepper, secret)`` is stored; :func:`secret_matches` compares in constant
time.
"""

from __future__ import annotations

import hmac
import os
import re
import zlib
from typing import NamedTuple

ID_LEN = 12
SECRET_LEN = 32
CHECKSUM_LEN = 8
BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
ID_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"

_ID = re.compile(r"[0-9a-hjkmnp-tv-z]{12}")


class Parsed(NamedTuple):
    """The parts of a well-formed secret string."""

    key_id: str
    secret: str


def _checksum(body: str) -> str:
    # Hex, not base62: formatting and comparing stays in C (a base62 loop cost ~2 µs here).
    return format(zlib.crc32(body.encode("ascii")), "08x")


def _table(alphabet: str) -> tuple[bytes, bytes]:
    """A bytes.translate table mapping each byte to a character of ``alphabet``, and the
    bytes to drop so that every character stays equally likely (rejection sampling)."""
    keep = 256 - 256 % len(alphabet)
    table = bytes(ord(alphabet[b % len(alphabet)]) if b < keep else 0 for b in range(256))
    return table, bytes(range(keep, 256))


_ID_TABLE = _table(ID_ALPHABET)
_SECRET_TABLE = _table(BASE62)


def _random_string(table: tuple[bytes, bytes], width: int) -> str:
    """``width`` uniformly random characters: random bytes, the biased tail dropped, the
    rest translated in C (~1 µs; a ``secrets.choice`` per character costs ~60)."""
    out = b""
    while len(out) < width:
        out += os.urandom(width + 16).translate(table[0], table[1])
    return out[:width].decode("ascii")


def new_id() -> str:
    """A fresh random public id."""
    return _random_string(_ID_TABLE, ID_LEN)


def is_id(value: str) -> bool:
    """True when ``value`` has the shape of a public id."""
    return _ID.fullmatch(value) is not None


class SecretFormat:
    """One kind of secret string, told apart by its prefix."""

    def __init__(self, prefix: str) -> None:
        if not re.fullmatch(r"[a-z]{3}_", prefix):
            raise ValueError("a prefix is three lower-case letters and '_'")
        self.prefix = prefix
        self.length = len(prefix) + ID_LEN + 1 + SECRET_LEN + CHECKSUM_LEN
        self._shape = re.compile(
            prefix + r"([0-9a-hjkmnp-tv-z]{12})_([0-9A-Za-z]{32})([0-9a-f]{8})"
        )

    def new(self, key_id: str | None = None) -> tuple[str, Parsed]:
        """A new string and its parts. The string is shown once and never stored."""
        kid = key_id or new_id()
        secret = _random_string(_SECRET_TABLE, SECRET_LEN)
        body = f"{self.prefix}{kid}_{secret}"
        return body + _checksum(body), Parsed(kid, secret)

    def parse(self, value: str) -> Parsed | None:
        """Split a string into id and secret; None when its shape or checksum is wrong."""
        match = self._shape.fullmatch(value)
        if match is None:
            return None
        if _checksum(value[:-CHECKSUM_LEN]) != match[3]:
            return None
        return Parsed(match[1], match[2])


def hash_secret(pepper: bytes, secret: str) -> bytes:
    """The stored form of a secret: HMAC-SHA256 keyed with the server pepper."""
    return hmac.digest(pepper, secret.encode("ascii"), "sha256")


def secret_matches(pepper: bytes, secret: str, stored: bytes) -> bool:
    """Constant-time check of ``secret`` against its stored hash."""
    return hmac.compare_digest(hmac.digest(pepper, secret.encode("ascii"), "sha256"), stored)
