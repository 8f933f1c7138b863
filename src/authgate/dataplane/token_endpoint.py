"""``POST /v1/token`` (OAuth 2.0 client credentials, RFC 6749 §4.4) and
``GET /.well-known/jwks.json``.

The client is an API key: HTTP Basic with the key id as user and the key (or its secret
part) as password, or the key as a bearer credential or ``X-API-Key``. The body is a form or
JSON with ``grant_type=client_credentials`` and an optional ``scope`` that may narrow the
key's scopes, never widen them. The answer is RFC 6749 §5.1 (``access_token``,
``token_type``, ``expires_in``, ``scope``, ``Cache-Control: no-store``); errors are §5.2
(``invalid_request``, ``invalid_client`` with 401 and a Basic challenge,
``unsupported_grant_type``, ``invalid_scope``). Token requests count against the
principal's tier limit in a budget of their own (429 with ``Retry-After`` beyond it). Every
issue and refusal is audited; a token
the audit ledger cannot record is not issued (503 ``audit_unavailable``).
"""

from __future__ import annotations

import base64
import binascii
import functools

from authgate.audit.event import EventType
from authgate.dataplane.endpoints import NO_STORE, audit, post_only, refusal
from authgate.dataplane.endpoints import params as read_params
from authgate.dataplane.forward_auth import client_address, ratelimit_headers
from authgate.dataplane.http import Request, Response, error_response, json_response
from authgate.decide import DecisionEngine
from authgate.errors import AuthenticationFailed, LockedOut, Reason
from authgate.identity.ids import Kind
from authgate.identity.service import IdentityService
from authgate.tokens import Claims, Tokens

_audit = functools.partial(audit, kind=EventType.TOKEN)  # an ``issue`` or ``login`` event

PATH = "/v1/token"
LOGIN_PATH = "/v1/login"
JWKS_PATH = "/.well-known/jwks.json"


class TokenEndpoint:
    """Issues access tokens for API keys."""

    def __init__(self, engine: DecisionEngine, tokens: Tokens) -> None:
        self.engine = engine
        self.tokens = tokens

    def jwks(self, request: Request) -> Response:
        """The public signing keys."""
        return json_response(200, self.tokens.ring.jwks(), "cache-control: public, max-age=300\r\n")

    def __call__(self, request: Request) -> Response:
        """One token request."""
        if request.method != "POST":
            return post_only(request)
        params = read_params(request)
        if params is None:
            return self._error(request, 400, "invalid_request", Reason.MALFORMED_REQUEST)
        if params.get("grant_type") != "client_credentials":
            return self._error(request, 400, "unsupported_grant_type", Reason.MALFORMED_REQUEST)
        key = _client_key(request)
        if key is None:
            return self._error(request, 401, "invalid_client", Reason.MALFORMED_REQUEST)
        now = self.engine.clock.now_ns()
        try:
            who = self.engine.directory.authenticate_key(key, now)
        except AuthenticationFailed as exc:
            return self._error(request, 401, "invalid_client", exc.reason)
        assert who.key is not None
        pid, kid = who.principal.id, who.key.key_id
        limited = self.engine.charge(pid, who.tier, now, "token")
        if not limited.allowed:
            _audit(self.engine, request, "issue", "deny", Reason.RATE_LIMITED, 429, pid)
            wait = max(1, limited.retry_after_s)
            extra = f"{ratelimit_headers(limited)}retry-after: {wait}\r\n"
            return refusal(request, 429, "rate_limited", extra)
        asked = params.get("scope")
        wanted = frozenset(asked.split()) if isinstance(asked, str) else who.scopes
        if not isinstance(asked, str | None) or not wanted <= who.scopes:
            return self._error(request, 400, "invalid_scope", Reason.MISSING_SCOPE, pid)
        token, claims = self.tokens.issue(pid, who.tier, wanted, now, extra={"akid": kid})
        if not _audit(self.engine, request, "issue", "allow", Reason.OK, 200, pid, kid, who.tier):
            return error_response(503, "audit_unavailable", request.request_id)  # no token
        return _granted(token, claims)

    def _error(
        self,
        request: Request,
        status: int,
        error: str,
        reason: Reason,
        principal: str | None = None,
    ) -> Response:
        details = {"error": error}
        _audit(self.engine, request, "issue", "deny", reason, status, principal, details=details)
        challenge = 'www-authenticate: Basic realm="authgate"\r\n' if status == 401 else ""
        return refusal(request, status, error, challenge)


