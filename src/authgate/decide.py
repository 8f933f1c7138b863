"""The decision engine: request facts in, a Decision out, one audit event emitted.

``decide`` is the glue of identity, policy, rate limiting and audit, and the hot path of the
gateway: it does no I/O and no imports, and no exception escapes it. Its order is fixed:

1. normalise the path (``malformed_request``);
2. authenticate the credential — ``Authorization: Bearer <key or JWT>`` or ``X-API-Key`` —
   so an unauthenticated caller learns nothing about the route table. A JWT is verified
   (or found in the verified-token cache) and its subject's live state checked on every
   use: its tier and scopes are the token's, capped by what the subject holds now;
3. match the route (``no_route``) and check tier and scopes;
4. count the request against the principal's GCRA limit (per route where the rule says so).

Anonymous callers (no credential at all) are denied unless ``allow_anonymous`` is set; then
they are guests at tier 0, limited per client address.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Mapping
from enum import StrEnum
from typing import Any, NamedTuple

import msgspec

from authgate.audit.event import AuditEvent, EventType, new_event_id
from authgate.audit.sink import AuditSink
from authgate.clock import Clock
from authgate.errors import AuditUnavailable, AuthenticationFailed, Reason
from authgate.identity.directory import Directory
from authgate.policy import Policy, check_access, normalize_path
from authgate.ratelimit.gcra import GcraResult, Limit
from authgate.ratelimit.local import LocalLimiter
from authgate.tokens import Tokens

log = logging.getLogger(__name__)

MAX_CREDENTIAL_LEN = 4096


class Outcome(StrEnum):
    """What to do with the request."""

    ALLOW = "allow"
    DENY = "deny"
    STEP_UP = "step_up"


_STATUS: dict[Reason, int] = {
    Reason.OK: 200,
    Reason.MALFORMED_REQUEST: 400,
    Reason.INSUFFICIENT_TIER: 403,
    Reason.MISSING_SCOPE: 403,
    Reason.NO_ROUTE: 403,
    Reason.RATE_LIMITED: 429,
    Reason.INTERNAL_ERROR: 500,
    Reason.AUDIT_UNAVAILABLE: 503,
}
_EVENT_TYPE: dict[Reason, EventType] = {
    r: EventType.AUTHZ if r in _STATUS else EventType.AUTHN for r in Reason
}
_EVENT_TYPE[Reason.RATE_LIMITED] = EventType.RATELIMIT


def status_for(reason: Reason) -> int:
    """The HTTP status a decision with ``reason`` answers with (401 for authentication)."""
    return _STATUS.get(reason, 401)


class Decision(msgspec.Struct, frozen=True, gc=False):
    """The verdict on one request. Built positionally on the hot path (see AuditEvent)."""

    outcome: Outcome
    reason: Reason
    status: int
    principal_id: str | None = None
    key_id: str | None = None
    tier_held: int | None = None
    tier_required: int | None = None
    scopes: frozenset[str] = frozenset()
    route: str | None = None
    upstream: str | None = None
    ratelimit: GcraResult | None = None
    path: str | None = None  # the normalised path judged (set when a route matched)
    actor: str | None = None  # who acts for the principal (a handoff's delegated token)
    correlation: str | None = None  # the handoff's correlation id, for the audit log

    @property
    def allowed(self) -> bool:
        """True for ``allow``."""
        return self.outcome is Outcome.ALLOW


class Caller(NamedTuple):
    """An authenticated caller: ``principal_id`` is whose authority the credential carries;
    ``actor`` who acts (the principal itself unless the credential is a delegated token,
    whose ``act`` chain names the actors); ``correlation`` a handoff's correlation id;
    ``amr`` how a user logged in (empty for API keys and client-credentials tokens)."""

    principal_id: str
    key_id: str | None
    tier: int
    scopes: frozenset[str]
    actor: str
    act: dict[str, Any] | None = None
    correlation: str | None = None
    amr: tuple[str, ...] = ()


def _deny(
    reason: Reason,
    principal_id: str | None = None,
    key_id: str | None = None,
    tier_held: int | None = None,
    tier_required: int | None = None,
    route: str | None = None,
    correlation: str | None = None,
) -> Decision:
    return Decision(
        Outcome.DENY,
        reason,
        status_for(reason),
        principal_id,
        key_id,
        tier_held,
        tier_required,
        _NO_SCOPES,
        route,
        correlation=correlation,
    )


_NO_SCOPES: frozenset[str] = frozenset()
_MALFORMED_REQUEST = _deny(Reason.MALFORMED_REQUEST)
_AUDIT_DOWN = _deny(Reason.AUDIT_UNAVAILABLE)


class DecisionEngine:
    """Decides requests against a directory, a policy and a limiter; audits each decision."""

    def __init__(
        self,
        directory: Directory,
        policy: Policy,
        limiter: LocalLimiter,
        sink: AuditSink,
        clock: Clock,
        *,
        allow_anonymous: bool = False,
        audit_key: bytes | None = None,
        tokens: Tokens | None = None,
        second_factor_tiers: frozenset[int] = frozenset(),
    ) -> None:
        self.directory = directory
        self.tokens = tokens
        self.second_factor_tiers = second_factor_tiers
        self.policy = policy
        self.limiter = limiter
        self.sink = sink
        self.clock = clock
        self.allow_anonymous = allow_anonymous
        self._audit_key = audit_key
        self._hashes: dict[str, bytes] = {}
        self._limits = tuple(Limit.per_minute(t.requests_per_minute, t.burst) for t in policy.tiers)

    def decide(
        self,
        method: str,
        target: str,
        headers: Mapping[str, str],
        client: str = "",
        request_id: str | None = None,
    ) -> Decision:
        """Decide one request and audit it (async mode). ``headers`` maps lower-case names
        to values. Never raises: if the audit sink refuses the event, the answer is 503."""
        decision, event = self.decide_event(method, target, headers, client, request_id)
        try:
            self.sink.emit(event)
        except AuditUnavailable:
            return _AUDIT_DOWN
        return decision

    async def decide_durable(
        self,
        method: str,
        target: str,
        headers: Mapping[str, str],
        client: str = "",
        request_id: str | None = None,
    ) -> Decision:
        """Decide one request and answer only once its audit event is durable (503 if the
        ledger cannot make it durable)."""
        decision, event = self.decide_event(method, target, headers, client, request_id)
        try:
            await self.sink.emit_durable(event)
        except AuditUnavailable:
            return _AUDIT_DOWN
        return decision

    def decide_event(
        self,
        method: str,
        target: str,
        headers: Mapping[str, str],
        client: str = "",
        request_id: str | None = None,
    ) -> tuple[Decision, AuditEvent]:
        """The decision and its audit event, not yet emitted."""
        started = time.perf_counter_ns()
        now = self.clock.now_ns()
        path = normalize_path(target)
        try:
            decision = (
                _MALFORMED_REQUEST
                if path is None
                else self._decide(method, path, headers, client, now)
            )
        except Exception:  # a bug must not become a traceback on the wire
            log.exception("decision failed")
            decision = _deny(Reason.INTERNAL_ERROR)
        event = AuditEvent(  # positional: see AuditEvent's docstring for why
            new_event_id(),
            now,
            _EVENT_TYPE[decision.reason],
            "decide",
            decision.outcome,  # StrEnum members are str: no .value lookups
            decision.reason,
            decision.principal_id,
            decision.key_id,
            decision.tier_held,
            decision.tier_required,
            decision.route,
            method[:16],
            (path or target)[:512],
            decision.status,
            request_id,
            decision.correlation,
            (time.perf_counter_ns() - started) // 1000,
            None,
            self._personal(client) if client and self._audit_key else None,
            self._personal(headers.get("user-agent")) if self._audit_key else None,
        )
        return decision, event

    def charge(self, subject: str, tier: int, now_ns: int, budget: str) -> GcraResult:
        """Count one request of ``subject`` against its tier's limit, in a budget of its
        own (``budget`` names it, as a route does with ``limit_by = "route"``)."""
        return self.limiter.hit(f"{subject}|{budget}", now_ns, self._limits[tier], 1)

    def personal(self, value: str | None) -> bytes | None:
        """The HMAC of a personal value for an audit event; None without an audit key."""
        if value is None or self._audit_key is None:
            return None
        return self._personal(value)

    def _personal(self, value: str | None) -> bytes | None:
        """HMAC-SHA256 of a personal value (client address, user agent) under the audit key,
        memoised: a digest costs ~2 µs here and these values repeat."""
        if value is None:
            return None
        digest = self._hashes.get(value)
        if digest is None:
            assert self._audit_key is not None
            digest = hmac.digest(self._audit_key, value.encode(), "sha256")
            if len(self._hashes) >= 65536:
                self._hashes.clear()
            self._hashes[value] = digest
        return digest

    def identify(self, credential: str, now: int) -> Caller:
        """Who a credential (an API key or a JWT) belongs to, with the tier and scopes it
        carries right now; AuthenticationFailed with the reason otherwise.

        A JWT's tier and scopes are the token's, capped by what its subject holds now. A
        delegated token (a handoff's, with an ``act`` chain) also needs every actor in the
        chain to be enabled, its key valid, and takes the lowest of their tiers."""
        if self.tokens is None or credential.count(".") != 2:  # an API key
            who = self.directory.authenticate_key(credential, now)
            pid = who.principal.id
            assert who.key is not None
            return Caller(pid, who.key.key_id, who.tier, who.scopes, pid)
        return self._token_caller(self.tokens, credential, now)

    def _token_caller(self, tokens: Tokens, credential: str, now: int) -> Caller:
        claims = tokens.verify(credential, now)
        who = self.directory.check_subject(claims.sub, claims.akid, now)
        tier = min(claims.tier, who.tier)
        actor = claims.sub
        if claims.act is not None:
            actor, actors_tier = self.directory.check_actors(claims.act, now)
            tier = min(tier, actors_tier)
        scopes = claims.scope if claims.scope <= who.scopes else claims.scope & who.scopes
        return Caller(
            claims.sub,
            claims.akid,
            tier,
            scopes,
            actor,
            claims.act,
            claims.cid,
            claims.amr,
        )

    def _decide(
        self, method: str, path: str, headers: Mapping[str, str], client: str, now: int
    ) -> Decision:
        credential = credential_of(headers)
        if isinstance(credential, Reason):
            if credential is not Reason.MISSING_CREDENTIAL or not self.allow_anonymous:
                return _deny(credential)
            caller = None
            principal_id = key_id = correlation = None
            tier, scopes, subject = 0, _NO_SCOPES, f"anon:{client}"
        else:
            try:
                if self.tokens is None or credential.count(".") != 2:
                    # an API key: the hot path, without building a Caller (0.5 µs of ~7)
                    who = self.directory.authenticate_key(credential, now)
                    principal_id = subject = who.principal.id
                    assert who.key is not None
                    key_id, tier, scopes = who.key.key_id, who.tier, who.scopes
                    caller = correlation = None
                else:
                    caller = self._token_caller(self.tokens, credential, now)
                    principal_id, key_id, tier, scopes, subject, _, correlation, _ = caller
            except AuthenticationFailed as exc:
                return _deny(exc.reason)
        route = self.policy.match(method, path)
        if route is None:
            return _deny(Reason.NO_ROUTE, principal_id, key_id, tier, correlation=correlation)
        verdict = check_access(route, tier, scopes)
        if verdict is not Reason.OK:
            if principal_id is None:  # a guest: authenticating is the way in, say so (401)
                verdict = Reason.MISSING_CREDENTIAL
            return _deny(
                verdict, principal_id, key_id, tier, route.min_tier, route.name, correlation
            )
        if (
            caller is not None
            and caller.amr  # a user's login, not a machine credential
            and route.min_tier in self.second_factor_tiers
            and "otp" not in caller.amr
        ):
            return Decision(
                Outcome.STEP_UP,
                Reason.STEP_UP_REQUIRED,
                401,
                principal_id,
                key_id,
                tier,
                route.min_tier,
                _NO_SCOPES,
                route.name,
            )
        limit = self._limits[tier]
        key = f"{subject}|{route.name}" if route.per_route else subject
        result = self.limiter.hit(key, now, limit, route.cost)
        reason = Reason.OK if result.allowed else Reason.RATE_LIMITED
        return Decision(
            Outcome.ALLOW if result.allowed else Outcome.DENY,
            reason,
            _STATUS[reason],
            principal_id,
            key_id,
            tier,
            route.min_tier,
            scopes,
            route.name,
            route.upstream,
            result,
            path,
            None if caller is None or caller.act is None else caller.actor,
            correlation,
        )


def credential_of(headers: Mapping[str, str]) -> str | Reason:
    """The credential a request carries (``Authorization: Bearer`` or ``X-API-Key``), or
    the reason there is none to use."""
    authorization = headers.get("authorization")
    credential: str | Reason
    if authorization is None:
        api_key = headers.get("x-api-key")
        credential = Reason.MISSING_CREDENTIAL if api_key is None else api_key.strip()
    else:
        credential = _bearer(authorization, headers.get("x-api-key"))
    if not credential or len(credential) > MAX_CREDENTIAL_LEN:
        return Reason.MALFORMED_CREDENTIAL
    return credential


def _bearer(authorization: str, api_key: str | None) -> str | Reason:
    """The key in ``Authorization: Bearer <key>``, checked against any ``X-API-Key``."""
    scheme, _, value = authorization.strip().partition(" ")
    value = value.strip()
    if scheme.lower() != "bearer" or not value:
        return Reason.MALFORMED_CREDENTIAL
    if api_key is not None and api_key.strip() != value:
        return Reason.AMBIGUOUS_CREDENTIAL
    return value
