"""API key format (DESIGN.md §4): a fixed prefix, a public key id, a secret and a checksum.

::

    agk_7n3kq0v9x2mb_Xo4C1v6l9ZcQ0eR8yT2uW5aB3dF7gH1jbdf1caf5
    └┬┘ └────┬─────┘ └──────────────┬───────────────┘└───┬───┘
   prefix  key id:          secret: 32 chars base62   checksum: CRC-32 of everything
           12 chars         (190 bits)                before it, 8 lower-case hex digits
           base32, public

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
import re
import secrets
import zlib
from typing import NamedTuple

PREFIX = "agk_"
KEY_ID_LEN = 12
SECRET_LEN = 32
CHECKSUM_LEN = 8
KEY_LEN = len(PREFIX) + KEY_ID_LEN + 1 + SECRET_LEN + CHECKSUM_LEN
BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
KEY_ID_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"

_SHAPE = re.compile(r"agk_([0-9a-hjkmnp-tv-z]{12})_([0-9A-Za-z]{32})([0-9a-f]{8})")
_KEY_ID = re.compile(r"[0-9a-hjkmnp-tv-z]{12}")


class ParsedKey(NamedTuple):
    """The parts of a well-formed key."""

    key_id: str
    secret: str


def _checksum(body: str) -> str:
    # Hex, not base62: formatting and comparing stays in C (a base62 loop cost ~2 µs here).
    return format(zlib.crc32(body.encode("ascii")), "08x")


def new_key_id() -> str:
    """A fresh random public key id."""
    return "".join(secrets.choice(KEY_ID_ALPHABET) for _ in range(KEY_ID_LEN))


def new_key(key_id: str | None = None) -> tuple[str, ParsedKey]:
    """Return a new key string and its parts. The string is shown once and never stored."""
    kid = key_id or new_key_id()
    secret = "".join(secrets.choice(BASE62) for _ in range(SECRET_LEN))
    body = f"{PREFIX}{kid}_{secret}"
    return body + _checksum(body), ParsedKey(kid, secret)


def parse_key(value: str) -> ParsedKey | None:
    """Split a key into id and secret; None when its shape or checksum is wrong."""
    match = _SHAPE.fullmatch(value)
    if match is None:
        return None
    if _checksum(value[:-CHECKSUM_LEN]) != match[3]:
        return None
    return ParsedKey(match[1], match[2])


def is_key_id(value: str) -> bool:
    """True when ``value`` has the shape of a public key id."""
    return _KEY_ID.fullmatch(value) is not None


def hash_secret(pepper: bytes, secret: str) -> bytes:
    """The stored form of a secret: HMAC-SHA256 keyed with the server pepper."""
    return hmac.digest(pepper, secret.encode("ascii"), "sha256")


def secret_matches(pepper: bytes, secret: str, stored: bytes) -> bool:
    """Constant-time check of ``secret`` against its stored hash."""
    return hmac.compare_digest(hmac.digest(pepper, secret.encode("ascii"), "sha256"), stored)
