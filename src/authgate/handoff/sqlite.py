"""The embedded handoff store: a SQLite file of its own (tickets are written at request
rate, identities rarely), talked to inline on the event loop (see :mod:`authgate.sqlitedb`).

Durability: by default a create or redeem is in the WAL before it is answered, which
survives the process being killed (kill -9, a crash, a restart) but not a power cut of the
machine; with ``fsync`` each is fsynced first, which survives that too and costs an fsync
(0.1-1 ms here) on the event loop per operation.

Exactly once holds across processes too: ``claim`` marks a ticket with an UPDATE that
applies only while it is unredeemed, and SQLite runs each statement atomically under its
write lock, so of any number of workers redeeming the same ticket one changes the row.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from authgate.errors import HandoffRefused, Reason
from authgate.handoff.model import Handoff
from authgate.sqlitedb import SqliteFile

MIGRATIONS: tuple[str, ...] = (
    # 1: tickets
    """
    CREATE TABLE handoffs (
        ticket_id TEXT PRIMARY KEY,
        secret_hash BLOB NOT NULL,
        subject TEXT NOT NULL,
        creator TEXT NOT NULL,
        recipient TEXT NOT NULL,
        scopes TEXT NOT NULL,
        tier INTEGER NOT NULL,
        correlation_id TEXT NOT NULL,
        sealed BLOB NOT NULL,
        created_ns INTEGER NOT NULL,
        expires_ns INTEGER NOT NULL,
        akid TEXT,
        act TEXT,
        redeemed_ns INTEGER,
        redeemed_by TEXT
    );
    CREATE INDEX handoffs_expiry ON handoffs(expires_ns);
    """,
)

PURGE_BATCH = 1000
_COLS = (
    "ticket_id, secret_hash, subject, creator, recipient, scopes, tier, correlation_id, "
    "sealed, created_ns, expires_ns, akid, act, redeemed_ns, redeemed_by"
)
_SELECT = f"SELECT {_COLS} FROM handoffs WHERE ticket_id = ?"  # noqa: S608


def _row(h: Handoff) -> tuple[Any, ...]:
    return (
        h.ticket_id,
        h.secret_hash,
        h.subject,
        h.creator,
        h.to,
        json.dumps(sorted(h.scopes)),
        h.tier,
        h.correlation_id,
        h.sealed,
        h.created_ns,
        h.expires_ns,
        h.akid,
        None if h.act is None else json.dumps(h.act, sort_keys=True),
        h.redeemed_ns,
        h.redeemed_by,
    )


def _handoff(r: tuple[Any, ...]) -> Handoff:
    return Handoff(
        ticket_id=r[0],
        secret_hash=bytes(r[1]),
        subject=r[2],
        creator=r[3],
        to=r[4],
        scopes=frozenset(json.loads(r[5])),
        tier=r[6],
        correlation_id=r[7],
        sealed=bytes(r[8]),
        created_ns=r[9],
        expires_ns=r[10],
        akid=r[11],
        act=None if r[12] is None else json.loads(r[12]),
        redeemed_ns=r[13],
        redeemed_by=r[14],
    )


class SqliteHandoffStore:
    """HandoffStore over a SQLite file."""

    def __init__(self, path: Path, *, fsync: bool = False) -> None:
        self.path = path
        self._file = SqliteFile(
            path,
            "handoff store",
            MIGRATIONS,
            inline=True,
            synchronous="FULL" if fsync else "NORMAL",
        )

    async def open(self) -> None:
        """Open the file (creating it) and apply pending migrations."""
        await self._file.open()

    async def close(self) -> None:
        """Close the file and its thread."""
        await self._file.close()

    async def put(self, handoff: Handoff) -> None:
        """Insert a new ticket, durably (a duplicate id is a Conflict)."""
        row = _row(handoff)

        def put(db: sqlite3.Connection) -> None:
            db.execute(
                f"INSERT INTO handoffs ({_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",  # noqa: S608
                row,
            )

        await self._file.run(put)

    async def claim(
        self, ticket_id: str, by: str, now_ns: int, check: Callable[[Handoff], None]
    ) -> Handoff | None:
        """Read and check, then mark with one conditional UPDATE: SQLite runs each statement
        atomically (across processes too), so of concurrent claims exactly one changes the
        row; a loser is told the ticket was redeemed."""

        def claim(db: sqlite3.Connection) -> Handoff | None:
            found = db.execute(_SELECT, (ticket_id,)).fetchone()
            if found is None:
                return None
            handoff = _handoff(found)
            check(handoff)
            marked = db.execute(
                "UPDATE handoffs SET redeemed_ns = ?, redeemed_by = ?, sealed = X'' "
                "WHERE ticket_id = ? AND redeemed_ns IS NULL",
                (now_ns, by, ticket_id),
            ).rowcount
            if marked != 1:
                raise HandoffRefused(Reason.TICKET_REDEEMED, ticket=handoff.about())
            return handoff

        return await self._file.run(claim)

    async def purge(self, before_ns: int) -> int:
        """Delete tickets that expired before ``before_ns``, on the store's thread and in
        batches, so that the event loop's own writes wait for one short batch at most."""

        def purge(db: sqlite3.Connection) -> int:
            total = 0
            while True:
                deleted = db.execute(
                    "DELETE FROM handoffs WHERE rowid IN (SELECT rowid FROM handoffs "
                    "WHERE expires_ns < ? LIMIT ?)",
                    (before_ns, PURGE_BATCH),
                ).rowcount
                total += deleted
                if deleted < PURGE_BATCH:
                    return total

        return await self._file.run_aside(purge)
