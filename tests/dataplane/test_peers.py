"""Real HTTP peers against the forward-auth server: curl, aiohttp and h11."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator

import aiohttp
import h11
import pytest

from authgate.dataplane.app import build_router
from authgate.identity.ids import Kind
from authgate.testing import Harness
from tests.dataplane.conftest import running


@pytest.fixture
async def served(bed: Harness) -> AsyncIterator[tuple[int, str]]:
    p = await bed.identity.create_principal(Kind.AGENT, "peer", 2)
    k = (await bed.identity.issue_key(p.id)).key
    async with running(build_router(bed.engine, lambda: {"ok": True})) as (_, port):
        yield port, k


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
async def test_curl(served: tuple[int, str]) -> None:
    port, k = served
    url = f"http://127.0.0.1:{port}/v1/authorize/v1/models"
    proc = await asyncio.create_subprocess_exec(
        "curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %{num_connects}\\n",
        "-H", f"X-API-Key: {k}", url, url, "--next", "-s", "-o", "/dev/null",
        "-w", "%{http_code}\\n", url,
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await proc.communicate()
    # two allowed requests over one reused connection, then one without a key
    assert out.decode().split("\n")[:3] == ["200 1", "200 0", "401"]


async def test_aiohttp(served: tuple[int, str]) -> None:
    port, k = served
    url = f"http://127.0.0.1:{port}/v1/authorize/v1/models"
    async with aiohttp.ClientSession() as session:
        async with session.get(url, headers={"X-API-Key": k}) as allowed:
            assert allowed.status == 200
            assert allowed.headers["X-Auth-Tier"] == "2"
        async with session.post(url, data=b"x" * 100_000, headers={"X-API-Key": k}) as posted:
            assert posted.status == 200  # a body is read and ignored
        async with session.get(url) as denied:
            assert denied.status == 401
            assert (await denied.json())["error"] == "authentication_failed"


async def test_h11_over_a_raw_socket(served: tuple[int, str]) -> None:
    port, k = served
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    conn = h11.Connection(our_role=h11.CLIENT)
    seen = []
    for headers in ([("X-API-Key", k)], []):
        request = h11.Request(
            method="GET",
            target="/v1/authorize/v1/models",
            headers=[("Host", "authgate"), *headers],
        )
        writer.write(conn.send(request) + conn.send(h11.EndOfMessage()))
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await reader.read(4096))
                continue
            if isinstance(event, h11.Response):
                seen.append(event.status_code)
            if isinstance(event, h11.EndOfMessage):
                break
        conn.start_next_cycle()  # h11 checks the framing of every response it reads
    writer.close()
    assert seen == [200, 401]
