"""One SQLite file in WAL mode with versioned migrations: what the embedded identity and
handoff stores are built on. Two ways to talk to it:

- threaded (the identity store): every call runs on one dedicated thread and the event loop
  awaits it; ``synchronous=FULL`` makes each commit durable (fsynced) before it returns.
  Right for rare writes that must survive a power cut.
- inline (the handoff store, written at request rate): calls run on the event loop itself.
  A hop to a thread and back costs ~30-60 µs of CPU plus GIL hand-offs, more than the SQLite
  work (~20-40 µs with the pages cached), so inline is both faster and steadier. It is paired
  with ``synchronous=NORMAL``: a commit is in the WAL, in the OS's hands, before the call
  returns — it survives the process being killed, not a power cut. WAL checkpoints (the
  fsyncs) run on the thread, off the loop, once a second; past 256 MiB of WAL the loop
  rewinds it (:meth:`SqliteFile.rewind`).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from authgate.errors import Conflict, StoreUnavailable

T = TypeVar("T")
RESTART_FRAMES = 65536  # WAL frames (4 KiB pages): 256 MiB, ~15 s of handoffs at 1,000/s


class SqliteFile:
    """A SQLite database file, and the thread that talks to it (threaded) or checkpoints it
    (inline)."""

    def __init__(
        self,
        path: Path,
        what: str,
        migrations: tuple[str, ...],
        *,
        inline: bool = False,
        synchronous: str = "FULL",
    ) -> None:
        self.inline = inline
        self.synchronous = synchronous
        self.path = path
        self.what = what
        self.migrations = migrations
        self._db: sqlite3.Connection | None = None
        self._thread = ThreadPoolExecutor(1, thread_name_prefix=f"authgate-{what.split()[0]}")
        self._checkpoints: asyncio.Task[None] | None = None
        self._side: sqlite3.Connection | None = None  # inline: the thread's own connection

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Call ``fn`` with the connection (on the database thread, or here when inline).
        Constraint violations become Conflict, any other database error StoreUnavailable."""
        if self.inline:
            return self._call(self._db, fn)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, lambda: self._call(self._db, fn))

    async def run_aside(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Call ``fn`` on the thread, off the event loop, even when inline (with the
        thread's own connection): for housekeeping that may take a while."""
        if not self.inline:
            return await self.run(fn)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, lambda: self._call(self._side, fn))

    def _call(self, db: sqlite3.Connection | None, fn: Callable[[sqlite3.Connection], T]) -> T:
        if db is None:
            raise StoreUnavailable(f"the {self.what} is not open")
        try:
            return fn(db)
        except sqlite3.IntegrityError as exc:
            raise Conflict(f"conflicts with stored data: {exc}") from None
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"{self.what} {self.path}: {exc}") from None

    async def open(self) -> None:
        """Open the file (creating it) and apply pending migrations."""

        def connect() -> sqlite3.Connection:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
                db.execute("PRAGMA journal_mode=WAL")
                db.execute(f"PRAGMA synchronous={self.synchronous}")
                db.execute("PRAGMA foreign_keys=ON")
                db.execute("PRAGMA busy_timeout=5000")
                if self.inline:
                    db.execute("PRAGMA wal_autocheckpoint=0")  # the thread checkpoints
                    db.execute(f"PRAGMA journal_size_limit={64 << 20}")  # kept after a rewind
                migrate(db, self.migrations, self.what)
            except (sqlite3.Error, OSError) as exc:
                raise StoreUnavailable(f"{self.what} {self.path}: {exc}") from None
            return db

        def side() -> sqlite3.Connection:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA busy_timeout=5000")
            return db

        loop = asyncio.get_running_loop()
        self._db = await loop.run_in_executor(self._thread, connect)
        if self.inline:
            self._side = await loop.run_in_executor(self._thread, side)
            self._checkpoints = loop.create_task(self._checkpointing())

    async def _checkpointing(self, interval_s: float = 1.0) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                frames, _ = await self.checkpoint()
            except StoreUnavailable:  # busy or closing: the next round tries again
                continue
            if frames > RESTART_FRAMES:
                self.rewind()

    async def checkpoint(self) -> tuple[int, int]:
        """Copy the WAL into the database (and fsync it) from the thread, off the loop;
        returns the WAL's frames and how many are in the database now. PASSIVE never
        waits for the loop's connection, nor makes it wait."""

        def checkpoint(db: sqlite3.Connection) -> tuple[int, int]:
            _, frames, done = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            return int(frames), int(done)

        return await self.run_aside(checkpoint)

    def rewind(self) -> bool:
        """Start the WAL over (a RESTART checkpoint on the loop's connection); whether it
        did. Under a steady stream of writes the thread's checkpoints copy the WAL but it
        is never rewound, and grows without end. Run just after one of them, this has only
        the last few frames left to copy, and one fsync: a pause of the loop of one to a
        few tens of milliseconds on this machine's disk, once every ~15 s at 1,000
        handoffs/s, never at light load. It does not wait: if another process is reading,
        the next round tries again."""
        db = self._db
        if db is None:
            return False
        db.execute("PRAGMA busy_timeout=0")
        try:
            busy = db.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()[0]
        except sqlite3.Error:
            return False
        finally:
            db.execute("PRAGMA busy_timeout=5000")
        return not busy

    async def close(self) -> None:
        """Close the file and the thread (after a last checkpoint when inline)."""
        loop = asyncio.get_running_loop()
        if self._checkpoints is not None:
            self._checkpoints.cancel()
            await asyncio.gather(self._checkpoints, return_exceptions=True)
            self._checkpoints = None
        if self._side is not None:
            side, self._side = self._side, None
            await loop.run_in_executor(self._thread, side.close)
        if self._db is not None:
            db, self._db = self._db, None
            await loop.run_in_executor(self._thread, db.close)  # closing checkpoints the WAL
        self._thread.shutdown(wait=True)


class transaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on error (autocommit connection). IMMEDIATE
    takes the write lock at once, so a read-then-write inside is atomic across processes."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *_: object) -> None:
        self.db.execute("ROLLBACK" if exc_type is not None else "COMMIT")


def schema_version(db: sqlite3.Connection) -> int:
    """The migration level of an open database."""
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def migrate(db: sqlite3.Connection, migrations: tuple[str, ...], what: str = "database") -> None:
    """Apply the migrations past the database's level, each in its own transaction."""
    version = schema_version(db)
    if version > len(migrations):
        raise StoreUnavailable(
            f"{what} schema {version} is newer than this authgate ({len(migrations)})"
        )
    for number, script in enumerate(migrations[version:], start=version + 1):
        db.execute("BEGIN IMMEDIATE")
        try:
            for statement in filter(str.strip, script.split(";")):
                db.execute(statement)
            db.execute(f"PRAGMA user_version = {number}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