class LoginEndpoint:
    """``POST /v1/login``: a user's name and password for a token.

    Users only (``usr_`` principals). argon2 runs in its thread pool, never on the event
    loop; failures count towards the lockout of the name and of the client address, and a
    locked-out caller gets 429 with ``Retry-After``. The caller learns only
    ``invalid_grant``; the reason (``invalid_password``, ``invalid_second_factor``,
    ``unknown_principal``, ...) goes to the audit log.

    A user with a second factor adds ``otp`` (the current TOTP code). The token's ``amr``
    claim (RFC 8176) says how the login went: ``["pwd"]`` or ``["pwd", "otp"]``. Routes of
    the tiers in ``passwords.second_factor_tiers`` answer a password-only token with 401
    ``step_up_required`` (``WWW-Authenticate: Bearer error="insufficient_user_authentication"``,
    RFC 9470): the client logs in again with its code.
    """

    def __init__(self, engine: DecisionEngine, tokens: Tokens, identity: IdentityService) -> None:
        self.engine = engine
        self.tokens = tokens
        self.identity = identity

    async def __call__(self, request: Request) -> Response:
        """One login."""
        if request.method != "POST":
            return post_only(request)
        engine = self.engine
        params = read_params(request)
        name = params.get("username") if params else None
        password = params.get("password") if params else None
        code = params.get("otp") if params else None
        if (
            not isinstance(name, str)
            or not isinstance(password, str)
            or not isinstance(code, str | None)
            or not name
        ):
            _audit(engine, request, "login", "deny", Reason.MALFORMED_REQUEST, 400)
            return refusal(request, 400, "invalid_request")
        try:
            principal = await self.identity.login(name, password, client_address(request), code)
        except LockedOut as exc:
            _audit(engine, request, "login", "deny", Reason.LOCKED_OUT, 429)
            wait = max(1, int(exc.retry_after + 0.999))
            return refusal(request, 429, "locked_out", f"retry-after: {wait}\r\n")
        except AuthenticationFailed as exc:
            _audit(engine, request, "login", "deny", exc.reason, 401)
            return refusal(request, 401, "invalid_grant")
        if principal.kind is not Kind.USER:
            _audit(engine, request, "login", "deny", Reason.UNKNOWN_PRINCIPAL, 401, principal.id)
            return refusal(request, 401, "invalid_grant")
        now = engine.clock.now_ns()
        tier = principal.effective_tier(now)
        amr = ["pwd", "otp"] if code is not None else ["pwd"]  # RFC 8176 methods
        extra = {"amr": amr}
        token, claims = self.tokens.issue(principal.id, tier, principal.scopes, now, extra=extra)
        if not _audit(engine, request, "login", "allow", Reason.OK, 200, principal.id, None, tier):
            return error_response(503, "audit_unavailable", request.request_id)
        return _granted(token, claims)


def _granted(token: str, claims: Claims) -> Response:
    """RFC 6749 §5.1."""
    body = {
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": claims.exp - claims.iat,
        "scope": " ".join(sorted(claims.scope)),
    }
    return json_response(200, body, NO_STORE)


def _client_key(request: Request) -> str | None:
    headers = request.headers
    authorization = headers.get("authorization", "").strip()
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() == "basic":
        try:
            user, sep, password = (
                base64.b64decode(value.strip(), validate=True).decode().partition(":")
            )
        except (binascii.Error, UnicodeDecodeError):
            return None
        if not sep or not user or not password:
            return None
        return password if password.startswith("agk_") else f"agk_{user}_{password}"
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    key = headers.get("x-api-key")
    return key.strip() if key else None
