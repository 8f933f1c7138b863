"""Gateway mode against real upstreams: what goes up, what comes back, and every failure."""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager

from authgate import demo_upstream
from authgate.dataplane.http import StreamingResponse
from authgate.dataplane.router import Router
from authgate.dataplane.server import Limits, Server
from tests.dataplane.gateway import (
    dechunk,
    fetch,
    gateway,
    parse,
    raw_upstream,
    read_request,
    request,
)


async def drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)  # then close without a word


async def echo_through(
    upstream: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
    first_byte_timeout_s: float | None = None,
) -> tuple[int, bytes, list[object]]:
    """GET /v1/echo through a gateway in front of the raw ``upstream``: the status, the
    body, and the reasons of the upstream failures audited."""
    async with raw_upstream(upstream) as url:
        gate = (
            gateway([url])
            if first_byte_timeout_s is None
            else gateway([url], first_byte_timeout_s=first_byte_timeout_s)
        )
        async with gate as gw:
            status, _, body = await fetch(gw.port, request("/v1/echo", gw.key))
            events = gw.upstream_events()
    return status, body, [e["reason"] for e in events]


def error_of(body: bytes) -> object:
    return json.loads(body)["error"]


@contextmanager
def dead_url() -> Iterator[str]:
    """An URL where nothing listens: its port stays bound (not listening) meanwhile, so
    no other test's server can take it and make it answer."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


async def demo(interval_s: float = 0.01) -> tuple[Server, str]:
    server = await demo_upstream.start("127.0.0.1", 0, interval_s)
    return server, f"http://127.0.0.1:{server.ports[0]}"


async def test_the_upstream_sees_identity_not_the_credential() -> None:
    up, url = await demo()
    async with gateway([url]) as gw:
        status, headers, body = await fetch(
            gw.port,
            request(
                "/v1/echo?q=1",
                gw.key,
                "X-API-Key: " + gw.key,
                "X-Auth-Tier: 5",
                "X-Auth-Principal: sys_forged",
                "X-Forwarded-For: 6.6.6.6",
                "Forwarded: for=6.6.6.6",
                "Proxy-Authorization: Basic c2VjcmV0",
                "Connection: keep-alive, X-Hop",
                "X-Hop: secret",
                "Keep-Alive: timeout=5",
                "User-Agent: tests",
            ),
        )
    await up.shutdown(1.0)
    assert status == 200
    seen = json.loads(body)
    sent = seen["headers"]
    assert "authorization" not in sent
    assert "x-api-key" not in sent
    assert "proxy-authorization" not in sent
    assert "x-hop" not in sent
    assert "keep-alive" not in sent
    assert sent["x-auth-tier"] == "3"
    assert sent["x-auth-principal"].startswith("agt_")
    assert sent["x-auth-key-id"] == gw.key[4:16]
    assert sent["x-forwarded-for"] == "127.0.0.1"
    assert sent["forwarded"] == 'for=127.0.0.1;proto=http;host="gateway.test"'
    assert sent["x-forwarded-host"] == "gateway.test"
    assert sent["x-forwarded-proto"] == "http"
    assert sent["user-agent"] == "tests"
    assert sent["x-request-id"] == headers["x-request-id"]
    assert sent["host"] == url.removeprefix("http://")
    assert seen["target"] == "/v1/echo?q=1"
    assert headers["ratelimit-limit"] == "1000000"


async def test_a_trusted_proxy_extends_the_forwarding_headers() -> None:
    up, url = await demo()
    async with gateway([url], trusted=("127.0.0.1/32",)) as gw:
        _, headers, body = await fetch(
            gw.port,
            request(
                "/v1/echo",
                gw.key,
                "X-Forwarded-For: 203.0.113.9",
                "X-Forwarded-Proto: https",
                "X-Forwarded-Host: api.example",
                "Forwarded: for=203.0.113.9;proto=https",
                "X-Request-Id: trace-42",
            ),
        )
    await up.shutdown(1.0)
    sent = json.loads(body)["headers"]
    assert sent["x-forwarded-for"] == "203.0.113.9, 127.0.0.1"
    assert sent["x-forwarded-proto"] == "https"
    assert sent["x-forwarded-host"] == "api.example"
    assert sent["forwarded"] == (
        'for=203.0.113.9;proto=https, for=127.0.0.1;proto=https;host="api.example"'
    )
    assert sent["x-request-id"] == headers["x-request-id"] == "trace-42"


async def test_the_normalised_path_goes_up_not_the_raw_one() -> None:
    up, url = await demo()
    async with gateway([url]) as gw:
        _, _, body = await fetch(gw.port, request("/v1/models/../echo?a=b", gw.key))
        status, _, _ = await fetch(gw.port, request("/v1/models/../admin/x", gw.key))
    await up.shutdown(1.0)
    assert json.loads(body)["target"] == "/v1/echo?a=b"
    assert status == 403  # judged as /v1/admin/x, which needs tier 5


async def test_denied_requests_never_reach_the_upstream() -> None:
    seen: list[bytes] = []

    async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await read_request(reader))

    async with raw_upstream(upstream) as url, gateway([url]) as gw:
        unknown = await fetch(gw.port, request("/v1/echo", "agk_" + "a" * 12 + "_" + "b" * 40))
        missing = await fetch(gw.port, request("/v1/echo", None))
        tier = await fetch(gw.port, request("/v1/admin/x", gw.key))
    assert [unknown[0], missing[0], tier[0]] == [401, 401, 403]
    assert seen == []


async def test_sse_chunks_reach_the_client_before_the_upstream_finishes() -> None:
    release = asyncio.Event()

    async def events() -> AsyncIterator[bytes]:
        yield b"data: first\n\n"
        await release.wait()  # set only once the client has the first event
        yield b"data: last\n\n"

    router = Router()
    router.set_fallback(
        lambda r: StreamingResponse(200, "content-type: text/event-stream\r\n", events())
    )
    up = Server(router, Limits())
    await up.start("127.0.0.1", 0)
    async with gateway([f"http://127.0.0.1:{up.ports[0]}"]) as gw:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        writer.write(request("/v1/stream", gw.key))
        got = b""
        while b"data: first" not in got:
            got += await asyncio.wait_for(reader.read(65536), 5)
        assert b"data: last" not in got
        release.set()
        while not got.endswith(b"0\r\n\r\n"):
            got += await asyncio.wait_for(reader.read(65536), 5)
        writer.close()
    await up.shutdown(1.0)
    status, headers, body = parse(got)
    assert status == 200
    assert headers["content-type"] == "text/event-stream"
    payload, complete = dechunk(body)
    assert (payload, complete) == (b"data: first\n\ndata: last\n\n", True)


async def test_demo_chat_streams_openai_chunks_through_the_gateway() -> None:
    up, url = await demo(0.001)
    body = json.dumps({"stream": True, "messages": [{"role": "user", "content": "a b c"}]})
    async with gateway([url]) as gw:
        status, _, raw = await fetch(
            gw.port, request("/v1/chat/completions", gw.key, method="POST", body=body.encode())
        )
    await up.shutdown(1.0)
    payload, complete = dechunk(raw)
    events = [line[6:] for line in payload.decode().split("\n\n") if line]
    assert (status, complete, events[-1]) == (200, True, "[DONE]")
    words = "".join(json.loads(e)["choices"][0]["delta"].get("content", "") for e in events[:-1])
    assert words == "You said: a b c"


async def test_connect_refused_is_502_and_audited() -> None:
    with dead_url() as url:
        async with gateway([url]) as gw:
            status, headers, body = await fetch(gw.port, request("/v1/echo", gw.key))
            events = gw.upstream_events()
    assert status == 502
    assert json.loads(body) == {
        "error": "upstream_unavailable",
        "request_id": headers["x-request-id"],
    }
    assert len(events) == 1
    assert events[0]["reason"] == "upstream_unavailable"
    assert events[0]["details"]["upstream"] == "default"  # type: ignore[index]
    assert events[0]["details"]["url"] == url  # type: ignore[index]
    assert events[0]["request_id"] == headers["x-request-id"]


async def test_a_silent_upstream_is_504() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(5)

    status, body, reasons = await echo_through(silent, first_byte_timeout_s=0.2)
    assert (status, error_of(body)) == (504, "upstream_timeout")
    assert reasons == ["upstream_timeout"]


async def test_garbage_from_the_upstream_is_502() -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"SMTP ready\r\n\r\n")
        await writer.drain()

    status, body, _ = await echo_through(garbage)
    assert (status, error_of(body)) == (502, "upstream_error")


async def test_a_close_before_answering_is_502() -> None:
    status, body, _ = await echo_through(drop)
    assert (status, error_of(body)) == (502, "upstream_closed")


async def test_a_chunked_body_cut_off_ends_without_its_last_chunk() -> None:
    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        await writer.drain()
        await asyncio.sleep(0.1)

    status, body, reasons = await echo_through(cut)
    payload, complete = dechunk(body)
    assert (status, payload, complete) == (200, b"hello", False)
    assert reasons == ["upstream_closed"]


async def test_a_sized_body_cut_off_is_shorter_than_announced() -> None:
    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 200000\r\n\r\n" + b"x" * 70000)
        await writer.drain()
        await asyncio.sleep(0.1)

    async with raw_upstream(cut) as url, gateway([url]) as gw:
        status, headers, body = await fetch(gw.port, request("/v1/echo", gw.key))
    assert (status, headers["content-length"]) == (200, "200000")
    assert len(body) == 70000  # the connection closed early: the client knows it is short


async def test_a_body_until_close_is_relayed_whole() -> None:
    async def old(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it")
        await writer.drain()

    status, body, _ = await echo_through(old)
    assert (status, dechunk(body)) == (200, (b"all of it", True))


async def test_a_stale_keepalive_connection_is_retried_for_idempotent_requests() -> None:
    connections = 0

    async def one_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        await read_request(reader)  # the second request on this connection: drop it

    async with raw_upstream(one_answer) as url, gateway([url]) as gw:
        first = await fetch(gw.port, request("/v1/echo", gw.key))
        second = await fetch(gw.port, request("/v1/echo", gw.key))
        post = await fetch(gw.port, request("/v1/echo", gw.key, method="POST", body=b"x"))
    assert (first[0], second[0], second[2]) == (200, 200, b"ok")
    assert post[0] == 502  # not idempotent: not replayed
    assert connections == 2


async def test_an_url_that_keeps_failing_is_skipped_for_a_while() -> None:
    up, live = await demo()
    with dead_url() as dead:
        async with gateway([dead, live], max_fails=1, fail_timeout_s=60) as gw:
            results = [await fetch(gw.port, request("/v1/echo", gw.key)) for _ in range(6)]
            pool = gw.proxy.upstreams["default"]
    await up.shutdown(1.0)
    assert [r[0] for r in results] == [200] * 6  # a connect failure moves on to the next URL
    assert pool.targets[0].down_until > pool.loop.time()


async def test_the_connection_bound_makes_callers_wait_then_503() -> None:
    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(0.5)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()

    async with (
        raw_upstream(slow) as url,
        gateway([url], max_connections=1, connect_timeout_s=0.2) as gw,
    ):
        first, second = await asyncio.gather(
            fetch(gw.port, request("/v1/echo", gw.key)),
            fetch(gw.port, request("/v1/echo", gw.key)),
        )
    assert sorted([first[0], second[0]]) == [200, 503]


async def test_head_and_304_carry_no_body_and_keep_the_connection() -> None:
    up, url = await demo()
    async with gateway([url]) as gw:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        writer.write(request("/v1/models", gw.key, method="HEAD") + request("/v1/models", gw.key))
        raw = b""
        while raw.count(b"HTTP/1.1 200") < 2 or not raw.endswith(b"}]}"):
            raw += await asyncio.wait_for(reader.read(65536), 5)
        writer.close()
    await up.shutdown(1.0)
    first, _, rest = raw.partition(b"\r\n\r\n")
    assert rest.startswith(b"HTTP/1.1 200")  # the HEAD answer had no body
    assert b"content-length: 96" in first


async def test_upstream_demo_answers_bad_input_cleanly() -> None:
    up, url = await demo()
    async with gateway([url]) as gw:
        bad = await fetch(gw.port, request("/v1/echo?delay_ms=x", gw.key))
        chat = await fetch(
            gw.port, request("/v1/chat/completions", gw.key, method="POST", body=b"{nope")
        )
    await up.shutdown(1.0)
    assert (bad[0], chat[0]) == (400, 400)


async def test_an_upstream_that_resets_is_502() -> None:
    async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()  # RST, not FIN

    status, body, reasons = await echo_through(reset)
    assert (status, error_of(body)) == (502, "upstream_closed")
    assert reasons == ["upstream_closed"]


async def test_hop_by_hop_response_headers_stay_with_the_upstream_connection() -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(
            b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\n"
            b"Keep-Alive: timeout=5\r\nX-Kept: yes\r\nDate: Mon, 01 Jan 2001 00:00:00 GMT\r\n"
            b"Content-Length: 2\r\n\r\nok"
        )
        await writer.drain()

    async with raw_upstream(answer) as url, gateway([url]) as gw:
        status, headers, body = await fetch(gw.port, request("/v1/echo", gw.key))
    assert (status, body, headers["x-kept"]) == (200, b"ok", "yes")
    assert "x-secret" not in headers
    assert "keep-alive" not in headers
    assert headers["date"] != "Mon, 01 Jan 2001 00:00:00 GMT"
    assert headers["content-length"] == "2"
