"""The embedded identity store: one SQLite file (:mod:`authgate.sqlitedb`: WAL, its own
thread, every write durable before it returns) with versioned migrations."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from authgate.identity.model import ApiKey, Principal, Snapshot
from authgate.sqlitedb import SqliteFile, transaction

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
    # 2: a sealed TOTP seed per principal (second factor)
    """
    ALTER TABLE principals ADD COLUMN totp_sealed BLOB;
    """,
)

_PRINCIPAL_COLS = (
    "id, name, tier, scopes, disabled, elevated_tier, elevated_until_ns, password_hash, "
    "created_ns, totp_sealed"
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
        self._file = SqliteFile(path, "identity store", MIGRATIONS)
        self._run = self._file.run

    async def open(self) -> None:
        """Open the file (creating it) and apply pending migrations."""
        await self._file.open()

    async def close(self) -> None:
        """Close the file and the worker thread."""
        await self._file.close()

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
                    totp_sealed=None if r[9] is None else bytes(r[9]),
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
            p.totp_sealed,
        )

        def put(db: sqlite3.Connection) -> None:
            with transaction(db):
                db.execute(
                    f"INSERT INTO principals ({_PRINCIPAL_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?) "  # noqa: S608
                    "ON CONFLICT(id) DO UPDATE SET name=excluded.name, tier=excluded.tier, "
                    "scopes=excluded.scopes, disabled=excluded.disabled, "
                    "elevated_tier=excluded.elevated_tier, "
                    "elevated_until_ns=excluded.elevated_until_ns, "
                    "password_hash=excluded.password_hash, totp_sealed=excluded.totp_sealed",
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
            with transaction(db):
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
