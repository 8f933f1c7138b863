"""Forward-auth: nginx ``auth_request``, Traefik ForwardAuth, Envoy ``ext_authz``.

The original request is read from, in order:

1. ``X-Forwarded-Method`` / ``X-Forwarded-Uri`` (Traefik) or ``X-Original-Method`` /
   ``X-Original-URI`` (nginx) — only when the sender is a configured trusted proxy;
2. the path after the endpoint's prefix, with this request's method (Envoy ``ext_authz``
   with ``path_prefix``): ``GET /v1/authorize/v1/models`` decides ``GET /v1/models``.

Headers of an untrusted sender are ignored, never believed. Allow is 200 with identity and
``RateLimit-*`` headers; deny is 401 (with ``WWW-Authenticate``), 403, 429 (with
``Retry-After``) or 400, with a small JSON body holding a stable code and the request id —
the precise reason goes to the audit event only.
"""

from __future__ import annotations

from collections.abc import Awaitable

from authgate.dataplane.http import Request, Response, header_block, json_response
from authgate.decide import Decision, DecisionEngine
from authgate.errors import Reason
from authgate.ratelimit.gcra import GcraResult

PREFIX = "/v1/authorize"

_CODES = {400: "invalid_request", 401: "authentication_failed", 403: "forbidden"}
_CODES.update({429: "rate_limited", 500: "internal_error", 503: "audit_unavailable"})
_CHALLENGE = 'Bearer realm="authgate"'
_INVALID = 'Bearer realm="authgate", error="invalid_token"'
_INVALID_REQUEST = 'Bearer realm="authgate", error="invalid_request"'
# RFC 9470 (OAuth step-up): log in again with a second factor, then retry
_STEP_UP = (
    'Bearer realm="authgate", error="insufficient_user_authentication", '
    'error_description="a second factor is required", acr_values="otp"'
)


def original_request(request: Request) -> tuple[str, str]:
    """The method and target the caller is asking about."""
    headers = request.headers
    if request.trusted:
        uri = headers.get("x-forwarded-uri") or headers.get("x-original-uri")
        if uri is not None:
            method = headers.get("x-forwarded-method") or headers.get("x-original-method")
            return (method or request.method).upper(), uri
    target = request.target
    rest = target[len(PREFIX) :] if target.startswith(PREFIX) else ""
    if not rest or rest[0] == "?":
        rest = "/" + rest
    return request.method, rest


def client_address(request: Request) -> str:
    """The client: the peer, or for a trusted proxy the last X-Forwarded-For hop it added."""
    if request.trusted:
        forwarded = request.headers.get("x-forwarded-for")
        if forwarded:
            return forwarded.rsplit(",", 1)[-1].strip()[:64]
    return request.peer


class ForwardAuth:
    """The ``/v1/authorize`` handler over a decision engine."""

    def __init__(self, engine: DecisionEngine, *, durable: bool = False) -> None:
        self.engine = engine
        self.durable = durable

    def __call__(self, request: Request) -> Response | Awaitable[Response]:
        """Decide the original request and answer as the proxies expect."""
        if self.durable:
            return self._durable(request)
        method, target = original_request(request)
        decision = self.engine.decide(
            method, target, request.headers, client_address(request), request.request_id
        )
        if decision.status == 200:
            return self._allow(decision)
        return denial(decision, request.request_id)

    async def _durable(self, request: Request) -> Response:
        method, target = original_request(request)
        decision = await self.engine.decide_durable(
            method, target, request.headers, client_address(request), request.request_id
        )
        if decision.status == 200:
            return self._allow(decision)
        return denial(decision, request.request_id)

    def _allow(self, d: Decision) -> Response:
        return Response(200, ratelimit_headers(d.ratelimit) + identity_headers(d))


_scope_text: dict[frozenset[str], str] = {}  # scope set -> header value, memoised


def identity_headers(d: Decision) -> str:
    """Who the caller is, for the upstream: ``X-Auth-Principal``, ``-Tier``, ``-Scopes`` and
    ``-Key-Id``, and for a delegated token ``X-Auth-Actor`` and ``X-Correlation-Id`` (one
    f-string: it is on the hot path)."""
    scopes = _scope_text.get(d.scopes)
    if scopes is None:
        if len(_scope_text) > 4096:
            _scope_text.clear()
        scopes = _scope_text[d.scopes] = " ".join(sorted(d.scopes))
    key = f"x-auth-key-id: {d.key_id}\r\n" if d.key_id is not None else ""
    if d.actor is not None:  # a delegated token: who acts, and the work it belongs to
        key += f"x-auth-actor: {d.actor}\r\nx-correlation-id: {d.correlation}\r\n"
    return (
        f"x-auth-principal: {d.principal_id or 'anonymous'}\r\n"
        f"x-auth-tier: {d.tier_held}\r\nx-auth-scopes: {scopes}\r\n{key}"
    )


def ratelimit_headers(rl: GcraResult | None) -> str:
    """The ``RateLimit-*`` header block (one f-string: it is on the hot path)."""
    if rl is None:
        return ""
    limit = rl.limit
    return (
        f"ratelimit-limit: {limit.burst}\r\nratelimit-remaining: {rl.remaining}\r\n"
        f"ratelimit-reset: {-(-rl.reset_ns // 1_000_000_000)}\r\n"
        f"ratelimit-policy: {limit.rate};w={limit.period_s};burst={limit.burst}\r\n"
    )


def denial(decision: Decision, request_id: str) -> Response:
    """The HTTP answer for a denial: its challenge or Retry-After, and an opaque body."""
    headers: list[tuple[str, str]] = []
    rl = decision.ratelimit
    status = decision.status
    if status == 401:
        reason = decision.reason
        if reason is Reason.MISSING_CREDENTIAL:
            challenge = _CHALLENGE
        elif reason is Reason.STEP_UP_REQUIRED:
            challenge = _STEP_UP
        elif reason in (Reason.MALFORMED_CREDENTIAL, Reason.AMBIGUOUS_CREDENTIAL):
            challenge = _INVALID_REQUEST
        else:
            challenge = _INVALID
        headers.append(("www-authenticate", challenge))
    elif status == 429 and rl is not None:
        headers.append(("retry-after", str(max(1, rl.retry_after_s))))
    code = "step_up_required" if decision.reason is Reason.STEP_UP_REQUIRED else None
    body = {"error": code or _CODES.get(status, "forbidden"), "request_id": request_id}
    return json_response(status, body, ratelimit_headers(rl) + header_block(headers))
