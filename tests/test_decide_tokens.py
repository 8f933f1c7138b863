"""Bearer JWTs in the decision engine: the token's authority, capped by what its subject
holds right now; revocation and disabling act at once, cached tokens included."""

from __future__ import annotations

from authgate.decide import Decision
from authgate.errors import Reason
from authgate.identity.ids import Kind
from authgate.testing import Harness
from tests.test_decide import harness

NS = 1_000_000_000


async def token_for(
    bed: Harness, tier: int = 3, scopes: tuple[str, ...] = ("fine-tune",)
) -> tuple[str, str, str]:
    """A principal, a key of it, and a token issued against that key: (token, pid, kid)."""
    p = await bed.identity.create_principal(
        Kind.AGENT, f"t{len(bed.store.principals)}", tier, scopes
    )
    issued = await bed.identity.issue_key(p.id)
    token, _ = bed.tokens.issue(
        p.id, tier, frozenset(scopes), bed.clock.now_ns(), extra={"akid": issued.record.key_id}
    )
    return token, p.id, issued.record.key_id


def bearer(bed: Harness, token: str, path: str = "/v1/tune/x", method: str = "POST") -> Decision:
    return bed.engine.decide(method, path, {"authorization": f"Bearer {token}"}, "1.2.3.4")


async def test_a_token_carries_its_subject_tier_and_scopes() -> None:
    bed = await harness()
    token, pid, kid = await token_for(bed)
    d = bearer(bed, token)
    assert (d.status, d.principal_id, d.key_id, d.tier_held) == (200, pid, kid, 3)
    assert d.scopes == frozenset({"fine-tune"})
    assert bed.sink.last.principal == pid


async def test_a_token_never_exceeds_what_its_subject_holds_now() -> None:
    bed = await harness()
    token, pid, _ = await token_for(bed)
    await bed.identity.set_tier(pid, 2)
    d = bearer(bed, token)
    assert (d.status, d.reason, d.tier_held) == (403, Reason.INSUFFICIENT_TIER, 2)


async def test_revoking_the_key_or_disabling_the_subject_stops_its_tokens_at_once() -> None:
    bed = await harness()
    token, _pid, kid = await token_for(bed)
    assert bearer(bed, token).status == 200  # now in the verified-token cache
    await bed.identity.revoke_key(kid)
    assert (bearer(bed, token).status, bearer(bed, token).reason) == (401, Reason.REVOKED_KEY)
    other, pid2, _ = await token_for(bed)
    assert bearer(bed, other).status == 200
    await bed.identity.set_disabled(pid2, True)
    assert bearer(bed, other).reason is Reason.DISABLED_PRINCIPAL


async def test_expired_and_malformed_tokens_are_401_with_their_reason() -> None:
    bed = await harness()
    token, _, _ = await token_for(bed)
    assert bearer(bed, "a.b.c").reason is Reason.MALFORMED_TOKEN
    bed.clock.advance(15 * 60 + 31)
    d = bearer(bed, token)
    assert (d.status, d.reason) == (401, Reason.EXPIRED_TOKEN)
