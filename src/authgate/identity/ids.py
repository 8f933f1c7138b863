"""Principal ids: a type prefix and a time-sortable random part.

``usr_01JEXAMPLE...``: the part after the prefix is 26 characters of Crockford base32 (as in
ULID): 48 bits of milliseconds since the epoch, then 80 random bits. Ids of one kind sort by
creation time as strings.
"""

from __future__ import annotations

import re
import secrets
from enum import StrEnum

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


class Kind(StrEnum):
    """What a principal is; the id prefix says it."""

    USER = "usr"
    AGENT = "agt"
    SERVICE = "svc"
    SYSTEM = "sys"


_ID = re.compile(r"(usr|agt|svc|sys)_[0-9A-HJKMNP-TV-Z]{26}")


def new_principal_id(kind: Kind, now_ns: int) -> str:
    """Return a fresh id for ``kind`` created at ``now_ns``."""
    millis = (now_ns // 1_000_000) & ((1 << 48) - 1)
    value = (millis << 80) | secrets.randbits(80)
    return f"{kind.value}_{encode_base32(value, 26)}"


def encode_base32(value: int, width: int) -> str:
    """Encode a non-negative integer as ``width`` Crockford base32 characters."""
    out = []
    for _ in range(width):
        out.append(CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(out))


def is_principal_id(value: str) -> bool:
    """True when ``value`` has the shape of a principal id."""
    return _ID.fullmatch(value) is not None


def kind_of(principal_id: str) -> Kind:
    """The kind named by an id's prefix; ValueError when it has none."""
    return Kind(principal_id[:3])
