"""Data-plane fixtures: a server on an ephemeral port, driven over real sockets.

These run on asyncio's own loop; ``authgate serve`` runs the same code on uvloop, which the
subprocess tests (curl, nginx) and the stream fuzzer exercise."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from authgate.dataplane.http import Handler, Request, Response, json_response
from authgate.dataplane.server import Limits, Server


async def echo(request: Request) -> Response:
    """Answers with what it saw; ``/sleep/N`` waits N ms first (for ordering tests)."""
    if request.target.startswith("/sleep/"):
        await asyncio.sleep(int(request.target.rsplit("/", 1)[1]) / 1000)
    return json_response(
        200,
        {
            "method": request.method,
            "target": request.target,
            "body": len(request.body),
            "trusted": request.trusted,
        },
    )


@asynccontextmanager
async def running(
    handler: Handler = echo, limits: Limits | None = None, trusted: tuple[str, ...] = ()
) -> AsyncIterator[tuple[Server, int]]:
    """A started server and its port; shut down afterwards."""
    server = Server(handler, limits or Limits(tick=0.05), trusted)
    await server.start("127.0.0.1", 0)
    try:
        yield server, server.ports[0]
    finally:
        await server.shutdown(1.0)


async def exchange(port: int, data: bytes) -> bytes:
    """Send ``data``, half-close, and read until the server closes (5 s at most)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    writer.write_eof()
    try:
        return await asyncio.wait_for(reader.read(), 5.0)
    finally:
        writer.close()


def statuses(raw: bytes) -> list[int]:
    """The status codes of the responses in a byte stream, in order."""
    return [int(code) for code in re.findall(rb"HTTP/1\.[01] (\d{3}) ", raw)]
