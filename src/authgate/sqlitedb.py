"""One SQLite file in WAL mode, on a thread of its own, with versioned migrations: what the
embedded identity and handoff stores are built on.

SQLite calls block, so they run on one dedicated thread and the event loop only awaits them.
``synchronous=FULL`` makes every committed change durable before the call returns.
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


class SqliteFile:
    """A SQLite database file and the thread that talks to it."""

    def __init__(self, path: Path, what: str, migrations: tuple[str, ...]) -> None:
        self.path = path
        self.what = what
        self.migrations = migrations
        self._db: sqlite3.Connection | None = None
        self._thread = ThreadPoolExecutor(1, thread_name_prefix=f"authgate-{what.split()[0]}")

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Call ``fn`` with the connection on the database thread. Constraint violations
        become Conflict, any other database error StoreUnavailable."""

        def call() -> T:
            if self._db is None:
                raise StoreUnavailable(f"the {self.what} is not open")
            try:
                return fn(self._db)
            except sqlite3.IntegrityError as exc:
                raise Conflict(f"conflicts with stored data: {exc}") from None
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"{self.what} {self.path}: {exc}") from None

        return await asyncio.get_running_loop().run_in_executor(self._thread, call)

    async def open(self) -> None:
        """Open the file (creating it) and apply pending migrations."""

        def connect() -> sqlite3.Connection:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=FULL")
                db.execute("PRAGMA foreign_keys=ON")
                db.execute("PRAGMA busy_timeout=5000")
                migrate(db, self.migrations, self.what)
            except (sqlite3.Error, OSError) as exc:
                raise StoreUnavailable(f"{self.what} {self.path}: {exc}") from None
            return db

        self._db = await asyncio.get_running_loop().run_in_executor(self._thread, connect)

    async def close(self) -> None:
        """Close the file and the thread."""
        if self._db is not None:
            db, self._db = self._db, None
            await asyncio.get_running_loop().run_in_executor(self._thread, db.close)
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
