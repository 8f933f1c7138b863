"""The decision engine: one test per reason code, audit events, and no exception escapes."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import jwt
import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from authgate.audit.event import EventType
from authgate.config import Route, Settings, Tier
from authgate.decide import Decision, Outcome
from authgate.errors import AuditUnavailable, AuthenticationFailed, Reason
from authgate.identity.ids import Kind
from authgate.identity.keys import new_key
from authgate.identity.model import ApiKey
from authgate.testing import Harness, fast_passwords, make_harness
from authgate.tokens import KeyRing, Tokens, new_signing_key

ROUTES = (
    Route(name="models", path="/v1/models", methods=("GET",), min_tier=0),
    Route(name="chat", path="/v1/chat/completions", methods=("POST",), min_tier=1, cost=2),
    Route(name="tune", path="/v1/tune/*", min_tier=3, scopes=("fine-tune",)),
    Route(name="own", path="/v1/own/{id}", min_tier=1, limit_by="route"),
)
TIERS = tuple(
    Tier(level=i, name=n, requests_per_minute=60, burst=3)
    for i, n in enumerate(["guest", "user", "advanced", "trusted", "privileged", "system"])
)
SETTINGS = Settings(routes=ROUTES, tiers=TIERS, passwords=fast_passwords())


async def harness(**changes: object) -> Harness:
    return await make_harness(msgspec.structs.replace(SETTINGS, **changes))


async def key_for(bed: Harness, tier: int = 1, scopes: tuple[str, ...] = ()) -> str:
    p = await bed.identity.create_principal(Kind.AGENT, f"a{len(bed.store.principals)}", tier)
    if scopes:
        p = await bed.identity.create_principal(Kind.AGENT, f"s{p.name}", tier, scopes)
    return (await bed.identity.issue_key(p.id)).key


def ask(bed: Harness, key: str | None, method: str = "GET", path: str = "/v1/models") -> Decision:
    return bed.engine.decide(method, path, {} if key is None else {"x-api-key": key}, "1.2.3.4")


Scenario = Callable[[Harness], Awaitable[Decision]]
SCENARIOS: dict[Reason, Scenario] = {}


def scenario(reason: Reason) -> Callable[[Scenario], Scenario]:
    def register(fn: Scenario) -> Scenario:
        SCENARIOS[reason] = fn
        return fn

    return register


@scenario(Reason.OK)
async def _ok(bed: Harness) -> Decision:
    return ask(bed, await key_for(bed))


@scenario(Reason.MISSING_CREDENTIAL)
async def _missing(bed: Harness) -> Decision:
    return ask(bed, None)


@scenario(Reason.MALFORMED_CREDENTIAL)
async def _malformed(bed: Harness) -> Decision:
    return ask(bed, "agk_not-a-key")


@scenario(Reason.AMBIGUOUS_CREDENTIAL)
async def _ambiguous(bed: Harness) -> Decision:
    a, b = await key_for(bed), await key_for(bed)
    return bed.engine.decide("GET", "/v1/models", {"authorization": f"Bearer {a}", "x-api-key": b})


@scenario(Reason.UNKNOWN_KEY)
async def _unknown(bed: Harness) -> Decision:
    return ask(bed, new_key()[0])


@scenario(Reason.INVALID_SECRET)
async def _invalid_secret(bed: Harness) -> Decision:
    real = await key_for(bed)
    return ask(bed, new_key(real[4:16])[0])


@scenario(Reason.REVOKED_KEY)
async def _revoked(bed: Harness) -> Decision:
    key = await key_for(bed)
    await bed.identity.revoke_key(key[4:16])
    return ask(bed, key)


@scenario(Reason.EXPIRED_KEY)
async def _expired(bed: Harness) -> Decision:
    p = await bed.identity.create_principal(Kind.AGENT, "exp", 1)
    issued = await bed.identity.issue_key(p.id, ttl_s=5)
    bed.clock.advance(5)
    return ask(bed, issued.key)


@scenario(Reason.UNKNOWN_PRINCIPAL)
async def _orphan(bed: Harness) -> Decision:
    # Only a corrupted store can produce this: a key whose owner is gone.
    from authgate.identity.keys import hash_secret
    from authgate.testing import TEST_PEPPER

    raw, parts = new_key()
    orphan = ApiKey(
        key_id=parts.key_id,
        principal_id="agt_GONE",
        secret_hash=hash_secret(TEST_PEPPER, parts.secret),
    )
    bed.identity.directory.put_key(orphan)
    return ask(bed, raw)


@scenario(Reason.DISABLED_PRINCIPAL)
async def _disabled(bed: Harness) -> Decision:
    p = await bed.identity.create_principal(Kind.AGENT, "off", 1)
    issued = await bed.identity.issue_key(p.id)
    await bed.identity.set_disabled(p.id, True)
    return ask(bed, issued.key)


@scenario(Reason.INSUFFICIENT_TIER)
async def _tier(bed: Harness) -> Decision:
    return ask(bed, await key_for(bed, tier=2, scopes=("fine-tune",)), "POST", "/v1/tune/jobs")


@scenario(Reason.MISSING_SCOPE)
async def _scope(bed: Harness) -> Decision:
    return ask(bed, await key_for(bed, tier=3), "POST", "/v1/tune/jobs")


@scenario(Reason.RATE_LIMITED)
async def _limited(bed: Harness) -> Decision:
    key = await key_for(bed)
    for _ in range(3):
        assert ask(bed, key).allowed
    return ask(bed, key)


@scenario(Reason.NO_ROUTE)
async def _no_route(bed: Harness) -> Decision:
    return ask(bed, await key_for(bed), "GET", "/v2/anything")


@scenario(Reason.MALFORMED_REQUEST)
async def _bad_path(bed: Harness) -> Decision:
    return ask(bed, await key_for(bed), "GET", "/v1/a%2fb")


@scenario(Reason.INTERNAL_ERROR)
async def _internal(bed: Harness) -> Decision:
    key = await key_for(bed)

    class Broken:
        def hit(self, *args: object) -> None:
            raise RuntimeError("boom")

    bed.engine.limiter = Broken()  # type: ignore[assignment]
    return ask(bed, key)


@scenario(Reason.AUDIT_UNAVAILABLE)
async def _audit_down(bed: Harness) -> Decision:
    key = await key_for(bed)

    class Full:
        def emit(self, event: object) -> None:
            raise AuditUnavailable("full")

    bed.engine.sink = Full()  # type: ignore[assignment]
    return ask(bed, key)


async def _login_reason(bed: Harness, password: str, login: str = "pw-user") -> Reason:
    try:
        await bed.identity.login(login, password, "1.1.1.1")
    except AuthenticationFailed as exc:
        return exc.reason
    return Reason.OK


async def _token(bed: Harness, tokens: Tokens | None = None, at_s: float = 0.0) -> str:
    p = await bed.identity.create_principal(Kind.AGENT, f"j{len(bed.store.principals)}", 1)
    now = bed.clock.now_ns() + int(at_s * 1e9)
    return (tokens or bed.tokens).issue(p.id, 1, frozenset(), now)[0]


def _bearer(bed: Harness, token: str) -> Decision:
    return bed.engine.decide("GET", "/v1/models", {"authorization": f"Bearer {token}"})


@scenario(Reason.MALFORMED_TOKEN)
async def _malformed_token(bed: Harness) -> Decision:
    return _bearer(bed, "eyJ.not-json.x")


@scenario(Reason.UNSUPPORTED_ALGORITHM)
async def _alg_none(bed: Harness) -> Decision:
    claims = {"sub": "x", "iat": 0, "nbf": 0, "exp": 2**40, "jti": "j", "tier": 5}
    kid = bed.tokens.ring.current.kid
    return _bearer(bed, jwt.encode(claims, "", algorithm="none", headers={"kid": kid}))


@scenario(Reason.UNKNOWN_SIGNING_KEY)
async def _unknown_kid(bed: Harness) -> Decision:
    stranger = Tokens(KeyRing((new_signing_key(0),)), "authgate", "authgate")
    return _bearer(bed, await _token(bed, stranger))


@scenario(Reason.INVALID_SIGNATURE)
async def _bad_signature(bed: Harness) -> Decision:
    head, body, sig = (await _token(bed)).split(".")
    return _bearer(bed, f"{head}.{body}.{sig[:-2]}{'A' if sig[-2] != 'A' else 'B'}{sig[-1]}")


@scenario(Reason.EXPIRED_TOKEN)
async def _expired_token(bed: Harness) -> Decision:
    return _bearer(bed, await _token(bed, at_s=-3600))


@scenario(Reason.TOKEN_NOT_YET_VALID)
async def _early_token(bed: Harness) -> Decision:
    return _bearer(bed, await _token(bed, at_s=3600))


@scenario(Reason.WRONG_ISSUER)
async def _wrong_issuer(bed: Harness) -> Decision:
    return _bearer(bed, await _token(bed, Tokens(bed.tokens.ring, "elsewhere", "authgate")))


@scenario(Reason.WRONG_AUDIENCE)
async def _wrong_audience(bed: Harness) -> Decision:
    return _bearer(bed, await _token(bed, Tokens(bed.tokens.ring, "authgate", "elsewhere")))


@scenario(Reason.STEP_UP_REQUIRED)
async def _step_up(bed: Harness) -> Decision:
    bed.engine.second_factor_tiers = frozenset({1})
    p = await bed.identity.create_principal(Kind.USER, "stepper", 1)
    token = bed.tokens.issue(p.id, 1, frozenset(), bed.clock.now_ns(), extra={"amr": ["pwd"]})
    return bed.engine.decide(
        "POST", "/v1/chat/completions", {"authorization": f"Bearer {token[0]}"}
    )


# Reasons that are not decisions on a request; tests/identity and tests/dataplane cover them.
LOGIN_REASONS = {
    Reason.INVALID_PASSWORD,
    Reason.LOCKED_OUT,
    Reason.NO_PASSWORD,
    Reason.INVALID_SECOND_FACTOR,
}
HANDOFF_REASONS = {
    Reason.UNKNOWN_TICKET,
    Reason.TICKET_EXPIRED,
    Reason.TICKET_REDEEMED,
    Reason.WRONG_RECIPIENT,
}


def test_every_reason_code_has_a_scenario() -> None:
    assert set(Reason) == set(SCENARIOS) | LOGIN_REASONS | HANDOFF_REASONS


STATUS = {
    Reason.OK: 200,
    Reason.MALFORMED_REQUEST: 400,
    Reason.INSUFFICIENT_TIER: 403,
    Reason.MISSING_SCOPE: 403,
    Reason.NO_ROUTE: 403,
    Reason.RATE_LIMITED: 429,
    Reason.INTERNAL_ERROR: 500,
    Reason.AUDIT_UNAVAILABLE: 503,
}


@pytest.mark.parametrize("reason", list(SCENARIOS), ids=str)
async def test_reason(reason: Reason) -> None:
    bed = await harness()
    decision = await SCENARIOS[reason](bed)
    assert reason == decision.reason
    expected = {Reason.OK: Outcome.ALLOW, Reason.STEP_UP_REQUIRED: Outcome.STEP_UP}
    assert expected.get(reason, Outcome.DENY) == decision.outcome
    assert STATUS.get(reason, 401) == decision.status
    if reason is not Reason.AUDIT_UNAVAILABLE:  # that one is refused precisely because
        event = bed.sink.last  # its event could not be recorded
        assert (decision.outcome.value, reason.value) == (event.outcome, event.reason)
        assert decision.status == event.status
    await bed.identity.close()


async def test_login_reasons() -> None:
    bed = await harness()
    await bed.identity.create_principal(Kind.USER, "pw-user", 1, password="right")
    await bed.identity.create_principal(Kind.USER, "nopw-user", 1)
    assert await _login_reason(bed, "wrong") == Reason.INVALID_PASSWORD
    assert await _login_reason(bed, "x", "nopw-user") == Reason.NO_PASSWORD
    for _ in range(5):
        await _login_reason(bed, "wrong")
    assert await _login_reason(bed, "right") == Reason.LOCKED_OUT
    await bed.identity.close()


async def test_allow_carries_principal_route_and_rate_limit_state() -> None:
    bed = await harness()
    key = await key_for(bed, tier=2)
    decision = ask(bed, key, "POST", "/v1/chat/completions")
    assert decision.allowed
    assert (
        decision.tier_held,
        decision.tier_required,
        decision.route,
        decision.upstream,
    ) == (2, 1, "chat", "default")
    rl = decision.ratelimit
    assert rl is not None
    assert (rl.limit.burst, rl.remaining, rl.limit.rate) == (3, 1, 60)  # cost 2 of burst 3
    assert rl.retry_after_s == 0
    denied = ask(bed, key, "POST", "/v1/chat/completions")
    assert denied.ratelimit is not None
    assert denied.ratelimit.retry_after_s == 1
    await bed.identity.close()


async def test_bearer_and_x_api_key_are_both_accepted() -> None:
    bed = await harness()
    key = await key_for(bed)
    for headers in (
        {"authorization": f"Bearer {key}"},
        {"authorization": f"bearer   {key} "},
        {"x-api-key": key},
        {"authorization": f"Bearer {key}", "x-api-key": key},
    ):
        assert bed.engine.decide("GET", "/v1/models", headers).allowed, headers
        bed.clock.advance(1)  # one request a second keeps within the limit
    for headers in ({"authorization": f"Basic {key}"}, {"authorization": "Bearer"}):
        assert bed.engine.decide("GET", "/", headers).reason == Reason.MALFORMED_CREDENTIAL
    await bed.identity.close()


async def test_per_route_limits_are_separate_budgets() -> None:
    bed = await harness()
    key = await key_for(bed)
    for _ in range(3):
        assert ask(bed, key, "GET", "/v1/own/1").allowed
    assert not ask(bed, key, "GET", "/v1/own/2").allowed  # one budget for the route
    assert ask(bed, key).allowed  # the principal's budget is untouched
    await bed.identity.close()


async def test_anonymous_guests_only_when_allowed() -> None:
    closed = await harness()
    assert ask(closed, None).reason == Reason.MISSING_CREDENTIAL
    opened = await harness(allow_anonymous=True)
    guest = ask(opened, None)
    assert (guest.allowed, guest.tier_held, guest.principal_id) == (True, 0, None)
    assert ask(opened, None, "POST", "/v1/chat/completions").reason == Reason.MISSING_CREDENTIAL
    insufficient = ask(opened, None, "POST", "/v1/chat/completions")
    assert insufficient.status == 401
    for _ in range(2):
        ask(opened, None)
    assert ask(opened, None).reason == Reason.RATE_LIMITED
    other = opened.engine.decide("GET", "/v1/models", {}, "9.9.9.9")
    assert other.allowed  # guests are limited per client address
    await closed.identity.close()
    await opened.identity.close()


async def test_dot_segments_cannot_climb_past_a_rule() -> None:
    bed = await harness()
    key = await key_for(bed, tier=1)
    assert ask(bed, key, "POST", "/v1/models/../tune/x").reason == Reason.INSUFFICIENT_TIER
    await bed.identity.close()


async def test_audit_events_hold_no_secrets_and_are_typed() -> None:
    bed = await harness()
    key = await key_for(bed)
    ask(bed, key)
    ask(bed, key[:-1] + "x")
    for _ in range(3):
        ask(bed, key)
    types = [e.type for e in bed.sink.events]
    assert types[0] == EventType.AUTHZ
    assert types[1] == EventType.AUTHN
    assert types[-1] == EventType.RATELIMIT
    blob = repr(bed.sink.events)
    assert key not in blob
    assert key[17:49] not in blob  # the secret part
    assert all(len(e.event_id) == 16 for e in bed.sink.events)
    assert len({e.event_id for e in bed.sink.events}) == len(bed.sink.events)
    await bed.identity.close()


header_names = st.sampled_from(["authorization", "x-api-key", "host", "x-other"])
header_values = st.text(max_size=80) | st.sampled_from(["Bearer ", "Bearer agk_", "agk_"])


@pytest.fixture(scope="module")
def fuzz_bed() -> Harness:
    """One engine for all fuzz examples (guests allowed, so every path is exercised)."""
    return asyncio.run(harness(allow_anonymous=True))


@settings(max_examples=300)
@given(
    method=st.text(max_size=10),
    target=st.text(max_size=60),
    headers=st.dictionaries(header_names, header_values, max_size=4),
    client=st.text(max_size=20),
)
def test_no_input_makes_decide_raise_or_answer_500(
    fuzz_bed: Harness, method: str, target: str, headers: dict[str, str], client: str
) -> None:
    decision = fuzz_bed.engine.decide(method, target, headers, client)
    assert decision.status in {200, 400, 401, 403, 429}
    assert decision.reason is not Reason.INTERNAL_ERROR
