"""Whatever an upstream sends, the client gets a well-formed answer: the upstream's, or a
502/504 with a stable code — never a 500, never a hang — and the gateway keeps serving."""

from __future__ import annotations

import asyncio
import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.dataplane.gateway import fetch, gateway, raw_upstream, read_request, request

STATUS = st.sampled_from([b"200 OK", b"204 No Content", b"304 Not Modified", b"404 X", b"999 Z"])
HEADER = st.one_of(
    st.sampled_from(
        [
            b"Content-Length: 5",
            b"Content-Length: 0",
            b"Content-Length: -1",
            b"Content-Length: 5, 6",
            b"Transfer-Encoding: chunked",
            b"Transfer-Encoding: gzip",
            b"Connection: close",
            b"Connection: keep-alive, X-A",
            b"Content-Type: text/event-stream",
            b"X-A: \x01",
            b"Bad Header",
        ]
    ),
    st.binary(max_size=30).map(lambda b: b"X-F: " + b.replace(b"\r", b"").replace(b"\n", b"")),
)
BODY = st.one_of(
    st.sampled_from([b"hello", b"5\r\nhello\r\n0\r\n\r\n", b"zz\r\n", b"5\r\nhel", b""]),
    st.binary(max_size=80),
)


@st.composite
def replies(draw: st.DrawFn) -> bytes:
    if draw(st.booleans()):
        return draw(st.binary(max_size=120))  # anything at all
    head = (
        b"HTTP/1.1 "
        + draw(STATUS)
        + b"\r\n"
        + b"".join(h + b"\r\n" for h in draw(st.lists(HEADER, max_size=4)))
    )
    whole = head + b"\r\n" + draw(BODY)
    return whole[: draw(st.integers(min_value=1, max_value=len(whole)))]


@settings(max_examples=4, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(replies(), min_size=20, max_size=20))
def test_any_upstream_reply_gives_a_clean_answer(batch: list[bytes]) -> None:
    asyncio.run(_run(batch))


async def _run(batch: list[bytes]) -> None:
    pending = list(batch)

    async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(
            pending.pop(0) if pending else b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        )
        await writer.drain()

    async with raw_upstream(upstream) as url, gateway([url], first_byte_timeout_s=0.3) as gw:
        for _ in batch:
            status, headers, body = await fetch(gw.port, request("/v1/echo", gw.key))
            assert status != 500
            if status in (502, 504):
                assert re.fullmatch(rb'\{"error":"upstream_\w+","request_id":"[\w-]+"\}', body)
            assert "x-request-id" in headers
        status, _, body = await fetch(gw.port, request("/v1/echo", gw.key))
        assert (status, body) == (200, b"ok")
