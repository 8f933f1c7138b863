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
- streamed bodies: for targets ``streams_body`` accepts (the proxy), a chunked body or one
  larger than ``buffer_body_bytes`` is handed to the handler as it arrives, up to
  ``max_stream_bytes``, with back-pressure, and times out between reads rather than in total;
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
from collections.abc import Callable, Iterable
from typing import Any

from authgate.dataplane.connection import HttpProtocol
from authgate.dataplane.http import DateHeader, Handler, RequestIds
from authgate.dataplane.limits import Limits

log = logging.getLogger(__name__)

__all__ = ["HttpProtocol", "Limits", "Server"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Server:
    """Shared state of one listening server: connections, limits, trust, the sweeper."""

    def __init__(
        self,
        handler: Handler,
        limits: Limits,
        trusted_proxies: Iterable[str] = (),
        streams_body: Callable[[bytes], bool] | None = None,
    ) -> None:
        self.handler = handler
        # Whether a request target's body is streamed to the handler (see Request.stream).
        self.streams_body = streams_body or _never
        self.limits = limits
        self.trusted = tuple(ipaddress.ip_network(n, strict=False) for n in trusted_proxies)
        self.connections: set[HttpProtocol] = set()
        self.lingering: set[HttpProtocol] = set()
        self.ids = RequestIds()
        self.date = DateHeader()
        self.closing = False
        self.rejected = 0
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._trust_cache: dict[str, bool] = {}
        self._drained = asyncio.Event()

    def linger(self, conn: HttpProtocol) -> None:
        """A connection was answered and is only draining input before it closes: it no
        longer counts as open (nor holds up shutdown), but its deadline still applies."""
        self.connections.discard(conn)
        self.lingering.add(conn)
        if self.closing and not self.connections:
            self._drained.set()

    def forget(self, conn: HttpProtocol) -> None:
        """A connection ended."""
        self.connections.discard(conn)
        self.lingering.discard(conn)
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
            for conns in (self.connections, self.lingering):
                for conn in list(conns):
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
        for conn in [*self.connections, *self.lingering]:
            conn.abort(hard=True)
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._server is not None:
            await self._server.wait_closed()


def _never(url: bytes) -> bool:
    return False
