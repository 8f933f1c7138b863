"""The HTTP/1.1 server: one asyncio Protocol per connection, parsing with httptools (llhttp).

What it guarantees, and where:

- keep-alive and pipelining: requests are answered strictly in order; a handler may return a
  Response or an awaitable of one, and later pipelined requests wait their turn;
- framing: llhttp rejects Content-Length with Transfer-Encoding, duplicate Content-Length,
  obs-fold, bare LF and bad chunk sizes; every parse error is 400 and the connection closes;
- limits: request line + headers over ``max_header_bytes`` is 431, a body over
  ``max_body_bytes`` is 413 (at once when Content-Length says so), both closing the connection;
- timeouts: a connection idle between requests is closed, one whose headers (or body) do not
  arrive completely within ``header_timeout`` (``body_timeout``) gets 408 and is closed — so a
  slowloris client sending a byte a second is cut off at the header deadline. Deadlines are
  checked by one sweeper per server each ``tick`` seconds, so a request pays one clock read
  instead of arming a timer;
- ``Expect: 100-continue`` is answered with 100 when the body is acceptable;
- back-pressure: when the peer stops reading and the transport's buffer fills, reading from
  that peer pauses until it drains;
- graceful shutdown: :meth:`Server.shutdown` stops accepting, closes idle connections, lets
  in-flight requests finish (answered with ``connection: close``) until a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections import deque
from collections.abc import Awaitable, Iterable
from typing import Any, cast

import httptools

from authgate.dataplane.http import (
    DateHeader,
    Handler,
    Request,
    RequestIds,
    Response,
    StreamingResponse,
    error_response,
    serialize,
    serialize_stream_head,
)
from authgate.dataplane.limits import Limits

log = logging.getLogger(__name__)

__all__ = ["HttpProtocol", "Limits", "Server"]

IDLE, HEADERS, BODY, BUSY = range(4)
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Server:
    """Shared state of one listening server: connections, limits, trust, the sweeper."""

    def __init__(
        self, handler: Handler, limits: Limits, trusted_proxies: Iterable[str] = ()
    ) -> None:
        self.handler = handler
        self.limits = limits
        self.trusted = tuple(ipaddress.ip_network(n, strict=False) for n in trusted_proxies)
        self.connections: set[HttpProtocol] = set()
        self.ids = RequestIds()
        self.date = DateHeader()
        self.closing = False
        self.rejected = 0
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._trust_cache: dict[str, bool] = {}
        self._drained = asyncio.Event()

    def forget(self, conn: HttpProtocol) -> None:
        """A connection ended."""
        self.connections.discard(conn)
        if self.closing and not self.connections:
            self._drained.set()

    def is_trusted(self, address: str) -> bool:
        """Whether ``address`` is one of the configured trusted proxies."""
        known = self._trust_cache.get(address)
        if known is None:
            try:
                ip = ipaddress.ip_address(address)
                known = any(ip in net for net in self.trusted)
            except ValueError:
                known = False
            if len(self._trust_cache) < 65536:
                self._trust_cache[address] = known
        return known

    async def start(
        self, host: str, port: int, *, reuse_port: bool = False, ssl: Any = None
    ) -> asyncio.Server:
        """Listen on ``host:port`` and start the deadline sweeper."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: HttpProtocol(self),
            host,
            port,
            reuse_port=reuse_port,
            ssl=ssl,
            backlog=2048,
        )
        self._sweeper = loop.create_task(self._sweep())
        return self._server

    @property
    def ports(self) -> list[int]:
        """The bound ports (useful with port 0)."""
        assert self._server is not None
        return [s.getsockname()[1] for s in self._server.sockets]

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.limits.tick)
            now = loop.time()
            for conn in list(self.connections):
                if now >= conn.deadline:
                    conn.expire()

    async def shutdown(self, grace: float = 10.0) -> None:
        """Stop accepting; finish in-flight requests within ``grace`` seconds; close."""
        self.closing = True
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            conn.begin_close()
        if self.connections:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), grace)
        for conn in list(self.connections):
            conn.abort()
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._server is not None:
            await self._server.wait_closed()


class _Reject(Exception):
    """Raised inside a parser callback to stop parsing with an error answer."""

    def __init__(self, status: int, code: str) -> None:
        super().__init__(code)
        self.status = status
        self.code = code


