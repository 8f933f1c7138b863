"""Gateway mode: decide each request, then pass the allowed ones to their route's upstream.

What reaches the upstream, and what does not:

- the normalised path the policy judged (``/v1/models/../tune`` goes up as ``/v1/tune``) and
  the query as sent;
- the client's headers, less hop-by-hop ones (RFC 9110 §7.6.1, and any that ``Connection``
  names), less its credential (``Authorization``, ``X-API-Key``) and any ``X-Auth-*`` it
  tried to set; in their place ``X-Auth-Principal``, ``X-Auth-Tier``, ``X-Auth-Scopes`` and
  ``X-Auth-Key-Id``;
- ``X-Forwarded-For``, ``-Proto``, ``-Host`` and ``Forwarded`` (RFC 7239): extended when the
  peer is a trusted proxy, replaced otherwise, so a client cannot forge its address;
- ``X-Request-Id``: the request's id (the client's only from a trusted proxy).

The answer goes back less its hop-by-hop headers, with the request id and ``RateLimit-*``.
A failure is 502 (unreachable, garbage, closed before answering), 504 (too slow) or 503
(connection bound) with a stable code and the request id, and an audit event naming the
upstream and URL; a body that breaks off after its head is cut off with the connection, so
the client sees a truncated message, never a short one that looks complete.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Mapping
from functools import partial

from authgate.audit.event import AuditEvent, EventType, new_event_id
from authgate.audit.sink import AuditSink
from authgate.clock import Clock
from authgate.config import Route
from authgate.dataplane.body import BodyError, BodyStream
from authgate.dataplane.forward_auth import (
    client_address,
    denial,
    identity_headers,
    ratelimit_headers,
)
from authgate.dataplane.http import Request, Response, StreamingResponse, error_response
from authgate.dataplane.upstream import (
    IDEMPOTENT,
    StaleConnection,
    Target,
    Upstream,
    UpstreamError,
    UpstreamResponse,
)
from authgate.decide import Decision, DecisionEngine
from authgate.errors import AuditUnavailable
from authgate.policy import normalize_path

log = logging.getLogger(__name__)

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-authenticate",
        "proxy-authorization",
    }
)
# Request headers never passed on as the client sent them.
_DROP_REQUEST = HOP_BY_HOP | {
    "host",
    "content-length",
    "expect",
    "authorization",
    "x-api-key",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-request-id",
}
# Response headers the server writes itself, or that belong to the upstream hop.
_DROP_RESPONSE = HOP_BY_HOP | {"content-length", "date", "x-request-id"}


class Proxy:
    """The gateway's handler for every path that is not authgate's own."""

    def __init__(
        self,
        engine: DecisionEngine,
        upstreams: Mapping[str, Upstream],
        routes: Mapping[str, Route],
        sink: AuditSink,
        clock: Clock,
        *,
        durable: bool = False,
        scheme: str = "http",
    ) -> None:
        self.engine = engine
        self.upstreams = upstreams
        self.routes = routes
        self.sink = sink
        self.clock = clock
        self.durable = durable
        self.scheme = scheme

    def __call__(self, request: Request) -> Response | Awaitable[Response]:
        """Decide; answer a denial at once, or forward."""
        if self.durable:
            return self._durable(request)
        d = self.engine.decide(
            request.method,
            request.target,
            request.headers,
            client_address(request),
            request.request_id,
        )
        if d.status != 200:
            return denial(d, request.request_id)
        return self._go(request, d)

    async def _durable(self, request: Request) -> Response:
        d = await self.engine.decide_durable(
            request.method,
            request.target,
            request.headers,
            client_address(request),
            request.request_id,
        )
        if d.status != 200:
            return denial(d, request.request_id)
        result = self._go(request, d)
        return result if isinstance(result, Response) else await result

    def _go(self, request: Request, d: Decision) -> Response | Awaitable[Response]:
        """Forward an allowed request: on an idle connection at once (a future settled by
        the upstream connection's callbacks), else through the pool's coroutine."""
        upstream = self.upstreams.get(d.upstream or "")
        if upstream is None:  # config validation makes this unreachable; fail closed
            return error_response(502, "no_upstream", request.request_id)
        target = request.target
        path = normalize_path(target) or "/"
        cut = target.find("?")
        if cut >= 0:
            path += target[cut:].split("#", 1)[0]
        headers = self._headers(request, d)
        host = request.headers.get("host") if upstream.settings.preserve_host else None
        started = time.perf_counter_ns()
        if request.stream is None:
            out: asyncio.Future[Response] = upstream.loop.create_future()

            def on_answer(result: UpstreamResponse | UpstreamError | BodyError) -> None:
                if isinstance(result, UpstreamResponse):
                    out.set_result(self._respond(request, d, upstream, result, started))
                elif isinstance(result, StaleConnection) and request.method in IDEMPOTENT:
                    retry = upstream.loop.create_task(
                        self._forward(request, d, upstream, path, headers, host, started, True)
                    )
                    retry.add_done_callback(partial(_chain, out))
                else:
                    out.set_result(self._failed(request, d, upstream, result, started))

            first = upstream.pick()
            body = request.body
            if upstream.send_now(first, request.method, path, headers, host, body, on_answer):
                return out
            return self._forward(request, d, upstream, path, headers, host, started, first=first)
        return self._forward(request, d, upstream, path, headers, host, started)

    async def _forward(
        self,
        request: Request,
        d: Decision,
        upstream: Upstream,
        path: str,
        headers: str,
        host: str | None,
        started: int,
        fresh: bool = False,
        first: Target | None = None,
    ) -> Response:
        body: bytes | BodyStream = request.stream if request.stream is not None else request.body
        try:
            response = await upstream.request(
                request.method, path, headers, host, body, fresh, first
            )
        except (UpstreamError, BodyError) as exc:
            return self._failed(request, d, upstream, exc, started)
        return self._respond(request, d, upstream, response, started)

    def _failed(
        self,
        request: Request,
        d: Decision,
        upstream: Upstream,
        error: UpstreamError | BodyError,
        started: int,
    ) -> Response:
        if isinstance(error, UpstreamError):
            code, url, detail = error.code, error.target, error.detail
            self._audit(request, d, upstream, error.status, code, url, detail, started)
        # else the client's body failed first (timeout, too large): its status says so
        return error_response(error.status, error.code, request.request_id)

    def _respond(
        self,
        request: Request,
        d: Decision,
        upstream: Upstream,
        response: UpstreamResponse,
        started: int,
    ) -> Response:
        named = _NONE
        for name, value in response.headers:
            if name == "connection":
                named = _tokens(value)
        headers = "".join(
            f"{name}: {value}\r\n"
            for name, value in response.headers
            if name not in _DROP_RESPONSE and name not in named
        ) + ratelimit_headers(d.ratelimit)
        stream = response.stream
        if stream is None:
            if request.method == "HEAD":  # announce the upstream's length, send no body
                length = next((v for k, v in response.headers if k == "content-length"), None)
                if length is not None:
                    return StreamingResponse(response.status, headers, _nothing(), int(length))
            return Response(response.status, headers, response.body)
        return StreamingResponse(
            response.status,
            headers,
            self._relay(request, d, upstream, response, started),
            stream.length,
        )

    async def _relay(
        self,
        request: Request,
        d: Decision,
        upstream: Upstream,
        response: UpstreamResponse,
        started: int,
    ) -> AsyncIterator[bytes]:
        """The upstream's body as it arrives; a break is audited, then cuts the client off."""
        stream = response.stream
        assert stream is not None
        try:
            async for chunk in stream:
                yield chunk
        except BodyError as exc:
            self._audit(request, d, upstream, exc.status, exc.code, "", "body broke off", started)
            raise
        finally:
            if not stream.complete and stream.failed is None:
                # The client left (or we stopped): stop reading from the upstream.
                response.abandon()

    def _headers(self, request: Request, d: Decision) -> str:
        """The request's header block for the upstream, without Host and framing."""
        h = request.headers
        connection = h.get("connection")
        named = _tokens(connection) if connection else _NONE
        passed = "".join(
            f"{name}: {value}\r\n"
            for name, value in h.items()
            if name not in _DROP_REQUEST and not name.startswith("x-auth-") and name not in named
        )
        peer = request.peer
        trusted = request.trusted
        xff = h.get("x-forwarded-for") if trusted else None
        proto = (h.get("x-forwarded-proto") if trusted else None) or self.scheme
        host = (h.get("x-forwarded-host") if trusted else None) or h.get("host", "")
        node = f'"[{peer}]"' if ":" in peer else (peer or "unknown")
        element = f"for={node};proto={proto}"
        if host and '"' not in host and "\\" not in host:
            element += f';host="{host}"'
        forwarded = h.get("forwarded") if trusted else None
        return (
            f"{passed}{identity_headers(d)}"
            f"x-forwarded-for: {f'{xff}, {peer}' if xff else peer}\r\n"
            f"x-forwarded-proto: {proto}\r\nx-forwarded-host: {host}\r\n"
            f"forwarded: {f'{forwarded}, {element}' if forwarded else element}\r\n"
            f"x-request-id: {request.request_id}\r\n"
        )

    def _audit(
        self,
        request: Request,
        d: Decision,
        upstream: Upstream,
        status: int,
        code: str,
        url: str,
        detail: str,
        started: int,
    ) -> None:
        details = {"upstream": upstream.name, "detail": detail[:200]}
        if url:
            details["url"] = url
        event = AuditEvent(
            new_event_id(),
            self.clock.now_ns(),
            EventType.UPSTREAM,
            "proxy",
            "error",
            code,
            d.principal_id,
            d.key_id,
            d.tier_held,
            d.tier_required,
            d.route,
            request.method[:16],
            (normalize_path(request.target) or request.target)[:512],
            status,
            request.request_id,
            None,
            (time.perf_counter_ns() - started) // 1000,
            details,
        )
        try:
            self.sink.emit(event)
        except AuditUnavailable:
            log.error("audit unavailable: upstream failure %s not recorded", code)


async def _nothing() -> AsyncIterator[bytes]:
    return
    yield b""  # pragma: no cover - makes this an async generator


def _chain(out: asyncio.Future[Response], task: asyncio.Task[Response]) -> None:
    error = task.exception()
    if error is not None:
        out.set_exception(error)
    else:
        out.set_result(task.result())


_NONE: frozenset[str] = frozenset()
_token_cache: dict[str, frozenset[str]] = {}


def _tokens(value: str) -> frozenset[str]:
    """The lower-case names in a ``Connection`` header, memoised (they repeat)."""
    found = _token_cache.get(value)
    if found is None:
        if len(_token_cache) > 1024:
            _token_cache.clear()
        found = _token_cache[value] = frozenset(
            t.strip().lower() for t in value.split(",") if t.strip()
        )
    return found
