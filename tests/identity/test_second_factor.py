"""TOTP second factors: enrolment, login with a code (drift, replay, lockout), sealed
storage, and the schema migration that added it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from authgate.errors import AuthenticationFailed, InvalidRequest, LockedOut, Reason
from authgate.identity.ids import Kind
from authgate.identity.service import IdentityService
from authgate.identity.sqlite import MIGRATIONS, SqliteIdentityStore
from authgate.identity.totp import STEP_S, decode_secret, totp
from authgate.testing import TEST_PEPPER, FakeClock, MemoryIdentityStore, fast_passwords


async def users(clock: FakeClock, path: Path | None = None) -> IdentityService:
    store = SqliteIdentityStore(path) if path else MemoryIdentityStore()
    svc = IdentityService(store, TEST_PEPPER, clock, fast_passwords(max_failures=3))
    await svc.start()
    return svc


def code_at(seed: str, clock: FakeClock, steps: int = 0) -> str:
    return totp(decode_secret(seed), clock.ns / 1e9 + steps * STEP_S)


async def reason(svc: IdentityService, code: str | None, login: str = "ada") -> Reason:
    try:
        await svc.login(login, "pw", "10.0.0.9", code)
    except AuthenticationFailed as exc:
        return exc.reason
    return Reason.OK


async def test_a_user_logs_in_with_the_current_code_and_one_step_of_drift() -> None:
    clock = FakeClock()
    svc = await users(clock)
    await svc.create_principal(Kind.USER, "ada", 2, password="pw")
    _, seed, uri = await svc.enroll_totp("ada")
    assert uri.startswith("otpauth://totp/authgate%3Aada?secret=" + seed)
    assert await reason(svc, code_at(seed, clock)) is Reason.OK
    clock.advance(STEP_S)
    assert await reason(svc, code_at(seed, clock, -1)) is Reason.INVALID_SECOND_FACTOR  # used
    assert await reason(svc, code_at(seed, clock, +1)) is Reason.OK  # a step ahead
    clock.advance(10 * STEP_S)
    assert await reason(svc, code_at(seed, clock, -2)) is Reason.INVALID_SECOND_FACTOR
    assert await reason(svc, None) is Reason.OK  # password alone still logs in (no "otp")
    await svc.close()


async def test_wrong_codes_count_towards_the_lockout() -> None:
    clock = FakeClock()
    svc = await users(clock)
    await svc.create_principal(Kind.USER, "ada", 2, password="pw")
    _, seed, _ = await svc.enroll_totp("ada")
    right = code_at(seed, clock)
    wrong = f"{(int(right) + 1) % 1_000_000:06d}"
    for _ in range(3):
        assert await reason(svc, wrong) is Reason.INVALID_SECOND_FACTOR
    with pytest.raises(LockedOut):
        await svc.login("ada", "pw", "10.0.0.9", right)
    await svc.close()


async def test_a_code_without_enrolment_and_enrolment_rules() -> None:
    clock = FakeClock()
    svc = await users(clock)
    await svc.create_principal(Kind.USER, "ada", 2, password="pw")
    await svc.create_principal(Kind.AGENT, "bot", 2)
    assert await reason(svc, "123456") is Reason.INVALID_SECOND_FACTOR
    with pytest.raises(InvalidRequest):
        await svc.enroll_totp("bot")
    _, seed, _ = await svc.enroll_totp("ada")
    _, again, _ = await svc.enroll_totp("ada")  # a new seed replaces the old
    assert seed != again
    assert await reason(svc, code_at(seed, clock)) is Reason.INVALID_SECOND_FACTOR  # replaced
    removed = await svc.remove_totp("ada")
    assert removed.public(clock.ns)["has_totp"] is False
    assert await reason(svc, code_at(again, clock)) is Reason.INVALID_SECOND_FACTOR
    await svc.close()


async def test_the_seed_is_stored_sealed_and_survives_a_restart(tmp_path: Path) -> None:
    clock = FakeClock()
    db = tmp_path / "id.db"
    first = await users(clock, db)
    await first.create_principal(Kind.USER, "ada", 2, password="pw")
    _, seed, _ = await first.enroll_totp("ada")
    await first.close()
    raw = decode_secret(seed)
    assert raw not in db.read_bytes()
    assert seed.encode() not in db.read_bytes()
    second = await users(clock, db)
    assert await reason(second, code_at(seed, clock)) is Reason.OK
    await second.close()


async def test_a_version_1_store_migrates_and_keeps_its_users(tmp_path: Path) -> None:
    db = tmp_path / "id.db"
    con = sqlite3.connect(db)
    con.executescript(MIGRATIONS[0])
    con.execute(
        "INSERT INTO principals (id, name, tier, scopes, created_ns) VALUES (?,?,?,?,?)",
        ("usr_0000000000000000000000", "old", 1, "[]", 1),
    )
    con.execute("PRAGMA user_version = 1")
    con.commit()
    con.close()
    svc = await users(FakeClock(), db)
    assert svc.principal("old").totp_sealed is None
    await svc.enroll_totp("old")
    await svc.close()
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS) == 2
    con.close()


async def test_a_sealed_seed_moved_to_another_user_does_not_open() -> None:
    clock = FakeClock()
    svc = await users(clock)
    await svc.create_principal(Kind.USER, "ada", 2, password="pw")
    await svc.create_principal(Kind.USER, "eve", 2, password="pw")
    ada, seed, _ = await svc.enroll_totp("ada")
    import msgspec

    eve = msgspec.structs.replace(svc.principal("eve"), totp_sealed=ada.totp_sealed)
    svc.directory.put_principal(eve)
    assert await reason(svc, code_at(seed, clock), "eve") is Reason.INVALID_SECOND_FACTOR
    await svc.close()