class HttpProtocol(asyncio.Protocol):
    """One client connection."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.limits = server.limits
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.loop = asyncio.get_running_loop()
        self.peer = ""
        self.peer_trusted = False
        self.state = IDLE
        self.deadline = 0.0
        self.queue: deque[Request | _Reject] = deque()
        self.busy = False
        self.closing = False  # we decided to close: after the current answer, nothing more
        self.peer_done = False  # the peer half-closed: answer what it sent, then close
        self.failed = False  # a parse error is queued: read nothing more
        self.reading_paused = False
        self.writing_paused = False
        self._writable = asyncio.Event()
        self._writable.set()
        self._reset()

    def _reset(self) -> None:
        self.url = b""
        self.headers: dict[str, str] = {}
        self.header_bytes = 0
        self.body: list[bytes] = []
        self.body_bytes = 0

    # -- connection lifecycle ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if isinstance(peer, tuple) else ""
        self.peer_trusted = self.server.is_trusted(self.peer) if self.server.trusted else False
        if len(self.server.connections) >= self.limits.max_connections or self.server.closing:
            self.server.rejected += 1
            self._send_error(_Reject(503, "overloaded"))
            transport.close()
            return
        self.server.connections.add(self)
        self.deadline = self.loop.time() + self.limits.idle_timeout

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.forget(self)
        self.transport = None
        self._writable.set()  # a stream waiting for the client must notice it is gone

    def eof_received(self) -> bool:
        # A half-closed peer still gets the answers to what it sent; then we close.
        self.peer_done = True
        return self.busy or bool(self.queue)

    def pause_writing(self) -> None:
        self.writing_paused = True
        self._writable.clear()
        if self.transport is not None and not self.reading_paused:
            self.transport.pause_reading()
            self.reading_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        self._writable.set()
        if self.transport is not None and self.reading_paused and not self.closing:
            self.transport.resume_reading()
            self.reading_paused = False

    def expire(self) -> None:
        """The current deadline passed: close an idle connection, answer 408 otherwise."""
        if self.state == IDLE and not self.busy and not self.queue:
            self.abort()
        elif self.state in (HEADERS, BODY):
            self._fail(_Reject(408, "request_timeout"))

    def begin_close(self) -> None:
        """Graceful shutdown: close now if idle, else after the in-flight answers."""
        self.closing = True
        if self.state == IDLE and not self.busy and not self.queue:
            self.abort()

    def abort(self) -> None:
        """Close the connection now."""
        if self.transport is not None:
            self.transport.close()
        self.server.forget(self)

    # -- bytes in ------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # Upgrades are not supported: answer what was asked, then close.
            self.closing = True
            if not self.busy and not self.queue:
                self.abort()
        except httptools.HttpParserCallbackError as exc:
            reject = exc.__context__
            self._fail(reject if isinstance(reject, _Reject) else _Reject(400, "bad_request"))
        except httptools.HttpParserError:
            self._fail(_Reject(400, "bad_request"))

    def _fail(self, reject: _Reject) -> None:
        """Queue an error answer after what is already queued, stop reading, then close."""
        if self.transport is None:
            return
        self.transport.pause_reading()
        self.reading_paused = True
        self.failed = True
        self.state = BUSY
        self.queue.append(reject)  # answered in order, after what came before it
        if not self.busy:
            self._drain()

    # httptools callbacks

    def on_message_begin(self) -> None:
        self.state = HEADERS
        self.deadline = self.loop.time() + self.limits.header_timeout

    def on_url(self, url: bytes) -> None:
        self.url += url
        self.header_bytes += len(url)
        if self.header_bytes > self.limits.max_header_bytes:
            raise _Reject(431, "headers_too_large")

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_bytes += len(name) + len(value) + 4
        if self.header_bytes > self.limits.max_header_bytes:
            raise _Reject(431, "headers_too_large")
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        previous = self.headers.get(key)
        self.headers[key] = text if previous is None else f"{previous}, {text}"

    def on_headers_complete(self) -> None:
        headers = self.headers
        expect = headers.get("expect")
        if expect is not None and expect.lower() != "100-continue":
            raise _Reject(417, "expectation_failed")
        length = headers.get("content-length")
        if length is not None:
            if int(length) > self.limits.max_body_bytes:
                raise _Reject(413, "body_too_large")
        elif "transfer-encoding" not in headers:
            return  # no body: the header deadline stands until the message completes
        if expect is not None and self.parser.get_http_version() == "1.1":
            assert self.transport is not None
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        self.state = BODY
        self.deadline = self.loop.time() + self.limits.body_timeout

    def on_body(self, body: bytes) -> None:
        self.body_bytes += len(body)
        if self.body_bytes > self.limits.max_body_bytes:
            raise _Reject(413, "body_too_large")
        self.body.append(body)

    def on_message_complete(self) -> None:
        headers = self.headers
        supplied = headers.get("x-request-id")
        if supplied is not None and self.peer_trusted and RequestIds.acceptable(supplied):
            request_id = supplied
        else:
            request_id = self.server.ids.new()
        request = Request(
            self.parser.get_method().decode("ascii"),
            self.url.decode("latin-1"),
            headers,
            b"".join(self.body) if self.body else b"",
            self.parser.get_http_version(),
            self.parser.should_keep_alive(),
            self.peer,
            self.peer_trusted,
            request_id,
        )
        self._reset()
        self.state = IDLE
        self.deadline = self.loop.time() + self.limits.idle_timeout
        if self.busy or self.queue:
            self.queue.append(request)
        else:  # the common case: answer at once, without the queue
            self._dispatch(request)

    # -- bytes out -----------------------------------------------------------------------

    def _dispatch(self, request: Request) -> None:
        """Run the handler for one request; a pending answer makes the connection busy."""
        try:
            result = self.server.handler(request)
        except Exception:
            log.exception("handler failed")
            result = error_response(500, "internal_error", request.request_id)
        if isinstance(result, StreamingResponse):
            self.busy = True
            self.loop.create_task(self._stream(request, result))
        elif isinstance(result, Response):
            self._send(result, request)
            if (self.closing or self.peer_done) and not self.queue:
                self.abort()
        else:
            self.busy = True
            self.loop.create_task(self._await(request, result))

    def _drain(self) -> None:
        """Answer queued requests in order until one needs to wait."""
        while self.queue and not self.busy:
            item = self.queue.popleft()
            if isinstance(item, _Reject):
                self._send_error(item)
                self.abort()
                return
            self._dispatch(item)
        if (self.closing or self.peer_done) and not self.queue and not self.busy:
            self.abort()

    async def _await(self, request: Request, pending: Awaitable[Response]) -> None:
        try:
            response = await pending
        except Exception:
            log.exception("handler failed")
            response = error_response(500, "internal_error", request.request_id)
        if isinstance(response, StreamingResponse):
            await self._stream(request, response)
            return
        self.busy = False
        self._send(response, request)
        self._drain()

    async def _stream(self, request: Request, response: StreamingResponse) -> None:
        """Send a chunked response piece by piece; wait while the client is not reading."""
        transport = self.transport
        chunks = response.chunks
        keep_alive = request.keep_alive and not self.closing and not self.server.closing
        try:
            if transport is None:
                return
            transport.write(
                serialize_stream_head(
                    response, request.request_id, self.server.date.get(), keep_alive
                )
            )
            if request.method != "HEAD":
                async for chunk in chunks:
                    if self.transport is None:
                        return  # the client went away: stop producing
                    if chunk:
                        transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
                    while self.writing_paused and self.transport is not None:
                        await self._writable.wait()
                if self.transport is None:
                    return
            transport.write(b"0\r\n\r\n")
        except Exception:
            # The head is out, so no error status can follow: end the connection without the
            # terminating chunk, which tells the client the body is incomplete.
            log.exception("stream failed")
            keep_alive = False
        finally:
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()
        self.busy = False
        if not keep_alive:
            self.closing = True
            self.queue.clear()
            self.abort()
            return
        self._drain()

    def _send_error(self, reject: _Reject) -> None:
        if self.transport is not None:
            rid = self.server.ids.new()
            response = error_response(reject.status, reject.code, rid)
            self.transport.write(serialize(response, rid, self.server.date.get(), False, False))

    def _send(self, response: Response, request: Request) -> None:
        transport = self.transport
        if transport is None:
            return
        keep_alive = request.keep_alive and not self.closing and not self.server.closing
        transport.write(
            serialize(
                response,
                request.request_id,
                self.server.date.get(),
                keep_alive,
                request.method == "HEAD",
            )
        )
        if not keep_alive:
            self.closing = True
            self.queue.clear()  # pipelined requests after a close are not answered
