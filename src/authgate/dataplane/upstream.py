"""Upstreams: our own pooled HTTP/1.1 client on uvloop + httptools, streaming both ways.

An :class:`Upstream` is one ``[upstreams.NAME]``: base URLs taken in turn, a bound on open
connections (callers beyond it wait, up to the connect timeout), idle keep-alive connections
reused last-in first-out, and passive health — an URL that fails ``max_fails`` times in a
row is skipped for ``fail_timeout_s``, unless every URL is, as nginx and Envoy do.

A response whose Content-Length is small arrives whole (one object, no stream: the common
API answer); any other body — chunked (SSE), large, or delimited by the connection's end —
is handed over at its headers as a :class:`~authgate.dataplane.body.BodyStream`, which stops
reading from the upstream while the client is slow. A request body given as a stream is
pumped upstream as it arrives, waiting while the upstream is slow.

Failures are :class:`UpstreamError` with the status the client gets: 502 when the upstream
cannot be reached or answers garbage or closes before answering, 504 when it is too slow,
503 when the connection bound is reached. A request that failed before any byte of it
reached an upstream (connect failed), or an idempotent one with a replayable body whose
reused keep-alive connection turned out closed, is tried once more on a fresh connection.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque

from authgate.config import Upstream as UpstreamSettings
from authgate.dataplane.body import BodyError, BodyStream
from authgate.dataplane.upstream_conn import (
    IDEMPOTENT,
    Answer,
    StaleConnection,
    Target,
    UpstreamConnection,
    UpstreamError,
    UpstreamResponse,
)

__all__ = [
    "IDEMPOTENT",
    "StaleConnection",
    "Target",
    "Upstream",
    "UpstreamError",
    "UpstreamResponse",
]


class Upstream:
    """A named upstream: its URLs, connection pool and health."""

    def __init__(self, name: str, settings: UpstreamSettings) -> None:
        self.name = name
        self.settings = settings
        self.targets = [Target(url) for url in settings.urls]
        self.loop = asyncio.get_running_loop()
        self.busy = 0  # connections checked out or being opened
        self.waiters: deque[asyncio.Future[None]] = deque()
        self._next = 0
        self._tls: ssl.SSLContext | None = None
        # Exchanges in flight, whose deadlines one sweeper checks: a timer per request
        # (call_at + cancel) costs more than the whole check, made a few times a second.
        self.active: set[UpstreamConnection] = set()
        shortest = min(settings.first_byte_timeout_s, settings.total_timeout_s)
        self.tick = min(0.25, shortest / 4)
        self._sweeper = self.loop.create_task(self._sweep())

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self.tick)
            now = self.loop.time()
            for conn in [c for c in self.active if c.wait_until <= now]:
                conn.timed_out()

    def close(self) -> None:
        """Close the idle connections (at shutdown; busy ones end with their exchange)."""
        self._sweeper.cancel()
        for target in self.targets:
            while target.idle:
                target.idle.pop().close()

    def pick(self, avoid: Target | None = None) -> Target:
        """The next URL in turn that is not out of service (any, if all are)."""
        targets = self.targets
        n = len(targets)
        if n == 1:  # nothing to choose between (nginx, too, ignores max_fails then)
            return targets[0]
        now = self.loop.time()
        for i in range(n):
            target = targets[(self._next + i) % n]
            if target.down_until <= now and (target is not avoid or n == 1):
                self._next = (self._next + i + 1) % n
                return target
        target = targets[self._next % n]
        self._next = (self._next + 1) % n
        return target

    async def acquire(self, target: Target, fresh: bool = False) -> UpstreamConnection:
        """A connection to ``target``: an idle one unless ``fresh``, else a new one."""
        settings = self.settings
        if self.busy >= settings.max_connections:
            waiter = self.loop.create_future()
            self.waiters.append(waiter)
            try:
                await asyncio.wait_for(waiter, settings.connect_timeout_s)
            except TimeoutError:
                raise UpstreamError(503, "upstream_busy", "connection limit reached") from None
        self.busy += 1
        if not fresh:
            idle = target.idle
            now = self.loop.time()
            while idle:
                conn = idle.pop()
                if not conn.closed and now - conn.idle_since < settings.keepalive_timeout_s:
                    conn.reused = True
                    return conn
                conn.close()
        try:
            return await self._connect(target)
        except BaseException:
            self._give_back()
            raise

    async def _connect(self, target: Target) -> UpstreamConnection:
        loop = self.loop
        settings = self.settings
        tls: ssl.SSLContext | None = None
        if target.tls:
            tls = self._tls = self._tls or ssl.create_default_context()
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(
                    lambda: UpstreamConnection(self, target),
                    target.host,
                    target.port,
                    ssl=tls,
                    server_hostname=target.host if tls else None,
                ),
                settings.connect_timeout_s,
            )
        except TimeoutError:
            target.failed(loop.time(), settings.max_fails, settings.fail_timeout_s)
            raise UpstreamError(504, "upstream_timeout", "connect timed out") from None
        except (OSError, ssl.SSLError) as exc:
            target.failed(loop.time(), settings.max_fails, settings.fail_timeout_s)
            raise UpstreamError(502, "upstream_unavailable", f"connect failed: {exc}") from None
        return conn

    def release(self, conn: UpstreamConnection, reusable: bool) -> None:
        """An exchange ended; keep the connection for reuse if it can be."""
        target = conn.target
        conn._clear()
        if reusable and len(target.idle) < self.settings.keepalive:
            conn.idle_since = self.loop.time()
            conn.reused = False
            target.idle.append(conn)
        else:
            conn.close()
        self._give_back()

    def lost(self, conn: UpstreamConnection, in_use: bool, failure: bool) -> None:
        """A connection closed: if it was idle, forget it; if in use, free its slot."""
        idle = conn.target.idle
        if conn in idle:
            idle.remove(conn)
        elif in_use:
            self._give_back()
            if failure:
                conn.target.failed(
                    self.loop.time(), self.settings.max_fails, self.settings.fail_timeout_s
                )

    def _give_back(self) -> None:
        self.busy -= 1
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def send_now(
        self,
        target: Target,
        method: str,
        path: str,
        headers: str,
        host: str | None,
        body: bytes,
        on_answer: Answer,
    ) -> bool:
        """The fast path: send on an idle keep-alive connection at once and answer through
        ``on_answer``, with no task or future. False, having sent nothing, when no idle
        connection is ready (then use :meth:`request`, which connects and retries)."""
        if self.busy >= self.settings.max_connections:
            return False
        idle = target.idle
        now = self.loop.time()
        while idle:
            conn = idle.pop()
            if not conn.closed and now - conn.idle_since < self.settings.keepalive_timeout_s:
                self.busy += 1
                conn.reused = True
                authority = host if host is not None else target.authority
                framing = (
                    f"content-length: {len(body)}\r\n"
                    if body or method in ("POST", "PUT", "PATCH")
                    else ""
                )
                data = (
                    f"{method} {target.prefix}{path} HTTP/1.1\r\nhost: {authority}\r\n"
                    f"{headers}{framing}\r\n"
                ).encode("latin-1")
                # Written at the end of this loop iteration, with the other requests read in
                # it: measured 10 % less CPU per request than writing each one at once.
                self.loop.call_soon(
                    conn.begin, data + body if body else data, method == "HEAD", True, on_answer
                )
                return True
            conn.close()
        return False

    async def request(
        self,
        method: str,
        target_path: str,
        headers: str,
        host: str | None,
        body: bytes | BodyStream,
        fresh: bool = False,
        target: Target | None = None,
    ) -> UpstreamResponse:
        """Send one request and return the answer (whole, or with its body streaming);
        with ``fresh``, on a new connection (a retry after a stale one); ``target`` is the URL
        to try first (default: the next in turn).

        ``headers`` is the rendered block without Host and framing; ``host`` the Host to
        send (None: the URL's). Raises :class:`UpstreamError` or, when the client's body
        failed first, :class:`~authgate.dataplane.body.BodyError`.
        """
        target = target or self.pick()
        replayable = isinstance(body, bytes) and method in IDEMPOTENT
        for attempt in (0, 1):
            try:
                conn = await self.acquire(target, fresh)
            except UpstreamError as exc:
                exc.target = target.url
                if attempt == 0 and exc.status != 503 and len(self.targets) > 1:
                    target = self.pick(avoid=target)
                    continue
                raise
            try:
                return await self._exchange(conn, method, target_path, headers, host, body)
            except StaleConnection as exc:
                exc.target = target.url
                if attempt == 0 and replayable:
                    fresh = True
                    continue
                raise
            except UpstreamError as exc:
                exc.target = target.url
                raise
        raise AssertionError("unreachable")

    async def _exchange(
        self,
        conn: UpstreamConnection,
        method: str,
        path: str,
        headers: str,
        host: str | None,
        body: bytes | BodyStream,
    ) -> UpstreamResponse:
        target = conn.target
        authority = host if host is not None else target.authority
        if isinstance(body, bytes):
            if body or method in ("POST", "PUT", "PATCH"):
                framing = f"content-length: {len(body)}\r\n"
            else:
                framing = ""
            head = f"{method} {target.prefix}{path} HTTP/1.1\r\nhost: {authority}\r\n"
            data = (head + headers + framing + "\r\n").encode("latin-1")
            future: asyncio.Future[UpstreamResponse] = self.loop.create_future()
            conn.begin(data + body if body else data, method == "HEAD", True, _settle(future))
            return await future
        chunked = body.length is None
        if chunked:
            framing = "transfer-encoding: chunked\r\n"
        else:
            framing = f"content-length: {body.length}\r\n"
        head = f"{method} {target.prefix}{path} HTTP/1.1\r\nhost: {authority}\r\n"
        pending: asyncio.Future[UpstreamResponse] = self.loop.create_future()
        data = (head + headers + framing + "\r\n").encode("latin-1")
        conn.begin(data, False, False, _settle(pending))
        pump = self.loop.create_task(_pump(conn, body, chunked))
        try:
            return await pending
        finally:
            if not pump.done() and conn.closed:
                pump.cancel()


async def _pump(conn: UpstreamConnection, body: BodyStream, chunked: bool) -> None:
    """Copy a streamed request body to the upstream, at the pace both ends allow."""
    try:
        async for chunk in body:
            transport = conn.transport
            if transport is None:
                return
            transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
            if conn.write_paused:
                await conn.drain()
        if conn.transport is not None:
            if chunked:
                conn.transport.write(b"0\r\n\r\n")
            conn.request_sent()
    except BodyError as exc:
        conn._fail(exc)  # the client's body failed: so does the exchange


def _settle(future: asyncio.Future[UpstreamResponse]) -> Answer:
    """An answer callback that settles ``future`` (unless its waiter gave up)."""

    def answer(result: UpstreamResponse | UpstreamError | BodyError) -> None:
        if future.done():
            return
        if isinstance(result, UpstreamResponse):
            future.set_result(result)
        else:
            future.set_exception(result)

    return answer
