"""Principals and keys through the service: narrowing, expiry, revocation, rotation,
elevation — with a fake clock."""

from __future__ import annotations

import pytest

from authgate.errors import AuthenticationFailed, Conflict, InvalidRequest, NotFound, Reason
from authgate.identity.ids import Kind
from authgate.testing import Harness


def reason_of(bed: Harness, key: str) -> Reason:
    try:
        bed.identity.directory.authenticate_key(key, bed.clock.now_ns())
    except AuthenticationFailed as exc:
        return exc.reason
    return Reason.OK


async def test_create_and_find_by_id_or_name(bed: Harness) -> None:
    p = await bed.identity.create_principal(Kind.AGENT, "planner", 3, ["a", "b"])
    assert p.id.startswith("agt_")
    assert p == bed.identity.principal("planner") == bed.identity.principal(p.id)
    assert frozenset({"a", "b"}) == p.scopes
    with pytest.raises(Conflict):
        await bed.identity.create_principal(Kind.USER, "planner", 1)
    with pytest.raises(NotFound):
        bed.identity.principal("nobody")


@pytest.mark.parametrize(
    ("name", "tier", "scopes"),
    [("", 1, ()), ("bad name", 1, ()), ("ok", 6, ()), ("ok", -1, ()), ("ok", 1, ("bad scope",))],
)
async def test_invalid_principals_are_refused(
    bed: Harness, name: str, tier: int, scopes: tuple[str, ...]
) -> None:
    with pytest.raises(InvalidRequest):
        await bed.identity.create_principal(Kind.USER, name, tier, scopes)


async def test_a_key_authenticates_with_the_principals_tier_and_scopes(bed: Harness) -> None:
    p = await bed.identity.create_principal(Kind.SERVICE, "svc", 3, ["read", "write"])
    issued = await bed.identity.issue_key(p.id)
    who = bed.identity.directory.authenticate_key(issued.key, bed.clock.now_ns())
    assert (p.id, 3, frozenset({"read", "write"})) == (who.principal.id, who.tier, who.scopes)
    assert issued.key not in repr(issued.record)


async def test_keys_narrow_but_never_widen(bed: Harness) -> None:
    p = await bed.identity.create_principal(Kind.SERVICE, "svc", 3, ["read", "write"])
    narrow = await bed.identity.issue_key(p.id, tier=1, scopes=["read"])
    who = bed.identity.directory.authenticate_key(narrow.key, bed.clock.now_ns())
    assert (1, frozenset({"read"})) == (who.tier, who.scopes)
    with pytest.raises(InvalidRequest, match="above"):
        await bed.identity.issue_key(p.id, tier=4)
    with pytest.raises(InvalidRequest, match="admin"):
        await bed.identity.issue_key(p.id, scopes=["read", "admin"])


async def test_a_lowered_principal_caps_its_keys_at_once(bed: Harness) -> None:
    p = await bed.identity.create_principal(Kind.SERVICE, "svc", 4, ["read"])
    issued = await bed.identity.issue_key(p.id, tier=3)
    await bed.identity.set_tier(p.id, 2)
    who = bed.identity.directory.authenticate_key(issued.key, bed.clock.now_ns())
    assert who.tier == 2


async def test_expiry_revocation_and_disable(bed: Harness) -> None:
    p = await bed.identity.create_principal(Kind.USER, "u", 1)
    short = await bed.identity.issue_key(p.id, ttl_s=60)
    other = await bed.identity.issue_key(p.id)
    bed.clock.advance(59)
    assert reason_of(bed, short.key) == Reason.OK
    bed.clock.advance(1)
    assert reason_of(bed, short.key) == Reason.EXPIRED_KEY
    await bed.identity.revoke_key(other.record.key_id)
    assert reason_of(bed, other.key) == Reason.REVOKED_KEY
    with pytest.raises(Conflict):
        await bed.identity.revoke_key(other.record.key_id)
    third = await bed.identity.issue_key(p.id)
    await bed.identity.set_disabled(p.id, True)
    assert reason_of(bed, third.key) == Reason.DISABLED_PRINCIPAL
    await bed.identity.set_disabled(p.id, False)
    assert reason_of(bed, third.key) == Reason.OK


async def test_a_wrong_secret_for_a_known_key_id(bed: Harness) -> None:
    from authgate.identity.keys import new_key

    p = await bed.identity.create_principal(Kind.USER, "u", 1)
    issued = await bed.identity.issue_key(p.id)
    forged, _ = new_key(issued.record.key_id)
    assert reason_of(bed, forged) == Reason.INVALID_SECRET
    unknown, _ = new_key()
    assert reason_of(bed, unknown) == Reason.UNKNOWN_KEY
    assert reason_of(bed, "agk_nope") == Reason.MALFORMED_CREDENTIAL


