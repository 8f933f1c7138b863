"""A gateway on an ephemeral port in front of real upstreams, for the proxy tests."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from authgate.audit.event import as_dict
from authgate.config import Cache as CacheSettings
from authgate.config import Compression, Route, Settings, Tier, Upstream
from authgate.dataplane.app import build_router
from authgate.dataplane.cache import ResponseCache
from authgate.dataplane.compress import Compressor
from authgate.dataplane.proxy import Proxy
from authgate.dataplane.server import Limits, Server
from authgate.dataplane.upstream import Upstream as UpstreamPool
from authgate.identity.ids import Kind
from authgate.testing import Harness, fast_passwords, make_harness

TIERS = tuple(
    Tier(level=i, name=n, requests_per_minute=1_000_000, burst=1_000_000)
    for i, n in enumerate(["guest", "user", "advanced", "trusted", "privileged", "system"])
)
ROUTES = (
    Route(name="models", path="/v1/models", methods=("GET", "HEAD"), min_tier=0),
    Route(name="cached", path="/v1/cached/*", min_tier=1, cache="principal"),
    Route(name="shared", path="/v1/shared/*", min_tier=1, cache="tier"),
    Route(name="zipped", path="/v1/zipped/*", min_tier=1, compress=True),
    Route(name="admin", path="/v1/admin/*", min_tier=5),
    Route(name="v1", path="/v1/*", min_tier=1),
)


@dataclass
class Gate:
    """A running gateway: its port, a tier-3 key, the harness and the proxy."""

    port: int
    key: str
    bed: Harness
    proxy: Proxy
    server: Server

    async def key_for(self, tier: int) -> str:
        """A new principal's key at ``tier``."""
        p = await self.bed.identity.create_principal(
            Kind.AGENT, f"p{len(self.bed.store.principals)}", tier
        )
        return (await self.bed.identity.issue_key(p.id)).key

    def upstream_events(self) -> list[dict[str, object]]:
        """The audit events of upstream failures."""
        return [as_dict(e) for e in self.bed.sink.events if e.type == "upstream"]


@asynccontextmanager
async def gateway(
    urls: list[str],
    *,
    trusted: tuple[str, ...] = (),
    limits: Limits | None = None,
    cache: CacheSettings | None = None,
    **upstream: object,
) -> AsyncIterator[Gate]:
    """A gateway whose ``default`` upstream is ``urls`` (with ``upstream`` settings)."""
    settings = Settings(
        tiers=TIERS,
        routes=ROUTES,
        passwords=fast_passwords(),
        upstreams={"default": Upstream(urls=tuple(urls), **upstream)},  # type: ignore[arg-type]
    )
    bed = await make_harness(settings)
    proxy = Proxy(
        bed.engine,
        {"default": UpstreamPool("default", settings.upstreams["default"])},
        {route.name: route for route in settings.routes},
        bed.sink,
        bed.clock,
        cache=ResponseCache(cache or CacheSettings()),
        compressor=Compressor(Compression(min_bytes=100)),
    )
    router = build_router(bed.engine, lambda: {"ok": True}, proxy=proxy)
    server = Server(router, limits or Limits(tick=0.05), trusted, streams_body=router.streams)
    await server.start("127.0.0.1", 0)
    p = await bed.identity.create_principal(Kind.AGENT, "caller", 3)
    key = (await bed.identity.issue_key(p.id)).key
    try:
        yield Gate(server.ports[0], key, bed, proxy, server)
    finally:
        await server.shutdown(1.0)
        proxy.close()
        await asyncio.sleep(0)  # let the transports finish closing
        await bed.identity.close()


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def raw_upstream(handler: Handler) -> AsyncIterator[str]:
    """A TCP server running ``handler`` per connection; yields its base URL."""

    async def guarded(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(guarded, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()


async def read_request(reader: asyncio.StreamReader) -> bytes:
    """One request head (bodies are not read)."""
    return await reader.readuntil(b"\r\n\r\n")


def request(
    target: str, key: str | None, *headers: str, method: str = "GET", body: bytes = b""
) -> bytes:
    """A request's bytes."""
    lines = [f"{method} {target} HTTP/1.1", "Host: gateway.test"]
    if key is not None:
        lines.append(f"Authorization: Bearer {key}")
    lines += list(headers)
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join([*lines, "", ""])).encode() + body


async def fetch(port: int, data: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send one request with ``Connection: close``; return status, headers, raw body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head, _, rest = data.partition(b"\r\n\r\n")
    writer.write(head + b"\r\nConnection: close\r\n\r\n" + rest)
    await writer.drain()
    try:
        raw = await asyncio.wait_for(reader.read(), 10.0)
    finally:
        writer.close()
    return parse(raw)


def parse(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """Status, lower-case headers and the raw body of one response."""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


def dechunk(body: bytes) -> tuple[bytes, bool]:
    """The payload of a chunked body and whether it ended with the last chunk."""
    out = b""
    while True:
        match = re.match(rb"([0-9a-fA-F]+)\r\n", body)
        if match is None:
            return out, False
        size = int(match[1], 16)
        start = match.end()
        if size == 0:
            return out, body[start : start + 2] == b"\r\n"
        if len(body) < start + size + 2:
            return out + body[start:], False
        out += body[start : start + size]
        body = body[start + size + 2 :]
