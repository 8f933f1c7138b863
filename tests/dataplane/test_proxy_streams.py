"""Large and slow bodies through the gateway: streamed both ways, memory bounded, and
back-pressure that reaches the other end."""

from __future__ import annotations

import asyncio
import hashlib
import json
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

from authgate import demo_upstream
from authgate.dataplane.http import StreamingResponse
from authgate.dataplane.router import Router
from authgate.dataplane.server import Limits, Server
from tests.dataplane.gateway import dechunk, gateway, parse, raw_upstream, read_request, request

MB = 1 << 20
BLOCK = bytes(range(256)) * 4096  # 1 MiB


@contextmanager
def peak_memory() -> Iterator[list[int]]:
    """The peak of Python allocations inside the block, in bytes (filled in at exit)."""
    result: list[int] = []
    tracemalloc.start()
    try:
        yield result
    finally:
        result.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], int]:
    """Read one Content-Length response, counting (not keeping) its body."""
    status, headers, _ = parse(await reader.readuntil(b"\r\n\r\n"))
    remaining = int(headers["content-length"])
    total = 0
    while remaining:
        piece = await reader.read(min(remaining, MB))
        if not piece:
            break
        remaining -= len(piece)
        total += len(piece)
    return status, headers, total


async def test_a_100_mb_upload_streams_through_with_bounded_memory() -> None:
    up = await demo_upstream.start("127.0.0.1", 0)
    size = 100 * MB
    async with gateway([f"http://127.0.0.1:{up.ports[0]}"]) as gw:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        head = request("/v1/echo", gw.key, f"Content-Length: {size}", method="PUT")
        digest = hashlib.sha256()
        with peak_memory() as peak:
            writer.write(head)
            for _ in range(size // MB):
                writer.write(BLOCK)
                digest.update(BLOCK)
                await writer.drain()
            status, _, body = parse(await asyncio.wait_for(_read_all_json(reader), 30))
        writer.close()
    await up.shutdown(1.0)
    seen = json.loads(body)
    assert (status, seen["body_bytes"], seen["body_sha256"]) == (200, size, digest.hexdigest())
    assert peak[0] < 24 * MB  # gateway, upstream and client together, for 100 MB


async def _read_all_json(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(parse(head)[1]["content-length"])
    return head + await reader.readexactly(length)


async def test_a_100_mb_download_streams_through_with_bounded_memory() -> None:
    up = await demo_upstream.start("127.0.0.1", 0)
    size = 100 * MB
    async with gateway([f"http://127.0.0.1:{up.ports[0]}"]) as gw:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        with peak_memory() as peak:
            writer.write(request(f"/v1/blob?bytes={size}", gw.key))
            status, headers, total = await asyncio.wait_for(read_response(reader), 30)
        writer.close()
    await up.shutdown(1.0)
    assert (status, headers["content-length"], total) == (200, str(size), size)
    assert peak[0] < 24 * MB


async def test_a_chunked_upload_arrives_whole() -> None:
    up = await demo_upstream.start("127.0.0.1", 0)
    pieces = [b"a" * 10, b"b" * 70_000, b"c" * 5]
    async with gateway([f"http://127.0.0.1:{up.ports[0]}"]) as gw:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        writer.write(request("/v1/echo", gw.key, "Transfer-Encoding: chunked", method="POST"))
        for piece in pieces:
            writer.write(b"%x\r\n%b\r\n" % (len(piece), piece))
            await writer.drain()
            await asyncio.sleep(0.01)
        writer.write(b"0\r\n\r\n")
        _, _, body = parse(await asyncio.wait_for(_read_all_json(reader), 10))
        writer.close()
    await up.shutdown(1.0)
    seen = json.loads(body)
    whole = b"".join(pieces)
    assert (seen["body_bytes"], seen["body_sha256"]) == (
        len(whole),
        hashlib.sha256(whole).hexdigest(),
    )
    assert seen["headers"]["transfer-encoding"] == "chunked"


async def test_a_slow_client_slows_the_upstream() -> None:
    produced = 0
    total = 64 * MB

    async def body() -> AsyncIterator[bytes]:
        nonlocal produced
        while produced < total:
            produced += len(BLOCK)
            yield BLOCK

    router = Router()
    router.set_fallback(lambda r: StreamingResponse(200, "", body(), total))
    up = Server(router, Limits())
    await up.start("127.0.0.1", 0)
    async with gateway([f"http://127.0.0.1:{up.ports[0]}"]) as gw:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        writer.write(request("/v1/big", gw.key))
        await asyncio.sleep(0.5)  # the client reads nothing for a while
        stalled_at = produced
        status, _, got = await asyncio.wait_for(read_response(reader), 30)
        writer.close()
    await up.shutdown(1.0)
    assert stalled_at < total // 2  # the upstream was held back, not drained into memory
    assert (status, got, produced) == (200, total, total)


async def test_a_slow_upstream_slows_the_upload() -> None:
    size = 64 * MB
    let_read = asyncio.Event()

    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await read_request(reader)
        await let_read.wait()
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        while length:
            length -= len(await reader.read(min(length, MB)))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()

    async with raw_upstream(slow) as url, gateway([url]) as gw:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        writer.write(request("/v1/echo", gw.key, f"Content-Length: {size}", method="PUT"))
        sent = 0

        async def upload() -> None:
            nonlocal sent
            while sent < size:
                writer.write(BLOCK)
                await writer.drain()
                sent += len(BLOCK)

        task = asyncio.create_task(upload())
        await asyncio.sleep(0.5)
        stalled_at = sent
        let_read.set()
        await task
        status, _, body = parse(await asyncio.wait_for(_read_all_json(reader), 10))
        writer.close()
    assert stalled_at < size // 2  # kernel buffers and ours hold a few MB, not 64
    assert (status, body) == (200, b"ok")


async def test_a_client_that_leaves_mid_stream_closes_the_upstream_side() -> None:
    finished = asyncio.Event()

    async def endless() -> AsyncIterator[bytes]:
        try:
            while True:
                yield b"data: tick\n\n"
                await asyncio.sleep(0.01)
        finally:
            finished.set()

    router = Router()
    router.set_fallback(lambda r: StreamingResponse(200, "", endless()))
    up = Server(router, Limits())
    await up.start("127.0.0.1", 0)
    async with gateway([f"http://127.0.0.1:{up.ports[0]}"]) as gw:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        writer.write(request("/v1/events", gw.key))
        await reader.readuntil(b"data: tick")
        writer.close()
        await asyncio.wait_for(finished.wait(), 5)
        pool = gw.proxy.upstreams["default"]
        await asyncio.sleep(0.05)
        assert pool.busy == 0
        assert gw.upstream_events() == []  # the client leaving is not an upstream failure
    await up.shutdown(1.0)


async def test_an_upload_that_stalls_gets_408() -> None:
    up = await demo_upstream.start("127.0.0.1", 0)
    url = f"http://127.0.0.1:{up.ports[0]}"
    async with gateway([url], limits=Limits(tick=0.05, body_timeout=0.3)) as gw:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        writer.write(request("/v1/echo", gw.key, f"Content-Length: {MB}", method="PUT"))
        writer.write(b"x" * 100_000)
        raw = await asyncio.wait_for(reader.read(), 5)
        writer.close()
    await up.shutdown(1.0)
    status, _, body = parse(raw)
    assert (status, json.loads(body)["error"]) == (408, "request_timeout")


async def test_a_streamed_upload_over_the_limit_gets_413() -> None:
    up = await demo_upstream.start("127.0.0.1", 0)
    url = f"http://127.0.0.1:{up.ports[0]}"
    async with gateway([url], limits=Limits(tick=0.05, max_stream_bytes=MB)) as gw:
        sized = await _send_raw(
            gw.port, request("/v1/echo", gw.key, f"Content-Length: {2 * MB}", method="PUT")
        )
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        writer.write(request("/v1/echo", gw.key, "Transfer-Encoding: chunked", method="PUT"))
        for _ in range(3):
            writer.write(b"%x\r\n%b\r\n" % (len(BLOCK), BLOCK))
        raw = await asyncio.wait_for(reader.read(), 5)
        writer.close()
    await up.shutdown(1.0)
    assert parse(sized)[0] == 413
    assert parse(raw)[0] == 413
    assert dechunk(b"0\r\n\r\n") == (b"", True)


async def _send_raw(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    try:
        return await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()
