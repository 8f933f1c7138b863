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
from authgate.dataplane.cache import ResponseCache
from authgate.dataplane.compress import Compressor, adjust_headers
from authgate.dataplane.forward_auth import client_address, denial, ratelimit_headers
from authgate.dataplane.forwarding import (
    pairs,
    upstream_headers,
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


class Call:
    """One forwarded request's context, carried from the decision to the answer. On the
    fast path it is also the upstream connection's answer callback (no closure per call)."""

    __slots__ = (
        "cache_scope",
        "d",
        "headers",
        "host",
        "out",
        "path",
        "proxy",
        "request",
        "route",
        "started",
        "upstream",
    )

    def __init__(
        self,
        proxy: Proxy,
        request: Request,
        d: Decision,
        upstream: Upstream,
        route: Route | None,
        path: str,
    ) -> None:
        self.proxy = proxy
        self.request = request
        self.d = d
        self.upstream = upstream
        self.route = route
        self.path = path
        self.started = time.perf_counter_ns()
        self.cache_scope: str | None = None  # set when the answer may be cached
        self.headers = ""
        self.host: str | None = None
        self.out: asyncio.Future[Response] | None = None

    def __call__(self, result: UpstreamResponse | UpstreamError | BodyError) -> None:
        """The upstream's answer (fast path): settle the future the server waits on."""
        out = self.out
        assert out is not None
        proxy = self.proxy
        if isinstance(result, UpstreamResponse):
            out.set_result(proxy._respond(self, result))
        elif isinstance(result, StaleConnection) and self.request.method in IDEMPOTENT:
            retry = self.upstream.loop.create_task(
                proxy._forward(self, self.headers, self.host, True)
            )
            retry.add_done_callback(partial(_chain, out))
        else:
            out.set_result(proxy._failed(self, result))


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
        cache: ResponseCache | None = None,
        compressor: Compressor | None = None,
    ) -> None:
        self.engine = engine
        self.upstreams = upstreams
        self.routes = routes
        self.sink = sink
        self.clock = clock
        self.durable = durable
        self.scheme = scheme
        self.cache = cache
        self.compressor = compressor
        if cache is not None:
            engine.directory.listeners.append(cache.forget)

    def close(self) -> None:
        """Close idle upstream connections (at shutdown)."""
        for upstream in self.upstreams.values():
            upstream.close()

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
        """Forward an allowed request: from the cache, on an idle connection at once (a
        future settled by the upstream connection's callbacks), or through the pool's
        coroutine, which connects and retries."""
        upstream = self.upstreams.get(d.upstream or "")
        if upstream is None:  # config validation makes this unreachable; fail closed
            return error_response(502, "no_upstream", request.request_id)
        target = request.target
        path = d.path or normalize_path(target) or "/"
        cut = target.find("?")
        if cut >= 0:
            path += target[cut:].split("#", 1)[0]
        call = Call(self, request, d, upstream, self.routes.get(d.route or ""), path)
        route = call.route
        if route is not None and route.cache != "off" and self.cache is not None:
            hit = self._cached(call, route)
            if hit is not None:
                return hit
        call.headers = headers = upstream_headers(request, d, self.scheme)
        if upstream.settings.preserve_host:
            call.host = request.headers.get("host")
        host = call.host
        if request.stream is None:
            first = upstream.pick()
            body = request.body
            if upstream.send_now(first, request.method, path, headers, host, body, call):
                call.out = out = upstream.loop.create_future()
                return out
            return self._forward(call, headers, host, first=first)
        return self._forward(call, headers, host)

    def _cached(self, call: Call, route: Route) -> Response | None:
        """The cached answer, if there is one; otherwise marks the call as cacheable."""
        request = call.request
        if request.method not in ("GET", "HEAD"):
            return None
        d = call.d
        if route.cache == "tier":
            scope = f"tier:{d.tier_held}"
        elif d.principal_id is not None:
            scope = d.principal_id
        else:
            return None  # no principal to keep an answer for
        call.cache_scope = scope
        assert self.cache is not None
        hit = self.cache.lookup(route.name, scope, call.path, request.headers)
        if hit is None:
            return None
        entry, body, age = hit
        headers = f"{entry.headers}age: {age}\r\nx-cache: HIT\r\n"
        return self._finish(call, entry.status, headers, [], body, None)

    async def _forward(
        self,
        call: Call,
        headers: str,
        host: str | None,
        fresh: bool = False,
        first: Target | None = None,
    ) -> Response:
        request = call.request
        body: bytes | BodyStream = request.stream if request.stream is not None else request.body
        try:
            response = await call.upstream.request(
                request.method, call.path, headers, host, body, fresh, first
            )
        except (UpstreamError, BodyError) as exc:
            return self._failed(call, exc)
        return self._respond(call, response)

    def _failed(self, call: Call, error: UpstreamError | BodyError) -> Response:
        if isinstance(error, UpstreamError):
            self._audit(call, error.status, error.code, error.target, error.detail)
        # else the client's body failed first (timeout, too large): its status says so
        return error_response(error.status, error.code, call.request.request_id)

    def _respond(self, call: Call, response: UpstreamResponse) -> Response:
        # The connection has already taken out hop-by-hop and framing headers.
        headers = "".join(
            [f"{name}: {value}\r\n" for name, value in response.headers if name not in _OURS]
        )
        stream = response.stream
        if call.cache_scope is not None:
            if stream is None and call.request.method == "GET":
                self._keep(call, response, headers, response.body)
            headers += "x-cache: MISS\r\n"
        if stream is None:
            return self._finish(
                call, response.status, headers, response.headers, response.body, response.length
            )
        chunks = self._relay(call, response, headers)
        length = stream.length
        compressor = self.compressor
        route = call.route
        if compressor is not None and route is not None and route.compress:
            encoding = compressor.encoding_for(
                call.request.headers.get("accept-encoding"),
                response.status,
                response.headers,
                length,
            )
            if encoding is not None:
                headers = adjust_headers(headers, encoding)
                chunks = compressor.stream(encoding, chunks)
                length = None
        headers += ratelimit_headers(call.d.ratelimit)
        return StreamingResponse(response.status, headers, chunks, length)

    def _finish(
        self,
        call: Call,
        status: int,
        headers: str,
        upstream_headers: list[tuple[str, str]],
        body: bytes,
        announced: int | None,
    ) -> Response:
        """A whole answer: compressed if the route says so, HEAD keeping its length."""
        request = call.request
        route = call.route
        compressor = self.compressor
        if compressor is not None and route is not None and route.compress and body:
            if not upstream_headers:  # from the cache: its rendered headers are all we have
                upstream_headers = pairs(headers)
            encoding = compressor.encoding_for(
                request.headers.get("accept-encoding"), status, upstream_headers, len(body)
            )
            if encoding is not None:
                headers = adjust_headers(headers, encoding)
                body = compressor.compress(encoding, body)
        headers += ratelimit_headers(call.d.ratelimit)
        if request.method == "HEAD" and not body and announced is not None:
            return StreamingResponse(status, headers, _nothing(), announced)
        return Response(status, headers, body)

    def _keep(self, call: Call, response: UpstreamResponse, headers: str, body: bytes) -> None:
        assert self.cache is not None
        assert call.route is not None
        assert call.cache_scope is not None
        owner = call.d.principal_id if call.route.cache == "principal" else None
        self.cache.store(
            call.route.name,
            call.cache_scope,
            owner,
            call.path,
            call.request.headers,
            response.status,
            response.headers,
            headers,
            body,
        )

    async def _relay(
        self, call: Call, response: UpstreamResponse, headers: str
    ) -> AsyncIterator[bytes]:
        """The upstream's body as it arrives; a break is audited, then cuts the client off.
        A cacheable body is also kept, once it is complete, if it is small enough."""
        stream = response.stream
        assert stream is not None
        keep: list[bytes] | None = None
        if call.cache_scope is not None and call.request.method == "GET" and self.cache:
            keep = []
        kept = 0
        try:
            async for chunk in stream:
                if keep is not None:
                    kept += len(chunk)
                    if self.cache is not None and kept <= self.cache.max_entry_bytes:
                        keep.append(chunk)
                    else:
                        keep = None
                yield chunk
        except BodyError as exc:
            self._audit(call, exc.status, exc.code, "", "body broke off")
            raise
        finally:
            if not stream.complete and stream.failed is None:
                # The client left (or we stopped): stop reading from the upstream.
                response.abandon()
        if keep is not None:
            self._keep(call, response, headers, b"".join(keep))

    def _audit(self, call: Call, status: int, code: str, url: str, detail: str) -> None:
        request, d = call.request, call.d
        details = {"upstream": call.upstream.name, "detail": detail[:200]}
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
            call.path.split("?", 1)[0][:512],
            status,
            request.request_id,
            None,
            (time.perf_counter_ns() - call.started) // 1000,
            details,
        )
        try:
            self.sink.emit(event)
        except AuditUnavailable:
            log.error("audit unavailable: upstream failure %s not recorded", code)


_OURS = frozenset({"date", "x-request-id"})  # the server writes its own


async def _nothing() -> AsyncIterator[bytes]:
    return
    yield b""  # pragma: no cover - makes this an async generator


def _chain(out: asyncio.Future[Response], task: asyncio.Task[Response]) -> None:
    error = task.exception()
    if error is not None:
        out.set_exception(error)
    else:
        out.set_result(task.result())
