"""A SQLite query index over a log's segments: derived data, rebuildable at any time.

:func:`update` indexes the records it has not seen yet (the index remembers how far it got);
:func:`rebuild` starts over. Queries filter by principal, event type, outcome, reason, time
range, request id and correlation id. Nothing here is trusted: the segments and checkpoints
are the record, and ``authgate audit verify`` checks them.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

from authgate.audit.event import as_dict, decode
from authgate.audit.merkle import leaf_hash
from authgate.audit.segment import ScanEnd, list_segments, scan

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    ts_ns INTEGER NOT NULL,
    type TEXT NOT NULL,
    action TEXT NOT NULL,
    outcome TEXT NOT NULL,
    reason TEXT NOT NULL,
    principal TEXT,
    key_id TEXT,
    route TEXT,
    method TEXT,
    path TEXT,
    status INTEGER,
    request_id TEXT,
    correlation_id TEXT,
    client_hash BLOB,
    leaf BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS events_principal ON events(principal, ts_ns);
CREATE INDEX IF NOT EXISTS events_type ON events(type, ts_ns);
CREATE INDEX IF NOT EXISTS events_ts ON events(ts_ns);
CREATE INDEX IF NOT EXISTS events_request ON events(request_id);
CREATE INDEX IF NOT EXISTS events_correlation ON events(correlation_id);
"""
COLUMNS = (
    "seq, ts_ns, type, action, outcome, reason, principal, key_id, route, method, path, "
    "status, request_id, correlation_id, client_hash, leaf"
)


class Query(NamedTuple):
    """Filters; None means any."""

    principal: str | None = None
    type: str | None = None
    outcome: str | None = None
    reason: str | None = None
    request_id: str | None = None
    correlation_id: str | None = None
    client_hash: bytes | None = None
    since_ns: int | None = None
    until_ns: int | None = None
    limit: int = 100


def index_path(directory: Path) -> Path:
    """Where a log's index lives."""
    return directory / "index.sqlite"


def connect(directory: Path) -> sqlite3.Connection:
    """Open (creating) the index of the log in ``directory``."""
    db = sqlite3.connect(index_path(directory))
    db.executescript(SCHEMA)
    return db


def _records(directory: Path, start: int) -> Iterator[tuple[int, bytes]]:
    segments = list_segments(directory / "segments")
    for i, path in enumerate(segments):
        following = segments[i + 1] if i + 1 < len(segments) else None
        if following is not None and int(following.stem) <= start:
            continue  # everything in this segment is indexed already
        for item in scan(path, last=following is None):
            if not isinstance(item, ScanEnd) and item.seq >= start:
                yield item.seq, item.payload


def update(directory: Path) -> int:
    """Index records not yet indexed; returns how many were added."""
    db = connect(directory)
    try:
        row = db.execute("SELECT value FROM meta WHERE key = 'indexed'").fetchone()
        start = int(row[0]) if row else 0
        rows = []
        for seq, payload in _records(directory, start):
            e = decode(payload)
            rows.append(
                (
                    seq, e.ts_ns, e.type, e.action, e.outcome, e.reason, e.principal,
                    e.key_id, e.route, e.method, e.path, e.status, e.request_id,
                    e.correlation_id, e.client_hash, leaf_hash(payload),
                )
            )  # fmt: skip
        with db:
            db.executemany(f"INSERT INTO events ({COLUMNS}) VALUES ({','.join('?' * 16)})", rows)  # noqa: S608
            db.execute(
                "INSERT INTO meta (key, value) VALUES ('indexed', ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (rows[-1][0] + 1 if rows else start,),
            )
        return len(rows)
    finally:
        db.close()


def rebuild(directory: Path) -> int:
    """Drop the index and build it again from the segments."""
    index_path(directory).unlink(missing_ok=True)
    return update(directory)


def query(directory: Path, q: Query) -> list[dict[str, Any]]:
    """Events matching ``q``, oldest first, after bringing the index up to date."""
    update(directory)
    clauses, params = [], []
    for column in ("principal", "type", "outcome", "reason", "request_id", "correlation_id"):
        value = getattr(q, column)
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    if q.client_hash is not None:
        clauses.append("client_hash = ?")
        params.append(q.client_hash)
    if q.since_ns is not None:
        clauses.append("ts_ns >= ?")
        params.append(q.since_ns)
    if q.until_ns is not None:
        clauses.append("ts_ns < ?")
        params.append(q.until_ns)
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    db = connect(directory)
    try:
        seqs = [
            row[0]
            for row in db.execute(
                f"SELECT seq FROM events {where} ORDER BY seq LIMIT ?",  # noqa: S608 (fixed columns)
                (*params, q.limit),
            )
        ]
    finally:
        db.close()
    wanted = set(seqs)
    out = []
    for seq, payload in _records(directory, min(seqs) if seqs else 0):
        if seq in wanted:
            out.append({"seq": seq, **as_dict(decode(payload))})
            if len(out) == len(wanted):
                break
    return out


def logs_under(directory: Path) -> list[Path]:
    """The logs ``directory`` holds: itself if it is one, else its sub-directories that are
    (``data/audit`` holds one log per worker: w0, w1, ...)."""
    if (directory / "segments").is_dir():
        return [directory]
    return sorted(p for p in directory.iterdir() if (p / "segments").is_dir())


def query_all(directory: Path, q: Query) -> list[dict[str, Any]]:
    """:func:`query` over every log under ``directory``, merged oldest first; each event
    names its ``log`` when there is more than one."""
    logs = logs_under(directory)
    if logs == [directory]:
        return query(directory, q)
    merged = [{"log": log.name, **row} for log in logs for row in query(log, q)]
    merged.sort(key=lambda row: (row["ts_ns"], row["log"], row["seq"]))
    return merged[: q.limit]


def leaves(directory: Path, first: int = 0) -> list[bytes]:
    """The leaf hashes of records ``first`` onwards, in order (for proofs without re-hashing
    the log; a pruned log passes the first record it still holds)."""
    update(directory)
    db = connect(directory)
    try:
        rows = db.execute("SELECT leaf FROM events WHERE seq >= ? ORDER BY seq", (first,))
        return [bytes(row[0]) for row in rows]
    finally:
        db.close()
