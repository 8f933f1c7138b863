"""The admin API (Starlette): principals and keys, for tier-5 credentials only.

JSON in and out. Errors are ``{"error": code, "message": ...}`` with the stable codes of
:mod:`authgate.errors`; a missing or bad credential is 401, a credential below tier 5 is 403.
Every change is written through the identity service (durable before it is answered) and
recorded as an ``admin`` audit event.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from authgate.audit import index, proofs
from authgate.audit.event import AuditEvent, EventType, new_event_id
from authgate.audit.sink import AuditSink
from authgate.clock import Clock
from authgate.errors import (
    AuthenticationFailed,
    AuthgateError,
    Forbidden,
    InvalidRequest,
    NotFound,
    Reason,
)
from authgate.identity.ids import Kind
from authgate.identity.service import IdentityService

ADMIN_TIER = 5
_STATUS = {
    "invalid_request": 400,
    "authentication_failed": 401,
    "forbidden": 403,
    "not_found": 404,
    "invalid_proof": 400,
    "conflict": 409,
    "store_unavailable": 503,
}

Endpoint = Callable[[Request, str], Awaitable[Any]]


class NewPrincipal(msgspec.Struct, forbid_unknown_fields=True):
    """Body of POST /admin/principals."""

    name: str
    kind: str = "usr"
    tier: int = 1
    scopes: list[str] = []
    password: str | None = None


class NewKey(msgspec.Struct, forbid_unknown_fields=True):
    """Body of POST /admin/principals/{ref}/keys."""

    name: str = ""
    tier: int | None = None
    scopes: list[str] | None = None
    ttl_s: float | None = None


class Elevation(msgspec.Struct, forbid_unknown_fields=True):
    """Body of POST /admin/principals/{ref}/elevate."""

    tier: int
    duration_s: float


class Rotation(msgspec.Struct, forbid_unknown_fields=True):
    """Body of POST /admin/keys/{key_id}/rotate."""

    overlap_s: float = 3600.0


async def _body(request: Request, kind: type[Any]) -> Any:
    raw = await request.body()
    try:
        return msgspec.json.decode(raw or b"{}", type=kind)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise InvalidRequest(f"invalid JSON body: {exc}") from None


def _target(request: Request) -> str:
    params = request.path_params
    return str(params.get("ref") or params.get("key_id") or "")


def _error(error: AuthgateError) -> JSONResponse:
    status = _STATUS.get(error.code, 500)
    headers = {"www-authenticate": 'Bearer realm="authgate-admin"'} if status == 401 else None
    return JSONResponse({"error": error.code, "message": error.message}, status, headers)


def build_admin_app(
    identity: IdentityService, sink: AuditSink, clock: Clock, log_dir: Path | None = None
) -> Starlette:
    """The admin API over an identity service; admin changes are audited into ``sink``.
    With ``log_dir`` (this worker's ledger) it also serves checkpoints, proofs and events."""

    def admin_of(request: Request) -> str:
        auth = request.headers.get("authorization", "")
        scheme, _, key = auth.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise AuthenticationFailed(Reason.MISSING_CREDENTIAL)
        who = identity.directory.authenticate_key(key.strip(), clock.now_ns())
        if who.tier < ADMIN_TIER:
            raise Forbidden("the admin API needs a tier-5 credential")
        return who.principal.id

    def endpoint(
        fn: Endpoint, action: str | None = None
    ) -> Callable[[Request], Awaitable[Response]]:
        async def handle(request: Request) -> Response:
            started = time.perf_counter_ns()
            try:
                admin = admin_of(request)
                result = await fn(request, admin)
            except AuthgateError as exc:
                return _error(exc)
            if action is not None:  # admin changes are audited durably before the answer
                await sink.emit_durable(
                    AuditEvent(
                        new_event_id(),
                        clock.now_ns(),
                        EventType.ADMIN,
                        action,
                        "allow",
                        "ok",
                        admin,
                        None,
                        ADMIN_TIER,
                        ADMIN_TIER,
                        None,
                        request.method,
                        request.url.path,
                        200,
                        None,
                        None,
                        (time.perf_counter_ns() - started) // 1000,
                        {"target": _target(request)},
                    )
                )
            return JSONResponse(result)

        return handle

    def now() -> int:
        return clock.now_ns()

    async def list_principals(request: Request, admin: str) -> Any:
        return [p.public(now()) for p in identity.principals()]

    async def add_principal(request: Request, admin: str) -> Any:
        body: NewPrincipal = await _body(request, NewPrincipal)
        try:
            kind = Kind(body.kind)
        except ValueError:
            raise InvalidRequest(f"unknown kind {body.kind!r}") from None
        created = await identity.create_principal(
            kind, body.name, body.tier, body.scopes, body.password
        )
        return created.public(now())

    async def show_principal(request: Request, admin: str) -> Any:
        found = identity.principal(request.path_params["ref"])
        view = found.public(now())
        view["keys"] = [k.public(now()) for k in identity.keys(found.id)]
        return view

    async def disable(request: Request, admin: str) -> Any:
        return (await identity.set_disabled(request.path_params["ref"], True)).public(now())

    async def enable(request: Request, admin: str) -> Any:
        return (await identity.set_disabled(request.path_params["ref"], False)).public(now())

    async def elevate(request: Request, admin: str) -> Any:
        body: Elevation = await _body(request, Elevation)
        done = await identity.elevate(request.path_params["ref"], body.tier, body.duration_s)
        return done.public(now())

    async def enroll_totp(request: Request, admin: str) -> Any:
        return await identity.second_factor(request.path_params["ref"], True)

    async def remove_totp(request: Request, admin: str) -> Any:
        return await identity.second_factor(request.path_params["ref"], False)

    async def list_keys(request: Request, admin: str) -> Any:
        return [k.public(now()) for k in identity.keys(request.query_params.get("principal"))]

    async def issue(request: Request, admin: str) -> Any:
        body: NewKey = await _body(request, NewKey)
        issued = await identity.issue_key(
            request.path_params["ref"], body.name, body.tier, body.scopes, body.ttl_s
        )
        return {**issued.record.public(now()), "key": issued.key}

    async def revoke(request: Request, admin: str) -> Any:
        return (await identity.revoke_key(request.path_params["key_id"])).public(now())

    async def rotate(request: Request, admin: str) -> Any:
        body: Rotation = await _body(request, Rotation)
        issued = await identity.rotate_key(request.path_params["key_id"], body.overlap_s)
        return {**issued.record.public(now()), "key": issued.key}

    def need_log() -> Path:
        if log_dir is None:
            raise NotFound("the audit ledger is off")
        return log_dir

    def int_param(request: Request, name: str) -> int:
        raw = request.query_params.get(name, "")
        if not raw.isdigit():
            raise InvalidRequest(f"query parameter {name!r} must be a non-negative integer")
        return int(raw)

    async def checkpoint(request: Request, admin: str) -> Any:
        note, cp = await asyncio.to_thread(proofs.latest_checkpoint, need_log())
        return {"origin": cp.origin, "size": cp.size, "root": cp.root.hex(), "note": note}

    async def inclusion(request: Request, admin: str) -> Any:
        seq = int_param(request, "seq")
        return await asyncio.to_thread(proofs.inclusion, need_log(), seq)

    async def consistency(request: Request, admin: str) -> Any:
        size1, size2 = int_param(request, "from"), int_param(request, "to")
        return await asyncio.to_thread(proofs.consistency, need_log(), size1, size2)

    async def events(request: Request, admin: str) -> Any:
        params = request.query_params
        limit = int_param(request, "limit") if "limit" in params else 100
        q = index.Query(
            principal=params.get("principal"),
            type=params.get("type"),
            outcome=params.get("outcome"),
            reason=params.get("reason"),
            request_id=params.get("request_id"),
            correlation_id=params.get("correlation_id"),
            limit=min(limit, 10_000),
        )
        return await asyncio.to_thread(index.query, need_log(), q)

    routes = [
        Route("/audit/checkpoint", endpoint(checkpoint), methods=["GET"]),
        Route("/audit/proof/inclusion", endpoint(inclusion), methods=["GET"]),
        Route("/audit/proof/consistency", endpoint(consistency), methods=["GET"]),
        Route("/audit/events", endpoint(events), methods=["GET"]),
        Route("/admin/principals", endpoint(list_principals), methods=["GET"]),
        Route("/admin/principals", endpoint(add_principal, "principal.add"), methods=["POST"]),
        Route("/admin/principals/{ref}", endpoint(show_principal), methods=["GET"]),
        Route(
            "/admin/principals/{ref}/disable",
            endpoint(disable, "principal.disable"),
            methods=["POST"],
        ),
        Route(
            "/admin/principals/{ref}/enable", endpoint(enable, "principal.enable"), methods=["POST"]
        ),
        Route(
            "/admin/principals/{ref}/elevate",
            endpoint(elevate, "principal.elevate"),
            methods=["POST"],
        ),
        Route(
            "/admin/principals/{ref}/totp",
            endpoint(enroll_totp, "principal.totp"),
            methods=["POST"],
        ),
        Route(
            "/admin/principals/{ref}/totp",
            endpoint(remove_totp, "principal.totp_remove"),
            methods=["DELETE"],
        ),
        Route("/admin/principals/{ref}/keys", endpoint(issue, "key.issue"), methods=["POST"]),
        Route("/admin/keys", endpoint(list_keys), methods=["GET"]),
        Route("/admin/keys/{key_id}/revoke", endpoint(revoke, "key.revoke"), methods=["POST"]),
        Route("/admin/keys/{key_id}/rotate", endpoint(rotate, "key.rotate"), methods=["POST"]),
    ]
    return Starlette(routes=routes)
