"""Password logins: argon2id off the event loop, upgrades, and lockout."""

from __future__ import annotations

import threading

import pytest

from authgate.config import Settings
from authgate.errors import AuthenticationFailed, LockedOut, Reason
from authgate.identity.ids import Kind
from authgate.identity.passwords import PasswordHasher
from authgate.testing import Harness, fast_passwords, make_harness


async def failed_reason(bed: Harness, login: str, password: str, client: str) -> Reason:
    with pytest.raises(AuthenticationFailed) as info:
        await bed.identity.login(login, password, client)
    return info.value.reason


async def test_login_checks_the_password(bed: Harness) -> None:
    p = await bed.identity.create_principal(Kind.USER, "alice", 1, password="correct horse")
    assert p.id == (await bed.identity.login("alice", "correct horse", "1.1.1.1")).id
    assert p.password_hash is not None
    assert "correct horse" not in p.password_hash
    assert p.password_hash.startswith("$argon2id$")
    assert await failed_reason(bed, "alice", "wrong", "1.1.1.1") == Reason.INVALID_PASSWORD
    assert await failed_reason(bed, "bob", "x", "1.1.1.1") == Reason.UNKNOWN_PRINCIPAL


async def test_a_principal_without_password_cannot_log_in(bed: Harness) -> None:
    await bed.identity.create_principal(Kind.USER, "nopw", 1)
    assert await failed_reason(bed, "nopw", "x", "1.1.1.1") == Reason.NO_PASSWORD


async def test_a_disabled_user_cannot_log_in(bed: Harness) -> None:
    await bed.identity.create_principal(Kind.USER, "alice", 1, password="pw")
    await bed.identity.set_disabled("alice", True)
    assert await failed_reason(bed, "alice", "pw", "1.1.1.1") == Reason.DISABLED_PRINCIPAL


async def test_verification_runs_off_the_event_loop() -> None:
    hasher = PasswordHasher(fast_passwords())
    real = hasher._argon2
    seen: list[str] = []

    class Spy:
        def verify(self, stored: str, password: str) -> bool:
            seen.append(threading.current_thread().name)
            return real.verify(stored, password)

        def hash(self, password: str) -> str:
            seen.append(threading.current_thread().name)
            return real.hash(password)

    hasher._argon2 = Spy()  # type: ignore[assignment]
    stored = await hasher.hash("pw")
    await hasher.verify(stored, "pw")
    hasher.close()
    assert len(seen) == 2
    assert all(name.startswith("authgate-argon2") for name in seen)
    assert threading.main_thread().name not in seen


async def test_lockout_per_principal_then_it_ends(bed: Harness) -> None:
    await bed.identity.create_principal(Kind.USER, "alice", 1, password="pw")
    for i in range(5):  # five failures from five addresses
        await failed_reason(bed, "alice", "wrong", f"10.0.0.{i}")
    with pytest.raises(LockedOut) as info:
        await bed.identity.login("alice", "pw", "10.9.9.9")  # even the right password
    assert pytest.approx(info.value.retry_after) == 900
    bed.clock.advance(900)
    await bed.identity.login("alice", "pw", "10.9.9.9")


async def test_lockout_per_client_address_across_principals(bed: Harness) -> None:
    await bed.identity.create_principal(Kind.USER, "carol", 1, password="pw")
    for i in range(5):  # password spraying: one address, many names
        await failed_reason(bed, f"user{i}", "guess", "6.6.6.6")
    with pytest.raises(LockedOut):
        await bed.identity.login("carol", "pw", "6.6.6.6")
    await bed.identity.login("carol", "pw", "7.7.7.7")


async def test_failures_outside_the_window_do_not_count() -> None:
    bed = await make_harness(
        Settings(passwords=fast_passwords(max_failures=3, failure_window_s=60))
    )
    await bed.identity.create_principal(Kind.USER, "alice", 1, password="pw")
    for _ in range(2):
        await failed_reason(bed, "alice", "wrong", "1.1.1.1")
    bed.clock.advance(61)
    await failed_reason(bed, "alice", "wrong", "1.1.1.1")
    await bed.identity.login("alice", "pw", "1.1.1.1")
    await bed.identity.close()


async def test_success_resets_the_principal_counter(bed: Harness) -> None:
    await bed.identity.create_principal(Kind.USER, "alice", 1, password="pw")
    for _ in range(4):
        await failed_reason(bed, "alice", "wrong", "1.1.1.1")
    await bed.identity.login("alice", "pw", "2.2.2.2")
    await failed_reason(bed, "alice", "wrong", "3.3.3.3")
    await bed.identity.login("alice", "pw", "3.3.3.3")


async def test_hash_parameters_are_upgraded_on_next_login() -> None:
    weak = await make_harness(Settings(passwords=fast_passwords()))
    p = await weak.identity.create_principal(Kind.USER, "alice", 1, password="pw")
    old_hash = p.password_hash
    assert old_hash is not None
    stronger = Settings(
        passwords=fast_passwords().__class__(
            argon2_time_cost=2, argon2_memory_kib=16, argon2_parallelism=1
        )
    )
    bed = await make_harness(stronger)
    await bed.store.put_principal(p)
    await bed.identity.start()
    await bed.identity.login("alice", "pw", "1.1.1.1")
    upgraded = bed.identity.principal("alice").password_hash
    assert upgraded is not None
    assert old_hash != upgraded
    assert "t=2" in upgraded
    assert upgraded == bed.store.principals[p.id].password_hash
    await weak.identity.close()
    await bed.identity.close()
