"""One connection to an upstream URL: the client side of one HTTP/1.1 exchange at a time.

Its pool is :class:`authgate.dataplane.upstream.Upstream`, which says what the exchange
guarantees; this module holds the httptools callbacks, timers and framing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, cast
from urllib.parse import urlsplit

import httptools

from authgate.dataplane.body import BodyError, BodyStream
from authgate.dataplane.http import HEADER_NAMES, HOP_BY_HOP, header_name, tokens

if TYPE_CHECKING:
    from authgate.dataplane.upstream import Upstream

BUFFER_LIMIT = 64 * 1024  # responses up to this Content-Length are read whole
MAX_RESPONSE_HEADER_BYTES = 64 * 1024
FOREVER = float("inf")
# Response headers that belong to this connection, not to the answer: hop-by-hop ones
# and the framing, which the server writes anew.
_CONNECTION_LEVEL = HOP_BY_HOP | {"content-length"}
_CONNECTION_OPTIONS = frozenset({"keep-alive", "close"})
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})


class UpstreamError(Exception):
    """The exchange with the upstream failed; ``status`` and ``code`` are the client's."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail
        self.target = ""


class StaleConnection(UpstreamError):
    """A reused connection closed before any byte of the answer: safe to retry."""


class Target:
    """One base URL of an upstream, its idle connections and its health."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.url = url
        self.tls = parts.scheme == "https"
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if self.tls else 80)
        self.authority = parts.netloc
        self.prefix = parts.path.rstrip("/")
        self.idle: list[UpstreamConnection] = []
        self.fails = 0
        self.down_until = 0.0

    def failed(self, now: float, max_fails: int, fail_timeout: float) -> None:
        """One more failure in a row; enough of them take the URL out for a while."""
        self.fails += 1
        if self.fails >= max_fails:
            self.down_until = now + fail_timeout
            self.fails = 0


class UpstreamResponse:
    """An upstream's answer: ``body`` when read whole, else ``stream``."""

    __slots__ = ("_conn", "body", "headers", "length", "status", "stream")

    def __init__(
        self,
        status: int,
        headers: list[tuple[str, str]],
        body: bytes,
        stream: BodyStream | None,
        length: int | None,
        conn: UpstreamConnection | None = None,
    ) -> None:
        self.status = status
        self.headers = headers  # less hop-by-hop and framing headers (see on_header)
        self.body = body
        self.stream = stream
        self.length = length  # the announced Content-Length (HEAD answers have no body)
        self._conn = conn

    def abandon(self) -> None:
        """Nobody will read the rest of the streamed body: drop its connection."""
        stream = self.stream
        conn = self._conn
        if stream is None or conn is None or stream.complete or conn.stream is not stream:
            return  # complete: the connection was already given back (maybe reused)
        stream.fail(BodyError(499, "client_closed"))
        conn.abandoned = True
        conn.close()


Answer = Callable[["UpstreamResponse | UpstreamError | BodyError"], None]


