"""The embedded identity store: one SQLite file in WAL mode, with versioned migrations.

SQLite calls are blocking, so they run on one dedicated thread; the event loop only awaits
them. ``synchronous=FULL`` makes every committed change durable before the call returns.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from authgate.errors import Conflict, StoreUnavailable
from authgate.identity.model import ApiKey, Principal, Snapshot

T = TypeVar("T")

MIGRATIONS: tuple[str, ...] = (
    # 1: principals and keys
    """
    CREATE TABLE principals (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        tier INTEGER NOT NULL CHECK (tier BETWEEN 0 AND 5),
        scopes TEXT NOT NULL,
        disabled INTEGER NOT NULL DEFAULT 0,
        elevated_tier INTEGER,
        elevated_until_ns INTEGER,
        password_hash TEXT,
        created_ns INTEGER NOT NULL
    );
    CREATE TABLE api_keys (
        key_id TEXT PRIMARY KEY,
        principal_id TEXT NOT NULL REFERENCES principals(id),
        secret_hash BLOB NOT NULL,
        name TEXT NOT NULL,
        tier INTEGER,
        scopes TEXT,
        created_ns INTEGER NOT NULL,
        expires_ns INTEGER,
        revoked_ns INTEGER,
        replaced_by TEXT
    );
    CREATE INDEX api_keys_principal ON api_keys(principal_id);
    """,
)

_PRINCIPAL_COLS = (
    "id, name, tier, scopes, disabled, elevated_tier, elevated_until_ns, password_hash, created_ns"
)
_KEY_COLS = (
    "key_id, principal_id, secret_hash, name, tier, scopes, created_ns, expires_ns, "
    "revoked_ns, replaced_by"
)


def _scopes_out(scopes: frozenset[str] | None) -> str | None:
    return None if scopes is None else json.dumps(sorted(scopes))


def _scopes_in(text: str | None) -> frozenset[str] | None:
    return None if text is None else frozenset(json.loads(text))


class SqliteIdentityStore:
    """IdentityStore over a SQLite file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="authgate-sqlite")

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def call() -> T:
            if self._db is None:
                raise StoreUnavailable("the identity store is not open")
            try:
                return fn(self._db)
            except sqlite3.IntegrityError as exc:
                raise Conflict(f"conflicts with stored data: {exc}") from None
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"identity store {self.path}: {exc}") from None

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
                _migrate(db)
            except (sqlite3.Error, OSError) as exc:
                raise StoreUnavailable(f"identity store {self.path}: {exc}") from None
            return db

        self._db = await asyncio.get_running_loop().run_in_executor(self._thread, connect)

    async def close(self) -> None:
        """Close the file and the worker thread."""
        if self._db is not None:
            db, self._db = self._db, None
            await asyncio.get_running_loop().run_in_executor(self._thread, db.close)
        self._thread.shutdown(wait=True)

    async def load(self) -> Snapshot:
        """Every principal and key."""

        def load(db: sqlite3.Connection) -> Snapshot:
            principals = [
                Principal(
                    id=r[0],
                    name=r[1],
                    tier=r[2],
                    scopes=frozenset(json.loads(r[3])),
                    disabled=bool(r[4]),
                    elevated_tier=r[5],
                    elevated_until_ns=r[6],
                    password_hash=r[7],
                    created_ns=r[8],
                )
                for r in db.execute(f"SELECT {_PRINCIPAL_COLS} FROM principals")  # noqa: S608
            ]
            keys = [
                ApiKey(
                    key_id=r[0],
                    principal_id=r[1],
                    secret_hash=bytes(r[2]),
                    name=r[3],
                    tier=r[4],
                    scopes=_scopes_in(r[5]),
                    created_ns=r[6],
                    expires_ns=r[7],
                    revoked_ns=r[8],
                    replaced_by=r[9],
                )
                for r in db.execute(f"SELECT {_KEY_COLS} FROM api_keys")  # noqa: S608
            ]
            return Snapshot(principals, keys)

        return await self._run(load)

    async def put_principal(self, principal: Principal) -> None:
        """Insert or replace a principal, durably."""
        p = principal
        row: tuple[Any, ...] = (
            p.id,
            p.name,
            p.tier,
            json.dumps(sorted(p.scopes)),
            int(p.disabled),
            p.elevated_tier,
            p.elevated_until_ns,
            p.password_hash,
            p.created_ns,
        )

        def put(db: sqlite3.Connection) -> None:
            with _transaction(db):
                db.execute(
                    f"INSERT INTO principals ({_PRINCIPAL_COLS}) VALUES (?,?,?,?,?,?,?,?,?) "  # noqa: S608
                    "ON CONFLICT(id) DO UPDATE SET name=excluded.name, tier=excluded.tier, "
                    "scopes=excluded.scopes, disabled=excluded.disabled, "
                    "elevated_tier=excluded.elevated_tier, "
                    "elevated_until_ns=excluded.elevated_until_ns, "
                    "password_hash=excluded.password_hash",
                    row,
                )

        await self._run(put)

    async def put_keys(self, keys: Sequence[ApiKey]) -> None:
        """Insert or replace keys in one transaction, durably."""
        rows = [
            (
                k.key_id,
                k.principal_id,
                k.secret_hash,
                k.name,
                k.tier,
                _scopes_out(k.scopes),
                k.created_ns,
                k.expires_ns,
                k.revoked_ns,
                k.replaced_by,
            )
            for k in keys
        ]

        def put(db: sqlite3.Connection) -> None:
            with _transaction(db):
                db.executemany(
                    f"INSERT INTO api_keys ({_KEY_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?) "  # noqa: S608
                    "ON CONFLICT(key_id) DO UPDATE SET name=excluded.name, "
                    "tier=excluded.tier, scopes=excluded.scopes, "
                    "expires_ns=excluded.expires_ns, revoked_ns=excluded.revoked_ns, "
                    "replaced_by=excluded.replaced_by",
                    rows,
                )

        await self._run(put)

    async def version(self) -> int:
        """SQLite's ``data_version``: it changes when another connection commits."""
        return await self._run(lambda db: int(db.execute("PRAGMA data_version").fetchone()[0]))


class _transaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on error (autocommit connection)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *_: object) -> None:
        self.db.execute("ROLLBACK" if exc_type is not None else "COMMIT")


def schema_version(db: sqlite3.Connection) -> int:
    """The migration level of an open database."""
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def _migrate(db: sqlite3.Connection) -> None:
    version = schema_version(db)
    if version > len(MIGRATIONS):
        raise StoreUnavailable(
            f"identity store schema {version} is newer than this authgate ({len(MIGRATIONS)})"
        )
    for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
        db.execute("BEGIN IMMEDIATE")
        try:
            for statement in filter(str.strip, script.split(";")):
                db.execute(statement)
            db.execute(f"PRAGMA user_version = {number}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
