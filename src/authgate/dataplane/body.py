"""Request bodies that arrive after their request was dispatched (proxied uploads).

The server hands the handler a :class:`BodyStream` as soon as the headers are in; the body's
chunks are fed to it as they arrive and read by the handler (the proxy, which passes them
upstream). The stream bounds what it holds: above ``high`` buffered bytes it asks the
connection to stop reading from the client, and below ``low`` to resume, so a 100 MB upload
to a slow upstream holds at most a few hundred KiB here.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable


class BodyError(Exception):
    """The body could not be received: the answer's status and stable code."""

    def __init__(self, status: int, code: str) -> None:
        super().__init__(code)
        self.status = status
        self.code = code


CLIENT_GONE = BodyError(499, "client_closed")


class BodyStream:
    """One request body in flight. ``length`` is the Content-Length, None when chunked."""

    __slots__ = (
        "_buffered",
        "_chunks",
        "_error",
        "_pause",
        "_paused",
        "_resume",
        "_waiter",
        "complete",
        "high",
        "length",
        "low",
        "received",
    )

    def __init__(
        self,
        length: int | None,
        pause: Callable[[], None],
        resume: Callable[[], None],
        high: int = 256 * 1024,
    ) -> None:
        self.length = length
        self.high = high
        self.low = high // 4
        self.received = 0
        self.complete = False
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._error: BodyError | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._pause = pause
        self._resume = resume
        self._paused = False

    # -- the connection's side ------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """A piece of the body arrived."""
        if self._error is not None:
            return
        self._chunks.append(data)
        self._buffered += len(data)
        self.received += len(data)
        if self._buffered > self.high and not self._paused:
            self._paused = True
            self._pause()
        self._wake()

    def finish(self) -> None:
        """The whole body arrived."""
        self.complete = True
        self._wake()

    def fail(self, error: BodyError) -> None:
        """The body will not arrive (timeout, too large, the client went away)."""
        if self.complete or self._error is not None:
            return
        self._error = error
        self._wake()

    @property
    def paused(self) -> bool:
        """Whether the stream has asked its source to stop sending."""
        return self._paused

    @property
    def failed(self) -> BodyError | None:
        """Why the body did not arrive, if it did not."""
        return self._error

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- the handler's side ---------------------------------------------------------------

    async def next_chunk(self) -> bytes:
        """The next piece; b"" once the body is complete. Raises :class:`BodyError`."""
        while True:
            if self._error is not None:
                raise self._error
            if self._chunks:
                data = self._chunks.popleft()
                self._buffered -= len(data)
                if self._paused and self._buffered <= self.low:
                    self._paused = False
                    self._resume()
                return data
            if self.complete:
                return b""
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[bytes]:
        while True:
            data = await self.next_chunk()
            if not data:
                return
            yield data

    async def read(self, limit: int) -> bytes:
        """The whole body, at most ``limit`` bytes (else a 413 :class:`BodyError`)."""
        parts = []
        size = 0
        async for chunk in self:
            size += len(chunk)
            if size > limit:
                raise BodyError(413, "body_too_large")
            parts.append(chunk)
        return b"".join(parts)