async def test_rotation_keeps_the_old_key_for_the_overlap_then_stops_it(bed: Harness) -> None:
    p = await bed.identity.create_principal(Kind.SERVICE, "svc", 3, ["read"])
    old = await bed.identity.issue_key(p.id, name="ci", tier=2, scopes=["read"])
    new = await bed.identity.rotate_key(old.record.key_id, overlap_s=3600)
    assert ("ci", 2, frozenset({"read"})) == (new.record.name, new.record.tier, new.record.scopes)
    assert new.record.key_id == bed.identity.key(old.record.key_id).replaced_by
    bed.clock.advance(3599)
    assert reason_of(bed, old.key) == Reason.OK
    assert reason_of(bed, new.key) == Reason.OK
    bed.clock.advance(1)
    assert reason_of(bed, old.key) == Reason.EXPIRED_KEY
    assert reason_of(bed, new.key) == Reason.OK
    with pytest.raises(Conflict, match="expired"):
        await bed.identity.rotate_key(old.record.key_id, overlap_s=10)


async def test_rotation_with_no_overlap_stops_the_old_key_now(bed: Harness) -> None:
    p = await bed.identity.create_principal(Kind.SERVICE, "svc", 3)
    old = await bed.identity.issue_key(p.id, ttl_s=86400)
    bed.clock.advance(100)
    new = await bed.identity.rotate_key(old.record.key_id, overlap_s=0)
    assert reason_of(bed, old.key) == Reason.EXPIRED_KEY
    # the successor gets the same lifetime, counted from now
    assert bed.clock.now_ns() + 86400 * 10**9 == new.record.expires_ns


async def test_elevation_ends_by_itself(bed: Harness) -> None:
    p = await bed.identity.create_principal(Kind.USER, "u", 1)
    issued = await bed.identity.issue_key(p.id)
    await bed.identity.elevate(p.id, 4, 600)
    now = bed.clock.now_ns
    assert bed.identity.directory.authenticate_key(issued.key, now()).tier == 4
    bed.clock.advance(600)
    assert bed.identity.directory.authenticate_key(issued.key, now()).tier == 1
    with pytest.raises(InvalidRequest, match="not above"):
        await bed.identity.elevate(p.id, 1, 600)
    await bed.identity.elevate(p.id, 3, 600)
    await bed.identity.elevate(p.id, 0, 0)  # ends it early
    assert bed.identity.directory.authenticate_key(issued.key, now()).tier == 1


async def test_elevation_does_not_lift_a_capped_key(bed: Harness) -> None:
    p = await bed.identity.create_principal(Kind.USER, "u", 2)
    capped = await bed.identity.issue_key(p.id, tier=1)
    await bed.identity.elevate(p.id, 5, 60)
    assert bed.identity.directory.authenticate_key(capped.key, bed.clock.now_ns()).tier == 1


async def test_every_change_is_written_to_the_store(bed: Harness) -> None:
    p = await bed.identity.create_principal(Kind.USER, "u", 1)
    issued = await bed.identity.issue_key(p.id)
    await bed.identity.revoke_key(issued.record.key_id)
    assert bed.store.keys[issued.record.key_id].revoked_ns is not None
    assert bed.store.principals[p.id] == p


async def test_only_users_have_passwords(bed: Harness) -> None:
    with pytest.raises(InvalidRequest):
        await bed.identity.create_principal(Kind.AGENT, "a", 1, password="pw")
    agent = await bed.identity.create_principal(Kind.AGENT, "a", 1)
    with pytest.raises(InvalidRequest):
        await bed.identity.set_password(agent.id, "pw")


async def test_public_views_hold_no_secrets(bed: Harness) -> None:
    p = await bed.identity.create_principal(Kind.USER, "u", 1, password="s3cret-pw")
    issued = await bed.identity.issue_key(p.id)
    now = bed.clock.now_ns()
    principal_view = repr(bed.identity.principal(p.id).public(now))
    key_view = repr(issued.record.public(now))
    assert "argon2" not in principal_view
    assert "secret_hash" not in key_view
    assert issued.key not in key_view


async def test_a_cached_key_still_sees_revocation_expiry_and_disable(bed: Harness) -> None:
    p = await bed.identity.create_principal(Kind.USER, "u", 1)
    a = await bed.identity.issue_key(p.id, ttl_s=10)
    b = await bed.identity.issue_key(p.id)
    assert Reason.OK == reason_of(bed, a.key) == reason_of(bed, b.key)  # both now cached
    await bed.identity.revoke_key(b.record.key_id)
    assert reason_of(bed, b.key) == Reason.REVOKED_KEY
    bed.clock.advance(10)
    assert reason_of(bed, a.key) == Reason.EXPIRED_KEY
    c = await bed.identity.issue_key(p.id)
    assert reason_of(bed, c.key) == Reason.OK
    await bed.identity.set_disabled(p.id, True)
    assert reason_of(bed, c.key) == Reason.DISABLED_PRINCIPAL


async def test_the_verified_cache_is_bounded_and_exact(bed: Harness) -> None:
    bed.identity.directory.max_verified = 3
    p = await bed.identity.create_principal(Kind.USER, "u", 1)
    issued = [await bed.identity.issue_key(p.id) for _ in range(10)]
    for key in issued:
        assert reason_of(bed, key.key) == Reason.OK
        assert len(bed.identity.directory._verified) <= 3
    # a near-miss of a cached key is not a hit: it goes through the full check
    near = issued[-1].key[:-1] + ("0" if issued[-1].key[-1] != "0" else "1")
    assert reason_of(bed, near) == Reason.MALFORMED_CREDENTIAL