class UpstreamConnection(asyncio.Protocol):
    """One connection to one upstream URL, carrying one exchange at a time."""

    def __init__(self, pool: Upstream, target: Target) -> None:
        self.pool = pool
        self.target = target
        self.loop = pool.loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.reused = False
        self.idle_since = 0.0
        self.closed = False
        self.write_paused = False
        self._drained: asyncio.Future[None] | None = None
        self._clear()

    def _clear(self) -> None:
        self.on_answer: Answer | None = None  # set while the answer's head is awaited
        self.stream: BodyStream | None = None
        self.status = 0
        self.headers: list[tuple[str, str]] = []
        self.header_bytes = 0
        self.length: int | None = None
        self.chunked = False
        self.connection = ""
        self.parts: list[bytes] = []
        self.received = False
        self.head = False
        self.interim = False
        self.until_close = False
        self.sent = False
        self.done = False
        self.deadline = 0.0  # the exchange's end, at the latest
        self.wait_until = FOREVER  # when the pool's sweeper times this exchange out
        self.abandoned = False

    # -- the exchange ---------------------------------------------------------------------

    def begin(self, data: bytes, head: bool, sent: bool, on_answer: Answer) -> None:
        """Write a request's head (and whole body, if ``sent``). ``on_answer`` is called once,
        from the protocol's callbacks, with the answer or the error."""
        self.on_answer = on_answer
        self.head = head
        now = self.loop.time()
        self.deadline = self.wait_until = now + self.pool.settings.total_timeout_s
        self.pool.active.add(self)
        assert self.transport is not None
        self.transport.write(data)
        if sent:
            self.sent = True
            self.wait_until = min(self.deadline, now + self.pool.settings.first_byte_timeout_s)

    def request_sent(self) -> None:
        """The whole request is out: from now on the upstream has first_byte_timeout."""
        self.sent = True
        if self.status == 0 and not self.done:
            at = self.loop.time() + self.pool.settings.first_byte_timeout_s
            self.wait_until = min(self.deadline, at)

    async def drain(self) -> None:
        """Wait while the upstream is not reading what we write."""
        while self.write_paused and not self.closed:
            self._drained = self.loop.create_future()
            await self._drained

    def timed_out(self) -> None:
        """The sweeper found this exchange past its deadline."""
        self.wait_until = FOREVER
        self._fail(UpstreamError(504, "upstream_timeout", "upstream too slow"))

    def _fail(self, error: UpstreamError | BodyError) -> None:
        """End the exchange with ``error`` and drop the connection."""
        if isinstance(error, UpstreamError) and not error.target:
            error.target = self.target.url
        on_answer = self.on_answer
        if on_answer is not None:
            self.on_answer = None
            on_answer(error)
        elif self.stream is not None:
            status = error.status if isinstance(error, UpstreamError) else 502
            self.stream.fail(BodyError(status, getattr(error, "code", "upstream_closed")))
        self.close()

    def close(self) -> None:
        """Close the connection."""
        if self.transport is not None:
            self.transport.close()

    # -- asyncio ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.transport = None
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)
        self.pool.active.discard(self)
        if self.done or (self.on_answer is None and self.stream is None):
            self.pool.lost(self, in_use=False, failure=False)
            return
        if self.stream is not None and self.until_close:
            self.stream.finish()  # a body delimited by the connection's end: it ended
            self.done = True
            self.pool.lost(self, in_use=True, failure=False)
            return
        failure = (self.received or not self.reused) and not self.abandoned
        self.pool.lost(self, in_use=True, failure=failure)
        if not self.received and self.reused:
            self._fail(StaleConnection(502, "upstream_closed", "keep-alive connection closed"))
        elif self.on_answer is not None:
            self._fail(UpstreamError(502, "upstream_closed", "closed before answering"))
        else:
            self._fail(UpstreamError(502, "upstream_closed", "closed mid-response"))

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def data_received(self, data: bytes) -> None:
        if self.on_answer is None and self.stream is None:
            self.close()  # nothing was asked: bytes now are a broken upstream
            return
        self.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            error = exc.__context__
            if isinstance(error, UpstreamError):
                self._fail(error)
            else:
                self._fail(UpstreamError(502, "upstream_error", "malformed response"))

    # -- httptools callbacks -----------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_bytes += len(name) + len(value)
        if self.header_bytes > MAX_RESPONSE_HEADER_BYTES:
            raise UpstreamError(502, "upstream_error", "response headers too large")
        lower = HEADER_NAMES.get(name) or header_name(name)
        if lower in _CONNECTION_LEVEL:  # framing and hop-by-hop: this connection's only
            if lower == "content-length":
                self.length = int(value)  # llhttp has checked it: digits, one value
            elif lower == "transfer-encoding":
                self.chunked = True
            elif lower == "connection":
                self.connection += value.decode("latin-1") + ","
            return
        self.headers.append((lower, value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status < 200:  # 1xx (100 Continue, 103 Early Hints): not forwarded
            self.interim = True
            return
        self.status = status
        self.wait_until = self.deadline  # the first byte is in: the total timeout is left
        self.target.fails = 0
        if self.connection:  # headers named in Connection are hop-by-hop too (rare)
            named = tokens(self.connection) - _CONNECTION_OPTIONS
            if named:
                self.headers = [(n, v) for n, v in self.headers if n not in named]
        length = self.length
        if self.head or status == 204 or status == 304:
            # No body follows. llhttp would wait for a HEAD answer's announced body, so
            # that connection is not reused.
            self._answer(UpstreamResponse(status, self.headers, b"", None, length))
            self._release()
            return
        chunked = self.chunked
        if length is not None and length <= BUFFER_LIMIT and not chunked:
            return  # read whole, answered at message complete
        transport = self.transport
        assert transport is not None
        self.until_close = length is None and not chunked
        self.stream = BodyStream(length, transport.pause_reading, transport.resume_reading)
        self._answer(UpstreamResponse(status, self.headers, b"", self.stream, length, self))

    def _answer(self, response: UpstreamResponse) -> None:
        on_answer = self.on_answer
        if on_answer is not None:
            self.on_answer = None
            on_answer(response)

    def on_body(self, body: bytes) -> None:
        if self.stream is not None:
            self.stream.feed(body)
        elif self.on_answer is not None:
            self.parts.append(body)

    def on_message_complete(self) -> None:
        if self.interim:
            self.interim = False
            self.headers = []
            self.header_bytes = 0
            self.length = None
            self.chunked = False
            self.connection = ""
            return
        if self.on_answer is None and self.stream is None:
            return  # already handed over and released (HEAD, 204, 304)
        self.done = True
        if self.stream is not None:
            self.stream.finish()
        else:
            body = b"".join(self.parts) if len(self.parts) != 1 else self.parts[0]
            self._answer(UpstreamResponse(self.status, self.headers, body, None, self.length))
        self._release()

    def _release(self) -> None:
        self.done = True
        self.pool.active.discard(self)
        stream = self.stream
        reusable = (
            self.sent
            and not self.closed
            and not self.head
            and self.parser.should_keep_alive()
            # a stream that paused our reading still owns that pause: do not lend it out
            and (stream is None or not stream.paused)
        )
        self.pool.release(self, reusable)
