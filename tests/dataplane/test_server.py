"""The HTTP/1.1 server against raw sockets: framing, limits, timeouts, ordering, shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from authgate.dataplane.http import Request, Response
from authgate.dataplane.server import Limits, Server
from tests.dataplane.conftest import echo, exchange, running, statuses

GET = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"


def bodies(raw: bytes) -> list[dict[str, object]]:
    """The JSON bodies in a stream of responses."""
    return [json.loads(m) for m in re.findall(rb"\{[^{}]*\}", raw)]


async def test_keep_alive_and_pipelining_answer_in_order() -> None:
    async with running() as (_, port):
        data = b"".join(
            f"GET /sleep/{ms} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for ms in (50, 0, 20)
        )
        raw = await exchange(port, data)
    assert statuses(raw) == [200, 200, 200]
    assert [b["target"] for b in bodies(raw)] == ["/sleep/50", "/sleep/0", "/sleep/20"]


async def test_chunked_request_body() -> None:
    async with running() as (_, port):
        raw = await exchange(
            port,
            b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n",
        )
    assert statuses(raw) == [200]
    assert bodies(raw)[0]["body"] == 7


async def test_expect_100_continue() -> None:
    async with running() as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"POST /e HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
        )
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(b"hello")
        final = await asyncio.wait_for(reader.readuntil(b"}"), 2)
        writer.close()
    assert statuses(final) == [200]


async def test_head_has_length_but_no_body() -> None:
    async with running() as (_, port):
        raw = await exchange(port, b"HEAD /h HTTP/1.1\r\nHost: x\r\n\r\n" + GET)
    assert statuses(raw) == [200, 200]
    head, rest = raw.split(b"\r\n\r\n", 1)
    assert b"content-length: " in head
    assert rest.startswith(b"HTTP/1.1 200")


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" + GET,
        b"GET /a HTTP/1.0\r\n\r\n" + GET,
    ],
)
async def test_close_and_http10_end_the_connection(request_bytes: bytes) -> None:
    async with running() as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request_bytes)  # no half-close: the server must close by itself
        raw = await asyncio.wait_for(reader.read(), 2)
        writer.close()
    assert statuses(raw) == [200]
    assert b"connection: close" in raw


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (
            b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n0\r\n\r\n",
            400,
        ),
        (b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc", 400),
        (b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabc", 400),
        (b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nX-A: a\r\n  folded\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 400),
        (b"GET / HTTP/1.1\nHost: a\n\n", 400),
        (b"GET /\x01 HTTP/1.1\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nExpect: 200-ok\r\n\r\n", 417),
        (b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n", 431),
        (b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\n\r\n", 431),
        (b"POST / HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n", 413),
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"8000\r\n"
            + b"a" * 0x8000
            + b"\r\n"
            + b"8000\r\n"
            + b"a" * 0x8000
            + b"\r\n0\r\n\r\n",
            413,
        ),
    ],
    ids=[
        "cl-and-te",
        "duplicate-cl",
        "conflicting-cl",
        "negative-cl",
        "obs-fold",
        "bad-chunk-size",
        "te-not-ending-chunked",
        "bare-lf",
        "control-in-target",
        "space-before-colon",
        "unknown-expectation",
        "huge-header",
        "huge-target",
        "huge-content-length",
        "huge-chunked-body",
    ],
)
async def test_bad_framing_and_limits_answer_and_close(request_bytes: bytes, status: int) -> None:
    limits = Limits(max_header_bytes=16384, max_body_bytes=0xC000, tick=0.05)
    async with running(limits=limits) as (server, port):
        raw = await exchange(port, request_bytes + GET)  # nothing after the error is answered
        assert statuses(raw) == [status]
        assert b"connection: close" in raw
        body = json.loads(raw[raw.index(b"{") :])
        assert set(body) == {"error", "request_id"}
        await asyncio.sleep(0.05)
        assert not server.connections


async def test_smuggling_attempt_is_one_request_then_close() -> None:
    smuggle = (
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\n\r\nGET /admin HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    async with running() as (_, port):
        raw = await exchange(port, smuggle)
    assert statuses(raw) == [400]
    assert b"/admin" not in raw


async def test_pipelined_garbage_after_a_good_request() -> None:
    async with running() as (_, port):
        raw = await exchange(port, GET + b"\x00\x01garbage\r\n\r\n")
    assert statuses(raw) == [200, 400]


async def test_slowloris_is_cut_off_at_the_header_timeout() -> None:
    limits = Limits(header_timeout=0.5, tick=0.05)
    async with running(limits=limits) as (server, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        started = time.monotonic()
        received = b""
        for byte in GET[:-4]:  # one byte every 0.1 s: never completes in time
            writer.write(bytes([byte]))
            await asyncio.sleep(0.1)
            if reader.at_eof():
                break
            with contextlib.suppress(TimeoutError):
                received += await asyncio.wait_for(reader.read(4096), 0.01)
            if received:
                break
        received += await asyncio.wait_for(reader.read(), 2)
        elapsed = time.monotonic() - started
        writer.close()
        assert statuses(received) == [408]
        assert elapsed < 2.0
        assert not server.connections


async def test_idle_keep_alive_connections_are_closed() -> None:
    limits = Limits(idle_timeout=0.2, tick=0.05)
    async with running(limits=limits) as (server, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(GET)
        raw = await asyncio.wait_for(reader.read(), 2)  # returns when the server closes
        writer.close()
        assert statuses(raw) == [200]
        assert not server.connections


async def test_half_closed_peer_still_gets_its_answers() -> None:
    async with running() as (_, port):
        raw = await exchange(port, b"GET /sleep/30 HTTP/1.1\r\nHost: x\r\n\r\n" + GET)
    assert statuses(raw) == [200, 200]


async def test_connections_over_the_limit_get_503() -> None:
    async with running(limits=Limits(max_connections=1, tick=0.05)) as (server, port):
        first = await asyncio.open_connection("127.0.0.1", port)
        await asyncio.sleep(0.05)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        raw = await asyncio.wait_for(reader.read(), 2)  # answered and closed unasked
        writer.close()
        assert statuses(raw) == [503]
        assert server.rejected == 1
        first[1].close()


async def test_request_id_is_taken_only_from_trusted_peers() -> None:
    request = b"GET /a HTTP/1.1\r\nHost: x\r\nX-Request-Id: abc-123\r\n\r\n"
    async with running() as (_, port):
        untrusted = await exchange(port, request)
    async with running(trusted=("127.0.0.0/8",)) as (_, port):
        trusted = await exchange(port, request)
        bad = await exchange(port, b"GET /a HTTP/1.1\r\nX-Request-Id: a b\r\n\r\n")
    assert b"x-request-id: abc-123" not in untrusted
    assert b"x-request-id: abc-123" in trusted
    assert b"x-request-id: a b" not in bad


async def test_handler_errors_are_500_not_a_dropped_connection() -> None:
    def broken(request: Request) -> Response:
        raise RuntimeError("bug")

    async with running(handler=broken) as (_, port):
        raw = await exchange(port, GET + GET)
    assert statuses(raw) == [500, 500]


async def test_graceful_shutdown_finishes_in_flight_requests() -> None:
    async with running() as (server, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /sleep/300 HTTP/1.1\r\nHost: x\r\n\r\n")
        await asyncio.sleep(0.05)
        stopping = asyncio.create_task(server.shutdown(5.0))
        raw = await asyncio.wait_for(reader.read(), 3)
        assert await asyncio.wait_for(idle_reader.read(), 1) == b""  # idle: closed at once
        await stopping
        writer.close()
        idle_writer.close()
    assert statuses(raw) == [200]
    assert b"connection: close" in raw
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


request_lines = st.sampled_from(
    [
        b"GET / HTTP/1.1\r\n",
        b"POST /x HTTP/1.1\r\n",
        b"GET / HTTP/1.0\r\n",
        b"BREW / HTCPCP/1.0\r\n",
        b"",
    ]
)
header_lines = st.sampled_from(
    [
        b"Host: x\r\n",
        b"Content-Length: 3\r\n",
        b"Content-Length: 99\r\n",
        b"Transfer-Encoding: chunked\r\n",
        b"Expect: 100-continue\r\n",
        b"Connection: close\r\n",
        b" folded\r\n",
        b"\r\n",
    ]
)
streams = st.lists(
    st.one_of(
        request_lines, header_lines, st.binary(max_size=12), st.just(b"abc"), st.just(b"0\r\n\r\n")
    ),
    max_size=12,
).map(b"".join)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(stream=streams)
def test_random_streams_never_crash_or_leak(stream: bytes) -> None:
    async def scenario() -> None:
        limits = Limits(header_timeout=0.3, body_timeout=0.3, idle_timeout=0.3, tick=0.05)
        async with running(limits=limits) as (server, port):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(stream)
            writer.write_eof()
            raw = await asyncio.wait_for(reader.read(), 3)
            writer.close()
            for status in statuses(raw):
                assert status in {200, 400, 408, 413, 417, 431}
            follow_up = await exchange(port, GET)  # the server still works
            assert statuses(follow_up) == [200]
            await asyncio.sleep(0.1)
            assert not server.connections  # nothing leaked

    import uvloop

    uvloop.run(scenario())


async def test_back_pressure_pauses_reading_from_a_slow_reader() -> None:
    big = Response(200, "", b"\0" * (1 << 20))

    def large(request: Request) -> Response:
        return big

    async with running(handler=large) as (server, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(GET * 50)  # 50 MiB of answers asked for, none read yet
        await writer.drain()
        await asyncio.sleep(0.3)
        (conn,) = server.connections
        assert conn.reading_paused  # the server stopped taking requests it cannot deliver
        received = 0
        while received < 50 * (1 << 20):
            chunk = await asyncio.wait_for(reader.read(1 << 16), 5)
            assert chunk
            received += chunk.count(0)
        writer.close()
    assert received == 50 * (1 << 20)


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, made with openssl."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert), "-days", "1"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


async def test_tls_termination(certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=str(cert))
    server = Server(echo, Limits(tick=0.05))
    await server.start("127.0.0.1", 0, ssl=server_ctx)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.ports[0], ssl=client_ctx)
        writer.write(b"GET /tls HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        raw = await asyncio.wait_for(reader.read(), 5)
        writer.close()
    finally:
        await server.shutdown(1)
    assert statuses(raw) == [200]
    assert bodies(raw)[0]["target"] == "/tls"
