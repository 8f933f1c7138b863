"""nginx as the upstream: static files (large and small), a rate-limited slow answer, and
nginx's own 404, all through the gateway byte for byte."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.dataplane.gateway import fetch, gateway, request
from tests.test_nginx import NGINX, free_port, start_nginx

pytestmark = pytest.mark.skipif(
    NGINX is None and os.environ.get("CI") != "true",
    reason="nginx is not installed (apt-get install nginx); .ci/run installs it",
)


@pytest.fixture
def nginx_upstream(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    root = tmp_path / "www" / "v1"
    root.mkdir(parents=True)
    (root / "small.json").write_text('{"ok": true}')
    (root / "big.bin").write_bytes(os.urandom(3 << 20))
    (root / "slow.bin").write_bytes(os.urandom(300_000))
    port = free_port()
    temp = " ".join(
        f"{n}_temp_path {tmp_path}/{n};"
        for n in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    conf = tmp_path / "nginx.conf"
    user = "user root;" if os.geteuid() == 0 else ""  # workers must read files under tmp
    conf.write_text(
        f"{user} daemon off; pid {tmp_path}/nginx.pid; error_log {tmp_path}/error.log warn;"
        f"events {{ worker_connections 64; }} http {{ access_log off; {temp}"
        f"server {{ listen 127.0.0.1:{port}; root {tmp_path}/www;"
        f"location = /v1/slow.bin {{ limit_rate 200k; limit_rate_after 0; }} }} }}"
    )
    proc = start_nginx(conf, tmp_path, port)
    yield f"http://127.0.0.1:{port}", tmp_path / "www"
    proc.terminate()
    proc.wait(10)


async def test_static_slow_and_missing_files_from_nginx(nginx_upstream: tuple[str, Path]) -> None:
    url, www = nginx_upstream
    async with gateway([url]) as gw:
        small = await fetch(gw.port, request("/v1/small.json", gw.key))
        big = await fetch(gw.port, request("/v1/big.bin", gw.key))
        started = time.monotonic()
        slow = await fetch(gw.port, request("/v1/slow.bin", gw.key))
        slow_s = time.monotonic() - started
        missing = await fetch(gw.port, request("/v1/none", gw.key))
    assert (small[0], small[2]) == (200, b'{"ok": true}')
    assert small[1]["server"].startswith("nginx")
    for result, name in ((big, "big.bin"), (slow, "slow.bin")):
        expected = (www / "v1" / name).read_bytes()
        assert result[0] == 200
        assert result[1]["content-length"] == str(len(expected))
        assert hashlib.sha256(result[2]).digest() == hashlib.sha256(expected).digest()
    assert slow_s > 0.5  # it really was slow, and arrived whole anyway
    assert missing[0] == 404
