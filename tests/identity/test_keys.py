"""The API key format: vectors, round trips, and the checksum catching every typo."""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from authgate.identity import keys
from authgate.identity.keys import hash_secret, new_key, parse_key, secret_matches

VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).parent.parent / "vectors" / "api_keys.json").read_text()
)
PEPPER = b"p" * 32


def test_valid_vectors_parse_to_their_parts() -> None:
    for vector in VECTORS["valid"]:
        parsed = parse_key(vector["key"])
        assert parsed is not None
        assert (vector["key_id"], vector["secret"]) == (parsed.key_id, parsed.secret)
        body = vector["key"][:-8]
        assert vector["crc32"] == zlib.crc32(body.encode())
        assert vector["crc32"] == int(vector["key"][-8:], 16)


def test_invalid_vectors_are_rejected() -> None:
    for vector in VECTORS["invalid"]:
        assert parse_key(vector["key"]) is None, vector["why"]


def test_new_key_has_the_documented_shape_and_entropy() -> None:
    raw, parts = new_key()
    assert keys.KEY_LEN == len(raw) == 57
    assert raw.startswith("agk_")
    assert keys.is_key_id(parts.key_id)
    # 32 base62 characters carry 32 * log2(62) ≈ 190.5 bits, above the 160 required.
    assert len(parts.secret) * 5.95 > 160
    assert parts == parse_key(raw)


@given(st.data())
def test_any_single_character_change_is_rejected(data: st.DataObject) -> None:
    raw, _ = new_key()
    position = data.draw(st.integers(0, len(raw) - 1))
    replacement = data.draw(st.characters(codec="utf-8").filter(lambda c: c != raw[position]))
    mutated = raw[:position] + replacement + raw[position + 1 :]
    assert parse_key(mutated) is None


@given(st.text(max_size=80))
def test_arbitrary_strings_never_parse_unless_checksummed(text: str) -> None:
    parsed = parse_key(text)
    if parsed is not None:  # only possible for a string with a correct checksum
        assert zlib.crc32(text[:-6].encode()) == int(
            sum(keys.BASE62.index(c) * 62**i for i, c in enumerate(reversed(text[-6:])))
        )


def test_secret_hash_is_keyed_and_constant_time_compared() -> None:
    _, parts = new_key()
    stored = hash_secret(PEPPER, parts.secret)
    assert parts.secret.encode() not in stored
    assert secret_matches(PEPPER, parts.secret, stored)
    assert not secret_matches(b"q" * 32, parts.secret, stored)
    other = "x" if parts.secret[-1] != "x" else "y"
    assert not secret_matches(PEPPER, parts.secret[:-1] + other, stored)
