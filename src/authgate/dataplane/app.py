"""The data plane's routes: forward-auth, health and readiness, and the gateway."""

from __future__ import annotations

from collections.abc import Callable

from authgate.dataplane.forward_auth import PREFIX, ForwardAuth
from authgate.dataplane.handoff_endpoint import CREATE_PATH, REDEEM_PATH, HandoffEndpoint
from authgate.dataplane.http import Handler, Request, Response, json_response
from authgate.dataplane.router import Router
from authgate.dataplane.token_endpoint import JWKS_PATH, LOGIN_PATH, LoginEndpoint, TokenEndpoint
from authgate.dataplane.token_endpoint import PATH as TOKEN_PATH
from authgate.decide import DecisionEngine
from authgate.handoff import Handoffs
from authgate.identity.service import IdentityService


def build_router(
    engine: DecisionEngine,
    ready: Callable[[], dict[str, bool]],
    *,
    durable: bool = False,
    proxy: Handler | None = None,
    identity: IdentityService | None = None,
    handoffs: Handoffs | None = None,
) -> Router:
    """Routes for ``authgate serve``: ``/v1/authorize[/...]``, ``/healthz``, ``/readyz``,
    ``/v1/token``, ``/.well-known/jwks.json`` and, given ``identity``, ``/v1/login`` (with
    tokens on), given ``handoffs`` ``/v1/handoffs`` and ``/v1/handoffs/redeem``, and in
    gateway mode (``proxy``) every other path.

    ``ready`` returns named checks; ``/readyz`` is 200 when all pass, 503 otherwise. With
    ``durable``, forward-auth answers only once the decision's audit event is fsynced.
    """
    router = Router()
    if proxy is not None:
        router.set_fallback(proxy, streams=True)
    authorize = ForwardAuth(engine, durable=durable)
    router.add(PREFIX, authorize)
    router.add_prefix(PREFIX + "/", authorize)

    def healthz(request: Request) -> Response:
        return json_response(200, {"status": "ok"})

    def readyz(request: Request) -> Response:
        checks = ready()
        ok = all(checks.values())
        return json_response(200 if ok else 503, {"ready": ok, "checks": checks})

    if engine.tokens is not None:
        endpoint = TokenEndpoint(engine, engine.tokens)
        router.add(TOKEN_PATH, endpoint)
        router.add(JWKS_PATH, endpoint.jwks)
        if identity is not None:
            router.add(LOGIN_PATH, LoginEndpoint(engine, engine.tokens, identity))
        if handoffs is not None:
            handoff = HandoffEndpoint(engine, engine.tokens, handoffs)
            router.add(CREATE_PATH, handoff.create)
            router.add(REDEEM_PATH, handoff.redeem)

    router.add("/healthz", healthz)
    router.add("/readyz", readyz)
    return router
