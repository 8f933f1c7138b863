"""The canonical encoding of audit events: vectors, round trips, and strict parsing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from authgate.audit.event import AuditEvent, EventType, as_dict, decode, encode
from authgate.errors import InvalidRecord

VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).parent.parent / "vectors" / "audit_events.json").read_text()
)


def from_dict(view: dict[str, Any]) -> AuditEvent:
    fields = dict(view)
    for name in ("event_id", "client_hash", "user_agent_hash"):
        if fields[name] is not None:
            fields[name] = bytes.fromhex(fields[name])
    fields["type"] = EventType(fields["type"])
    return AuditEvent(*(fields[name] for name in VECTORS["fields"]))


def test_field_order_is_the_published_one() -> None:
    assert list(AuditEvent.__struct_fields__) == VECTORS["fields"]


@pytest.mark.parametrize("vector", VECTORS["vectors"])
def test_vectors_encode_and_decode(vector: dict[str, Any]) -> None:
    event = from_dict(vector["event"])
    assert encode(event).hex() == vector["canonical"]
    assert decode(bytes.fromhex(vector["canonical"])) == event
    # read back with a generic MessagePack decoder: an array in the documented order
    generic = msgspec.msgpack.decode(bytes.fromhex(vector["canonical"])[1:])
    assert len(generic) == len(VECTORS["fields"])
    assert generic[VECTORS["fields"].index("reason")] == vector["event"]["reason"]


texts = st.text(max_size=20)
optional_texts = st.none() | texts
small_ints = st.none() | st.integers(0, 2**40)
events = st.builds(
    AuditEvent,
    st.binary(min_size=16, max_size=16),
    st.integers(0, 2**63 - 1),
    st.sampled_from(list(EventType)),
    texts,
    texts,
    texts,
    optional_texts,
    optional_texts,
    st.none() | st.integers(0, 5),
    st.none() | st.integers(0, 5),
    optional_texts,
    optional_texts,
    optional_texts,
    st.none() | st.integers(100, 599),
    optional_texts,
    optional_texts,
    small_ints,
    st.none() | st.dictionaries(texts, texts, max_size=4),
    st.none() | st.binary(min_size=32, max_size=32),
    st.none() | st.binary(min_size=32, max_size=32),
)


@given(events)
def test_round_trip(event: AuditEvent) -> None:
    data = encode(event)
    assert decode(data) == event
    assert encode(decode(data)) == data
    assert set(as_dict(event)) == set(VECTORS["fields"])


@given(st.binary(max_size=200))
def test_arbitrary_bytes_are_either_canonical_or_refused(data: bytes) -> None:
    try:
        event = decode(data)
    except InvalidRecord:
        return
    assert encode(event) == data


def test_non_canonical_encodings_are_refused() -> None:
    event = from_dict(VECTORS["vectors"][2]["event"])
    canonical = encode(event)
    # the same values with details keys in insertion order instead of sorted
    unsorted = b"\x01" + msgspec.msgpack.encode(event)
    assert unsorted != canonical
    with pytest.raises(InvalidRecord, match="canonical"):
        decode(unsorted)
    with pytest.raises(InvalidRecord, match="version"):
        decode(b"\x02" + canonical[1:])
    with pytest.raises(InvalidRecord):
        decode(canonical[:-1])


def test_floats_cannot_enter_an_event() -> None:
    generic = msgspec.msgpack.decode(encode(from_dict(VECTORS["vectors"][0]["event"]))[1:])
    generic[16] = 7.0  # latency_us as a float
    with pytest.raises(InvalidRecord):
        decode(b"\x01" + msgspec.msgpack.encode(generic))
