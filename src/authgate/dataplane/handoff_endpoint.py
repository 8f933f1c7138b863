"""``POST /v1/handoffs`` and ``POST /v1/handoffs/redeem``: context handoffs between agents.

Both authenticate the caller as the data plane does (an API key or a token, including a
delegated token from an earlier handoff) and count against its tier's limit in a budget of
their own. Bodies are JSON.

Create (principal A)::

    {"to": "agt_... | a name | aud:NAME", "scopes": ["chat"], "context": {...}, "ttl_s": 300}
    -> 201 {"ticket": "agh_...", "handoff_id", "to", "scopes", "expires_in", "correlation_id"}

``scopes`` (a list or a space-separated string; default: all of A's) may narrow A's, never
widen them. ``to`` is a principal (by id or name), or ``aud:NAME``: any principal holding
that scope may redeem.

Redeem (principal B)::

    {"ticket": "agh_..."}
    -> 200 {"from", "created_by", "context", "scopes", "tier", "act", "correlation_id",
            "access_token", "token_type", "expires_in"}

The access token is a delegated token: ``sub`` is A's subject, ``act`` names B acting for it
(RFC 8693, nesting earlier actors), with the handoff's scopes and the lower of A's and B's
tiers. A chain (B hands on to C with its delegated token) keeps the whole ``act`` chain and
can only narrow. Refusals: 404 ``unknown_ticket``, 403 ``wrong_recipient`` (the ticket stays
valid for its recipient), 409 ``ticket_redeemed``, 410 ``ticket_expired`` — each also a
``handoff`` audit event marked ``severity: security``. The correlation id ties the create,
the redeem and every request made with the delegated token together in the audit log.
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec

from authgate.audit.event import EventType
from authgate.dataplane.endpoints import NO_STORE, audit, post_only, refusal
from authgate.dataplane.forward_auth import ratelimit_headers
from authgate.dataplane.http import Request, Response, error_response, json_response
from authgate.decide import Caller, DecisionEngine, credential_of
from authgate.errors import (
    AuthenticationFailed,
    HandoffRefused,
    InvalidRequest,
    Reason,
    StoreUnavailable,
)
from authgate.handoff import AUDIENCE_PREFIX, Handoffs, Party
from authgate.tokens import Tokens

CREATE_PATH = "/v1/handoffs"
REDEEM_PATH = "/v1/handoffs/redeem"

_REFUSED: dict[Reason, tuple[int, str]] = {
    Reason.MISSING_SCOPE: (403, "invalid_scope"),
    Reason.UNKNOWN_TICKET: (404, "unknown_ticket"),
    Reason.WRONG_RECIPIENT: (403, "wrong_recipient"),
    Reason.TICKET_REDEEMED: (409, "ticket_redeemed"),
    Reason.TICKET_EXPIRED: (410, "ticket_expired"),
}


class CreateBody(msgspec.Struct, forbid_unknown_fields=True):
    """The body of a create."""

    to: str
    context: msgspec.Raw = msgspec.field(default_factory=lambda: msgspec.Raw(b"null"))
    scopes: list[str] | str | None = None
    ttl_s: float | None = None


class RedeemBody(msgspec.Struct, forbid_unknown_fields=True):
    """The body of a redeem."""

    ticket: str


B = TypeVar("B", CreateBody, RedeemBody)


class _Refusal(Exception):
    """An answer already decided (and audited) on the way through."""

    def __init__(self, response: Response) -> None:
        self.response = response


class HandoffEndpoint:
    """The two handoff routes over a decision engine, the token service and the tickets."""

    def __init__(self, engine: DecisionEngine, tokens: Tokens, handoffs: Handoffs) -> None:
        self.engine = engine
        self.tokens = tokens
        self.handoffs = handoffs

    async def create(self, request: Request) -> Response:
        """Create a ticket."""
        try:
            caller = self._caller(request, "create")
            body = self._body(request, CreateBody, "create", caller)
            to = self._recipient(request, body.to, caller)
        except _Refusal as refused:
            return refused.response
        try:
            ticket, handoff = await self.handoffs.create(
                _party(caller), to, _scopes(body.scopes), bytes(body.context), body.ttl_s
            )
        except (InvalidRequest, HandoffRefused) as exc:
            return self._refuse(request, "create", caller, exc)
        except StoreUnavailable:
            return error_response(503, "store_unavailable", request.request_id)
        if not self._audit(request, "create", caller, Reason.OK, 201, handoff.about()):
            return error_response(503, "audit_unavailable", request.request_id)
        answer = {
            "ticket": ticket,
            "handoff_id": handoff.ticket_id,
            "to": handoff.to,
            "scopes": sorted(handoff.scopes),
            "expires_in": (handoff.expires_ns - handoff.created_ns) // 1_000_000_000,
            "correlation_id": handoff.correlation_id,
        }
        return json_response(201, answer, NO_STORE)

    async def redeem(self, request: Request) -> Response:
        """Redeem a ticket, exactly once."""
        try:
            caller = self._caller(request, "redeem")
            body = self._body(request, RedeemBody, "redeem", caller)
        except _Refusal as refused:
            return refused.response
        try:
            won = await self.handoffs.redeem(body.ticket, _party(caller))
        except (InvalidRequest, HandoffRefused) as exc:
            return self._refuse(request, "redeem", caller, exc)
        except StoreUnavailable:
            return error_response(503, "store_unavailable", request.request_id)
        handoff = won.handoff
        extra: dict[str, Any] = {"act": won.act, "cid": handoff.correlation_id}
        if handoff.akid is not None:
            extra["akid"] = handoff.akid
        now = self.engine.clock.now_ns()
        token, claims = self.tokens.issue(
            handoff.subject, won.tier, handoff.scopes, now, extra=extra
        )
        if not self._audit(request, "redeem", caller, Reason.OK, 200, handoff.about()):
            return error_response(503, "audit_unavailable", request.request_id)
        answer = {
            "from": handoff.subject,
            "created_by": handoff.creator,
            "context": msgspec.Raw(won.context),
            "scopes": sorted(handoff.scopes),
            "tier": won.tier,
            "act": won.act,
            "correlation_id": handoff.correlation_id,
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": claims.exp - claims.iat,
        }
        return json_response(200, answer, NO_STORE)

    # -- the steps -----------------------------------------------------------------------

    def _caller(self, request: Request, action: str) -> Caller:
        if request.method != "POST":
            raise _Refusal(post_only(request))
        engine = self.engine
        now = engine.clock.now_ns()
        credential = credential_of(request.headers)
        try:
            if isinstance(credential, Reason):
                raise AuthenticationFailed(credential)
            caller = engine.identify(credential, now)
        except AuthenticationFailed as exc:
            self._event(request, action, "deny", exc.reason, 401)
            challenge = 'www-authenticate: Bearer realm="authgate"\r\n'
            raise _Refusal(refusal(request, 401, "unauthorized", challenge)) from None
        limited = engine.charge(caller.actor, caller.tier, now, "handoff")
        if not limited.allowed:
            self._audit(request, action, caller, Reason.RATE_LIMITED, 429)
            wait = max(1, limited.retry_after_s)
            extra = f"{ratelimit_headers(limited)}retry-after: {wait}\r\n"
            raise _Refusal(refusal(request, 429, "rate_limited", extra))
        return caller

    def _body(self, request: Request, kind: type[B], action: str, caller: Caller) -> B:
        try:
            return msgspec.json.decode(request.body, type=kind)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            self._audit(request, action, caller, Reason.MALFORMED_REQUEST, 400)
            raise _Refusal(refusal(request, 400, "invalid_request", "", str(exc))) from None

    def _recipient(self, request: Request, to: str, caller: Caller) -> str:
        if to.startswith(AUDIENCE_PREFIX) and 4 < len(to) <= 132:
            return to
        principal = self.engine.directory.find(to)
        if principal is None or principal.disabled:
            self._audit(request, "create", caller, Reason.UNKNOWN_PRINCIPAL, 400)
            message = "'to' names no enabled principal (an id, a name or aud:NAME)"
            raise _Refusal(refusal(request, 400, "invalid_recipient", "", message))
        return principal.id

    def _refuse(
        self,
        request: Request,
        action: str,
        caller: Caller,
        exc: InvalidRequest | HandoffRefused,
    ) -> Response:
        if isinstance(exc, InvalidRequest):
            self._audit(request, action, caller, Reason.MALFORMED_REQUEST, 400)
            return refusal(request, 400, "invalid_request", "", exc.message)
        status, code = _REFUSED.get(exc.reason, (403, "forbidden"))
        security = action == "redeem"
        self._audit(request, action, caller, exc.reason, status, exc.ticket, security=security)
        return refusal(request, status, code)

    def _audit(
        self,
        request: Request,
        action: str,
        caller: Caller,
        reason: Reason,
        status: int,
        ticket: dict[str, str] | None = None,
        *,
        security: bool = False,
    ) -> bool:
        details = {"actor": caller.actor}
        correlation = caller.correlation
        if ticket is not None:
            details.update(ticket)
            correlation = details.pop("correlation_id")
        if security:
            details["severity"] = "security"
        outcome = "allow" if reason is Reason.OK else "deny"
        return self._event(request, action, outcome, reason, status, caller, details, correlation)

    def _event(
        self,
        request: Request,
        action: str,
        outcome: str,
        reason: Reason,
        status: int,
        caller: Caller | None = None,
        details: dict[str, str] | None = None,
        correlation: str | None = None,
    ) -> bool:
        principal, key_id, tier = (None, None, None) if caller is None else caller[:3]
        return audit(
            self.engine,
            request,
            action,
            outcome,
            reason,
            status,
            principal,
            key_id,
            tier,
            details,
            correlation,
            kind=EventType.HANDOFF,
        )


def _party(caller: Caller) -> Party:
    return Party(
        caller.actor,
        caller.principal_id,
        caller.tier,
        caller.scopes,
        caller.key_id,
        caller.act,
        caller.correlation,
    )


def _scopes(scopes: list[str] | str | None) -> frozenset[str] | None:
    if scopes is None:
        return None
    return frozenset(scopes.split() if isinstance(scopes, str) else scopes)
