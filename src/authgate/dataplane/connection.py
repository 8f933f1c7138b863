"""One client connection of the data plane: parsing, dispatch in order, answers out.

See :mod:`authgate.dataplane.server` for what the server guarantees. This module holds the
per-connection state machine: httptools callbacks, the pipelining queue, streamed request
bodies (:mod:`authgate.dataplane.body`) and streamed responses.

Reading from the client pauses for three independent reasons, kept as bits so that one
reason ending does not resume reading another still needs paused: the client does not read
our answers (``WRITE``), a streamed body's buffer is full (``BODY``), or the connection
failed and reads nothing more (``FAIL``).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable
from functools import partial
from typing import TYPE_CHECKING, cast

import httptools

from authgate.dataplane.body import CLIENT_GONE, BodyError, BodyStream
from authgate.dataplane.http import (
    HEADER_NAMES,
    Reject,
    Request,
    RequestIds,
    Response,
    StreamingResponse,
    error_response,
    header_name,
    serialize,
)
from authgate.dataplane.outgoing import send_stream

if TYPE_CHECKING:
    from authgate.dataplane.server import Server

log = logging.getLogger(__name__)

IDLE, HEADERS, BODY, BUSY = range(4)
WRITE, BODY_FULL, FAIL = 1, 2, 4
FOREVER = float("inf")
LINGER_S = 1.0  # a lingering close waits this long for more input...
LINGER_MAX_S = 5.0  # ...and this long at most


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
        self.queue: deque[Request | Reject] = deque()
        self.busy = False
        self.closing = False  # we decided to close: after the current answer, nothing more
        self.peer_done = False  # the peer half-closed: answer what it sent, then close
        self.failed = False  # a parse error is queued: read nothing more
        self.paused = 0  # reasons reading is paused (WRITE | BODY_FULL | FAIL)
        self.writing_paused = False
        self.stream: BodyStream | None = None  # the body being streamed to a handler
        self.lingering = False  # answered and half-closed; discarding input (see abort)
        self.linger_until = 0.0
        self._writable = asyncio.Event()
        self._writable.set()
        self._reset()

    @property
    def reading_paused(self) -> bool:
        """Whether reading from the client is paused, for any reason."""
        return self.paused != 0

    def _reset(self) -> None:
        self.url = b""
        self.headers: dict[str, str] = {}
        self.header_bytes = 0
        self.body: list[bytes] = []
        self.body_bytes = 0

    def _pause(self, reason: int) -> None:
        if not self.paused and self.transport is not None:
            self.transport.pause_reading()
        self.paused |= reason

    def _resume(self, reason: int) -> None:
        if not self.paused & reason:
            return
        self.paused &= ~reason
        if not self.paused and self.transport is not None and not self.closing:
            self.transport.resume_reading()

    # -- connection lifecycle ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if isinstance(peer, tuple) else ""
        self.peer_trusted = self.server.is_trusted(self.peer) if self.server.trusted else False
        if len(self.server.connections) >= self.limits.max_connections or self.server.closing:
            self.server.rejected += 1
            self._send_error(Reject(503, "overloaded"))
            transport.close()
            return
        self.server.connections.add(self)
        self.deadline = self.loop.time() + self.limits.idle_timeout

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.forget(self)
        self.transport = None
        self._writable.set()  # a stream waiting for the client must notice it is gone
        if self.stream is not None:
            self.stream.fail(CLIENT_GONE)

    def eof_received(self) -> bool:
        # A half-closed peer still gets the answers to what it sent; then we close.
        self.peer_done = True
        if self.stream is not None:
            self.stream.fail(BodyError(400, "incomplete_body"))
        return self.busy or bool(self.queue)

    def pause_writing(self) -> None:
        self.writing_paused = True
        self._writable.clear()
        self._pause(WRITE)

    def resume_writing(self) -> None:
        self.writing_paused = False
        self._writable.set()
        self._resume(WRITE)

    def expire(self) -> None:
        """The current deadline passed: close an idle connection, answer 408 otherwise."""
        if self.lingering:
            self.abort(hard=True)
        elif self.state == IDLE and not self.busy and not self.queue:
            self.abort()
        elif self.stream is not None:
            # The handler owns the answer: it learns the body timed out and answers 408.
            self.stream.fail(BodyError(408, "request_timeout"))
            self.closing = True
            self.deadline = FOREVER
        elif self.state in (HEADERS, BODY):
            self._fail(Reject(408, "request_timeout"))

    def begin_close(self) -> None:
        """Graceful shutdown: close now if idle, else after the in-flight answers."""
        self.closing = True
        if self.state == IDLE and not self.busy and not self.queue:
            self.abort()

    def abort(self, hard: bool = False) -> None:
        """Close now; but if the client may still be sending, unless ``hard``, send our FIN
        and discard input for a moment, lest its unread bytes make the kernel reset the
        connection and destroy our answer (nginx's lingering close)."""
        transport = self.transport
        unread = self.failed or self.state == BODY or self.stream is not None
        if (
            not hard
            and unread
            and transport is not None
            and not self.lingering
            and transport.can_write_eof()
        ):
            self.lingering = True
            self.closing = True
            self.stream = None
            transport.write_eof()
            self.paused = 0
            transport.resume_reading()
            now = self.loop.time()
            self.linger_until = now + LINGER_MAX_S
            self.deadline = now + LINGER_S
            self.server.linger(self)
            return
        if transport is not None:
            transport.close()
        self.server.forget(self)

    # -- bytes in ------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.lingering:  # discarding what the client still sends, until it stops
            self.deadline = min(self.loop.time() + LINGER_S, self.linger_until)
            return
        if self.closing and self.stream is None:
            return
        if self.state == IDLE:  # a request begins: its headers are now on the clock
            self.state = HEADERS
            self.deadline = self.loop.time() + self.limits.header_timeout
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # Upgrades are not supported: answer what was asked, then close.
            self.closing = True
            if not self.busy and not self.queue:
                self.abort()
        except httptools.HttpParserCallbackError as exc:
            reject = exc.__context__
            self._fail(reject if isinstance(reject, Reject) else Reject(400, "bad_request"))
        except httptools.HttpParserError:
            self._fail(Reject(400, "bad_request"))

    def _fail(self, reject: Reject) -> None:
        """Queue an error answer after what is already queued, stop reading, then close."""
        if self.transport is None:
            return
        self._pause(FAIL)
        self.failed = True
        self.state = BUSY
        if self.stream is not None:  # the handler answers for the streamed request
            self.stream.fail(BodyError(reject.status, reject.code))
            self.stream = None
            self.closing = True
            return
        self.queue.append(reject)  # answered in order, after what came before it
        if not self.busy:
            self._drain()

    # httptools callbacks

    def on_url(self, url: bytes) -> None:
        # A pipelined request's first callback (on_message_begin would cost one more call).
        if self.state == IDLE:
            self.state = HEADERS
            self.deadline = self.loop.time() + self.limits.header_timeout
        self.url += url
        self.header_bytes += len(url)
        if self.header_bytes > self.limits.max_header_bytes:
            raise Reject(431, "headers_too_large")

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_bytes += len(name) + len(value) + 4
        if self.header_bytes > self.limits.max_header_bytes:
            raise Reject(431, "headers_too_large")
        key = HEADER_NAMES.get(name) or header_name(name)
        text = value.decode("latin-1")
        previous = self.headers.get(key)
        self.headers[key] = text if previous is None else f"{previous}, {text}"

    def on_headers_complete(self) -> None:
        headers = self.headers
        expect = headers.get("expect")
        if expect is not None and expect.lower() != "100-continue":
            raise Reject(417, "expectation_failed")
        length = headers.get("content-length")
        limits = self.limits
        if length is None and "transfer-encoding" not in headers:
            return  # no body: the header deadline stands until the message completes
        size = None if length is None else int(length)
        stream = (
            (size is None or size > limits.buffer_body_bytes)
            and not self.busy
            and not self.queue
            and self.server.streams_body(self.url)
        )
        most = limits.max_stream_bytes if stream else limits.max_body_bytes
        if size is not None and size > most:
            raise Reject(413, "body_too_large")
        if expect is not None and self.parser.get_http_version() == "1.1":
            assert self.transport is not None
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        self.state = BODY
        self.deadline = self.loop.time() + limits.body_timeout
        if stream:
            self.stream = BodyStream(
                size, lambda: self._body_full(True), lambda: self._body_full(False)
            )
            self._dispatch(self._request(self.stream))

    def _body_full(self, full: bool) -> None:
        if full:
            self._pause(BODY_FULL)
            self.deadline = FOREVER  # we are not reading: the client is not late
        else:
            self._resume(BODY_FULL)
            self.deadline = self.loop.time() + self.limits.body_timeout

    def on_body(self, body: bytes) -> None:
        self.body_bytes += len(body)
        stream = self.stream
        if stream is not None:
            if self.body_bytes > self.limits.max_stream_bytes:
                raise Reject(413, "body_too_large")
            stream.feed(body)
            if not self.paused:  # a streamed body times out between reads, not in total
                self.deadline = self.loop.time() + self.limits.body_timeout
            return
        if self.body_bytes > self.limits.max_body_bytes:
            raise Reject(413, "body_too_large")
        self.body.append(body)

    def _request(self, stream: BodyStream | None) -> Request:
        headers = self.headers
        supplied = headers.get("x-request-id")
        if supplied is not None and self.peer_trusted and RequestIds.acceptable(supplied):
            request_id = supplied
        else:
            request_id = self.server.ids.new()
        return Request(
            self.parser.get_method().decode("ascii"),
            self.url.decode("latin-1"),
            headers,
            b"".join(self.body) if self.body else b"",
            self.parser.get_http_version(),
            self.parser.should_keep_alive(),
            self.peer,
            self.peer_trusted,
            request_id,
            stream,
        )

    def on_message_complete(self) -> None:
        stream = self.stream
        if stream is not None:  # dispatched at its headers; its body is now complete
            stream.finish()
            self.stream = None
            self._reset()
            self.state = IDLE
            self.deadline = self.loop.time() + self.limits.idle_timeout
            return
        request = self._request(None)
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
        elif isinstance(result, asyncio.Future):
            # A future costs a callback where a coroutine costs a task: the proxy's fast path.
            self.busy = True
            result.add_done_callback(partial(self._settled, request))
        else:
            self.busy = True
            self.loop.create_task(self._await(request, result))

    def _settled(self, request: Request, future: asyncio.Future[Response]) -> None:
        try:
            response = future.result()
        except (Exception, asyncio.CancelledError) as exc:
            response = self._failure(request, exc)
        self._deliver(request, response)

    def _failure(self, request: Request, exc: BaseException) -> Response:
        """The answer when a handler raised instead of answering."""
        if isinstance(exc, BodyError):  # the handler read a body that did not arrive
            return error_response(exc.status, exc.code, request.request_id)
        log.error("handler failed", exc_info=exc)
        return error_response(500, "internal_error", request.request_id)

    def _deliver(self, request: Request, response: Response) -> None:
        """Send a pending request's answer; then go on with the queue."""
        if isinstance(response, StreamingResponse):
            self.loop.create_task(self._stream(request, response))
            return
        self.busy = False
        self._send(response, request)
        self._drain()

    def _drain(self) -> None:
        """Answer queued requests in order until one needs to wait."""
        while self.queue and not self.busy:
            item = self.queue.popleft()
            if isinstance(item, Reject):
                self._send_error(item)
                self.abort()
                return
            self._dispatch(item)
        if (self.closing or self.peer_done) and not self.queue and not self.busy:
            self.abort()

    async def _await(self, request: Request, pending: Awaitable[Response]) -> None:
        try:
            response = await pending
        except Exception as exc:
            response = self._failure(request, exc)
        self._deliver(request, response)

    def _keep_alive(self, request: Request) -> bool:
        # A request whose body we did not read to its end leaves the connection unusable.
        stream = request.stream
        return (
            request.keep_alive
            and not self.closing
            and not self.server.closing
            and (stream is None or stream.complete)
        )

    async def _stream(self, request: Request, response: StreamingResponse) -> None:
        await send_stream(self, request, response)

    def _send_error(self, reject: Reject) -> None:
        if self.transport is not None:
            rid = self.server.ids.new()
            response = error_response(reject.status, reject.code, rid)
            self.transport.write(serialize(response, rid, self.server.date.get(), False, False))

    def _send(self, response: Response, request: Request) -> None:
        transport = self.transport
        if transport is None:
            return
        keep_alive = self._keep_alive(request)
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
