"""Streamed answers: a response sent piece by piece as its producer yields them."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from authgate.dataplane.http import Request, StreamingResponse, serialize_stream_head

if TYPE_CHECKING:
    from authgate.dataplane.connection import HttpProtocol

log = logging.getLogger(__name__)


async def send_stream(conn: HttpProtocol, request: Request, response: StreamingResponse) -> None:
    """Send a response piece by piece; wait while the client is not reading."""
    transport = conn.transport
    chunks = response.chunks
    chunked = response.length is None and request.version != "1.0"
    keep_alive = conn._keep_alive(request) and (chunked or response.length is not None)
    try:
        if transport is None:
            return
        transport.write(
            serialize_stream_head(
                response, request.request_id, conn.server.date.get(), keep_alive, chunked
            )
        )
        if request.method != "HEAD":
            async for chunk in chunks:
                if conn.transport is None:
                    return  # the client went away: stop producing
                if chunk:
                    transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
                while conn.writing_paused and conn.transport is not None:
                    await conn._writable.wait()
            if conn.transport is None:
                return
            if chunked:
                transport.write(b"0\r\n\r\n")
    except Exception as exc:
        # The head is out, so no error status can follow: end the connection without the
        # body's end, which tells the client the body is incomplete.
        log.warning("stream of %s ended early: %r", request.request_id, exc)
        keep_alive = False
    finally:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()
    conn.busy = False
    if not keep_alive:
        conn.closing = True
        conn.queue.clear()
        conn.abort()
        return
    conn._drain()
