"""Streaming responses: chunked, in order, as produced, paused for slow readers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import h11

from authgate.dataplane.http import (
    Handler,
    Request,
    Response,
    StreamingResponse,
    json_response,
)
from tests.dataplane.conftest import exchange, running, statuses


def streamer(gate: asyncio.Event, produced: list[int]) -> Handler:
    async def handler(request: Request) -> Response:
        if request.target == "/plain":
            return json_response(200, {"plain": True})

        async def pieces() -> AsyncIterator[bytes]:
            for i in range(3):
                if i == 2:
                    await gate.wait()  # the last piece waits until the test says so
                produced.append(i)
                yield f"data: {i}\n\n".encode()
            if request.target == "/broken":
                raise RuntimeError("upstream went away")

        return StreamingResponse(200, "content-type: text/event-stream\r\n", pieces())

    return handler


async def read_events(conn: h11.Connection, reader: asyncio.StreamReader) -> list[object]:
    events: list[object] = []
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await asyncio.wait_for(reader.read(65536), 5))
            continue
        events.append(event)
        if isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
            return events


async def test_pieces_reach_the_client_as_they_are_produced() -> None:
    gate, produced = asyncio.Event(), list[int]()
    async with running(streamer(gate, produced)) as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        conn = h11.Connection(our_role=h11.CLIENT)
        writer.write(conn.send(h11.Request(method="GET", target="/sse", headers=[("Host", "x")])))
        writer.write(conn.send(h11.EndOfMessage()))
        seen = b""
        while b"data: 1" not in seen:  # the first pieces arrive before the last exists
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await asyncio.wait_for(reader.read(65536), 5))
            elif isinstance(event, h11.Data):
                seen += bytes(event.data)
        assert produced == [0, 1]
        gate.set()
        rest = await read_events(conn, reader)
        body = seen + b"".join(bytes(e.data) for e in rest if isinstance(e, h11.Data))
        assert body == b"data: 0\n\ndata: 1\n\ndata: 2\n\n"
        assert isinstance(rest[-1], h11.EndOfMessage)  # h11 checked the chunked framing
        # the connection stays usable for the next request, answered in order
        conn.start_next_cycle()
        writer.write(conn.send(h11.Request(method="GET", target="/plain", headers=[("Host", "x")])))
        writer.write(conn.send(h11.EndOfMessage()))
        after = await read_events(conn, reader)
        assert any(isinstance(e, h11.Response) and e.status_code == 200 for e in after)
        writer.close()


async def test_a_stream_that_fails_midway_is_not_passed_off_as_complete() -> None:
    gate, produced = asyncio.Event(), list[int]()
    gate.set()
    async with running(streamer(gate, produced)) as (_, port):
        raw = await exchange(port, b"GET /broken HTTP/1.1\r\nHost: x\r\n\r\n")
    assert statuses(raw) == [200]
    assert b"data: 2" in raw
    assert not raw.endswith(b"0\r\n\r\n")  # no terminating chunk: the client sees truncation


async def test_head_of_a_stream_has_no_body() -> None:
    gate, produced = asyncio.Event(), list[int]()
    gate.set()
    async with running(streamer(gate, produced)) as (_, port):
        raw = await exchange(port, b"HEAD /sse HTTP/1.1\r\nHost: x\r\n\r\n")
    assert statuses(raw) == [200]
    assert b"data:" not in raw


async def test_a_slow_reader_pauses_the_producer() -> None:
    produced: list[int] = []

    async def big(request: Request) -> Response:
        async def pieces() -> AsyncIterator[bytes]:
            for i in range(1000):
                produced.append(i)
                yield b"\0" * 65536  # 64 MiB in all, if nobody stopped it
                await asyncio.sleep(0)

        return StreamingResponse(200, "", pieces())

    async with running(big) as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        await asyncio.sleep(0.5)  # read nothing
        assert len(produced) < 200  # paused well before 64 MiB were produced
        received = 0
        while received < 1000 * 65536:
            chunk = await asyncio.wait_for(reader.read(1 << 20), 5)
            assert chunk
            received += chunk.count(0)
        writer.close()
    assert len(produced) == 1000
