"""nginx ``auth_request`` in front of authgate: allowed, denied and rate-limited requests
behave as docs/nginx-auth-request.conf says."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from email.message import Message
from pathlib import Path

import pytest

from authgate.config import Settings, Tier
from authgate.dataplane.app import build_router
from authgate.dataplane.server import Limits, Server
from authgate.identity.ids import Kind
from authgate.testing import Harness, fast_passwords, make_harness

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
pytestmark = pytest.mark.skipif(
    NGINX is None and os.environ.get("CI") != "true",
    reason="nginx is not installed (apt-get install nginx); .ci/run installs it",
)
SNIPPET = Path(__file__).parent.parent / "docs" / "nginx-auth-request.conf"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_nginx(conf: Path, folder: Path, port: int) -> subprocess.Popen[bytes]:
    """nginx with ``conf``, once it accepts on ``port``; its error log explains a failure."""
    assert NGINX is not None, "nginx must be installed under CI"
    proc = subprocess.Popen([NGINX, "-c", str(conf), "-p", str(folder)])
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            assert proc.poll() is None, (folder / "error.log").read_text()
            assert time.monotonic() < deadline
            time.sleep(0.05)


def nginx_conf(folder: Path, listen: int, upstream: int, authgate: int) -> Path:
    snippet = SNIPPET.read_text()
    snippet = snippet.replace("@AUTHGATE@", f"127.0.0.1:{authgate}")
    snippet = snippet.replace("@UPSTREAM@", f"127.0.0.1:{upstream}")
    temp = "\n".join(
        f"    {name}_temp_path {folder}/{name};"
        for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    conf = folder / "nginx.conf"
    conf.write_text(
        f"""
daemon off;
pid {folder}/nginx.pid;
error_log {folder}/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
{temp}
    server {{
        listen 127.0.0.1:{upstream};
        location / {{ return 200 "upstream saw $http_x_auth_principal tier $http_x_auth_tier\\n"; }}
    }}
    server {{
        listen 127.0.0.1:{listen};
{snippet}
    }}
}}
"""
    )
    return conf


@pytest.fixture
def nginx_ports() -> tuple[int, int]:
    return free_port(), free_port()


@pytest.fixture
async def authgate() -> AsyncIterator[tuple[Harness, int]]:
    tiers = tuple(
        Tier(level=i, name=n, requests_per_minute=60, burst=2)
        for i, n in enumerate(["guest", "user", "advanced", "trusted", "privileged", "system"])
    )
    bed = await make_harness(Settings(tiers=tiers, passwords=fast_passwords()))
    server = Server(build_router(bed.engine, lambda: {"ok": True}), Limits(), ["127.0.0.1/32"])
    await server.start("127.0.0.1", 0)
    yield bed, server.ports[0]
    await server.shutdown(1)
    await bed.identity.close()


@pytest.fixture
def nginx(
    tmp_path: Path, nginx_ports: tuple[int, int], authgate: tuple[Harness, int]
) -> Iterator[int]:
    listen, upstream = nginx_ports
    proc = start_nginx(nginx_conf(tmp_path, listen, upstream, authgate[1]), tmp_path, listen)
    yield listen
    proc.terminate()
    proc.wait(10)


def fetch(port: int, path: str, key: str | None = None) -> tuple[int, Message, str]:
    """GET through nginx; headers are looked up case-insensitively."""
    headers = {"X-API-Key": key} if key else {}
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return answer.status, answer.headers, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read().decode()


async def test_allowed_denied_and_rate_limited_through_nginx(
    authgate: tuple[Harness, int], nginx: int
) -> None:
    bed, _ = authgate
    p = await bed.identity.create_principal(Kind.AGENT, "via-nginx", 2)
    key = (await bed.identity.issue_key(p.id)).key
    loop = asyncio.get_running_loop()

    async def get(path: str, k: str | None = None) -> tuple[int, Message, str]:
        return await loop.run_in_executor(None, fetch, nginx, path, k)

    status, _, body = await get("/v1/models", key)
    assert status == 200
    assert body == f"upstream saw {p.id} tier 2\n"
    assert bed.sink.last.path == "/v1/models"  # the original URI, via X-Original-URI

    status, headers, _ = await get("/v1/models")
    assert status == 401
    assert headers.get("WWW-Authenticate") == 'Bearer realm="authgate"'

    status, _, _ = await get("/v1/fine_tuning/jobs", key)
    assert status == 403

    await get("/v1/models", key)  # the burst of 2 is now spent
    status, headers, body = await get("/v1/models", key)
    assert status == 429
    assert headers.get("Retry-After") == "1"
    assert "rate_limited" in body
    assert bed.sink.last.reason == "rate_limited"
