"""The SQLite file helper: inline mode's checkpoints and rewinds keep the WAL bounded.

(Under a steady stream of writes the thread's PASSIVE checkpoints never leave the WAL
fully copied at the moment of the next write, so it is never rewound by itself: at 1,000
handoffs/s it grew by 18 MB/s without end. That needs real concurrency to show, and is
measured by ``scripts/bench handoff``; here, the rewind itself.)"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from authgate.sqlitedb import SqliteFile

SCHEMA = ("CREATE TABLE t (k INTEGER PRIMARY KEY, v BLOB NOT NULL)",)


async def write(file: SqliteFile, start: int, n: int) -> None:
    def put(db: sqlite3.Connection) -> None:
        for k in range(start, start + n):
            db.execute("INSERT INTO t (k, v) VALUES (?, ?)", (k, b"x" * 2000))

    await file.run(put)


async def test_a_rewind_after_a_checkpoint_starts_the_wal_over(tmp_path: Path) -> None:
    file = SqliteFile(tmp_path / "t.db", "test store", SCHEMA, inline=True, synchronous="NORMAL")
    await file.open()
    try:
        await write(file, 0, 500)
        frames, done = await file.checkpoint()
        assert frames >= 500
        assert done == frames  # nothing was writing meanwhile
        await write(file, 500, 10)
        assert file.rewind()
        await write(file, 510, 10)
        assert (await file.checkpoint())[0] < 50  # the next write started at the WAL's top
        count = await file.run(lambda db: db.execute("SELECT count(*) FROM t").fetchone()[0])
        assert count == 520
    finally:
        await file.close()
    assert not file.rewind()  # closed: nothing to do
