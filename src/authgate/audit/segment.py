"""Segment files: the ledger's records on disk, framed so a torn tail is detectable.

A segment starts with a 16-byte header — ``b"AGSEG\\x01"``, two reserved zero bytes, and the
sequence number of its first record (u64, big-endian) — followed by records framed as
``length (u32 BE) || bytes || CRC-32 of bytes (u32 BE)``. Files are named after their first
sequence number, so their order is their names' order.

:func:`scan` reads a segment back. A record cut short at the end of the *last* segment is a
torn write (a crash mid-append) and is reported for truncation; anything else that does not
frame or check is corruption, reported with the byte offset where it starts.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from authgate.errors import InvalidRecord

MAGIC = b"AGSEG\x01\x00\x00"
HEADER = struct.Struct(">8sQ")
FRAME = struct.Struct(">I")
MAX_RECORD = 1 << 20
SUFFIX = ".seg"


def segment_name(first_seq: int) -> str:
    """The file name of the segment whose first record is ``first_seq``."""
    return f"{first_seq:020d}{SUFFIX}"


def list_segments(directory: Path) -> list[Path]:
    """Segment files in order."""
    return sorted(p for p in directory.glob(f"*{SUFFIX}") if p.stem.isdigit())


def frame(payload: bytes) -> bytes:
    """One framed record."""
    return FRAME.pack(len(payload)) + payload + FRAME.pack(zlib.crc32(payload))


def header(first_seq: int) -> bytes:
    """A segment header."""
    return HEADER.pack(MAGIC, first_seq)


class Record(NamedTuple):
    """A record read back: its sequence number, where it starts, and its bytes."""

    seq: int
    offset: int
    payload: bytes


class ScanEnd(NamedTuple):
    """Where a scan stopped: the end of the good records and whether a torn tail followed."""

    good_bytes: int
    torn: bool


def scan(path: Path, *, last: bool) -> Iterator[Record | ScanEnd]:
    """Yield the records of a segment, then a ScanEnd. InvalidRecord on corruption (and on
    a torn tail of a segment that is not the last)."""
    data = path.read_bytes()
    if len(data) < HEADER.size:
        if last:
            yield ScanEnd(0, True)
            return
        raise InvalidRecord(f"{path.name}: truncated header")
    magic, seq = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise InvalidRecord(f"{path.name}: not a segment")
    if path.name != segment_name(seq):
        raise InvalidRecord(f"{path.name}: header says its first record is {seq}")
    offset = HEADER.size
    end = len(data)
    while offset < end:
        if end - offset < FRAME.size:
            break
        (length,) = FRAME.unpack_from(data, offset)
        stop = offset + FRAME.size + length + FRAME.size
        if length > MAX_RECORD:
            if last and stop > end:
                break
            raise InvalidRecord(f"{path.name}@{offset}: record {seq} has length {length}")
        if stop > end:
            break
        payload = data[offset + FRAME.size : offset + FRAME.size + length]
        (crc,) = FRAME.unpack_from(data, stop - FRAME.size)
        if crc != zlib.crc32(payload):
            if last and stop == end:  # the final record itself is damaged: a torn write
                break
            raise InvalidRecord(f"{path.name}@{offset}: record {seq} fails its CRC")
        yield Record(seq, offset, payload)
        seq += 1
        offset = stop
    if offset < end and not last:
        raise InvalidRecord(f"{path.name}@{offset}: record {seq} is cut short")
    yield ScanEnd(offset, offset < end)


def fsync_directory(directory: Path) -> None:
    """Make a directory's entries (a new or renamed file) durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
