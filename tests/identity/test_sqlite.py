"""The SQLite store: durable across reopen, versioned schema, conflicts reported."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from authgate.errors import Conflict, StoreUnavailable
from authgate.identity.ids import Kind
from authgate.identity.model import Principal
from authgate.identity.service import IdentityService
from authgate.identity.sqlite import MIGRATIONS, SqliteIdentityStore
from authgate.testing import TEST_PEPPER, FakeClock, fast_passwords


async def service(path: Path, clock: FakeClock) -> IdentityService:
    svc = IdentityService(SqliteIdentityStore(path), TEST_PEPPER, clock, fast_passwords())
    await svc.start()
    return svc


async def test_everything_survives_a_restart(tmp_path: Path) -> None:
    clock = FakeClock()
    db = tmp_path / "id.db"
    first = await service(db, clock)
    p = await first.create_principal(Kind.USER, "alice", 2, ["chat"], password="pw")
    kept = await first.issue_key(p.id, name="laptop", tier=1, scopes=["chat"], ttl_s=600)
    gone = await first.issue_key(p.id)
    await first.revoke_key(gone.record.key_id)
    rotated = await first.rotate_key(kept.record.key_id, 60)
    await first.elevate(p.id, 4, 300)
    await first.close()

    second = await service(db, clock)
    try:
        assert first.directory.principals == second.directory.principals
        assert first.directory.keys == second.directory.keys
        now = clock.now_ns()
        who = second.directory.authenticate_key(rotated.key, now)
        assert (who.principal.name, who.tier) == ("alice", 1)
        assert (await second.login("alice", "pw", "10.0.0.1")).id == p.id
    finally:
        await second.close()


async def test_schema_is_versioned_and_wal(tmp_path: Path) -> None:
    db = tmp_path / "id.db"
    svc = await service(db, FakeClock())
    await svc.close()
    con = sqlite3.connect(db)
    try:
        assert len(MIGRATIONS) == con.execute("PRAGMA user_version").fetchone()[0]
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        con.close()


async def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "id.db"
    con = sqlite3.connect(db)
    con.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    con.close()
    store = SqliteIdentityStore(db)
    with pytest.raises(StoreUnavailable, match="newer"):
        await store.open()
    await store.close()


async def test_duplicate_names_are_a_conflict_in_the_store_itself(tmp_path: Path) -> None:
    store = SqliteIdentityStore(tmp_path / "id.db")
    await store.open()
    try:
        await store.put_principal(Principal(id="usr_A", name="n", tier=1))
        with pytest.raises(Conflict):
            await store.put_principal(Principal(id="usr_B", name="n", tier=1))
        assert [p.id for p in (await store.load()).principals] == ["usr_A"]
    finally:
        await store.close()


async def test_an_unopenable_path_is_store_unavailable(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    store = SqliteIdentityStore(blocker / "id.db")
    with pytest.raises(StoreUnavailable):
        await store.open()
    await store.close()
