"""/v1/authorize over a real socket: headers of each proxy convention, trust, answers."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from authgate.config import Settings, Tier
from authgate.dataplane.app import build_router
from authgate.identity.ids import Kind
from authgate.testing import Harness, fast_passwords, make_harness
from tests.dataplane.conftest import exchange, running, statuses

TIERS = tuple(
    Tier(level=i, name=n, requests_per_minute=60, burst=2)
    for i, n in enumerate(["guest", "user", "advanced", "trusted", "privileged", "system"])
)


@pytest.fixture
async def bed() -> AsyncIterator[Harness]:
    harness = await make_harness(Settings(tiers=TIERS, passwords=fast_passwords()))
    yield harness
    await harness.identity.close()


async def key(bed: Harness, tier: int = 2, scopes: tuple[str, ...] = ()) -> str:
    p = await bed.identity.create_principal(
        Kind.AGENT, f"a{len(bed.store.principals)}", tier, scopes
    )
    return (await bed.identity.issue_key(p.id)).key


def ask(target: str, *headers: str, method: str = "GET") -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: authgate", *headers, "", ""]
    return "\r\n".join(lines).encode()


def head(raw: bytes) -> dict[str, str]:
    lines = raw.split(b"\r\n\r\n", 1)[0].decode().split("\r\n")[1:]
    return {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}


async def test_allow_carries_identity_and_ratelimit_headers(bed: Harness) -> None:
    k = await key(bed, 2)
    router = build_router(bed.engine, lambda: {"ok": True})
    async with running(router) as (_, port):
        raw = await exchange(port, ask("/v1/authorize/v1/models", f"Authorization: Bearer {k}"))
    assert statuses(raw) == [200]
    h = head(raw)
    assert h["x-auth-tier"] == "2"
    assert h["x-auth-key-id"] == k[4:16]
    assert h["x-auth-principal"].startswith("agt_")
    assert (h["ratelimit-limit"], h["ratelimit-remaining"]) == ("2", "1")
    assert bed.sink.last.path == "/v1/models"


async def test_denials_are_opaque_with_the_right_challenge(bed: Harness) -> None:
    k = await key(bed, 1)
    router = build_router(bed.engine, lambda: {"ok": True})
    async with running(router) as (_, port):
        missing = await exchange(port, ask("/v1/authorize/v1/models"))
        bad = await exchange(port, ask("/v1/authorize/v1/models", "X-API-Key: agk_nope"))
        typo = k[:-1] + ("1" if k[-1] == "0" else "0")  # never equal to the real key
        forged = await exchange(port, ask("/v1/authorize/v1/models", f"X-API-Key: {typo}"))
        tier = await exchange(port, ask("/v1/authorize/v1/other", f"X-API-Key: {k}"))
    assert statuses(missing) == [401]
    assert head(missing)["www-authenticate"] == 'Bearer realm="authgate"'
    assert 'error="invalid_request"' in head(bad)["www-authenticate"]
    assert statuses(tier) == [403]
    for raw in (missing, bad, forged, tier):
        body = json.loads(raw[raw.index(b"{") :])
        assert set(body) == {"error", "request_id"}
        assert body["request_id"] == head(raw)["x-request-id"]
        assert b"insufficient_tier" not in raw
        assert b"malformed" not in raw
    assert bed.sink.events[-1].reason == "insufficient_tier"  # the reason is audited


async def test_rate_limited_is_429_with_retry_after(bed: Harness) -> None:
    k = await key(bed, 2)
    router = build_router(bed.engine, lambda: {"ok": True})
    request = ask("/v1/authorize/v1/models", f"X-API-Key: {k}")
    async with running(router) as (_, port):
        raw = await exchange(port, request * 3)
    assert statuses(raw) == [200, 200, 429]
    last = raw[raw.rindex(b"HTTP/1.1 429") :]
    assert head(last)["retry-after"] == "1"
    assert b'"rate_limited"' in last


@pytest.mark.parametrize(
    "headers",
    [
        ("X-Forwarded-Method: POST", "X-Forwarded-Uri: /v1/chat/completions?x=1"),
        ("X-Original-Method: POST", "X-Original-URI: /v1/chat/completions"),
    ],
    ids=["traefik", "nginx"],
)
async def test_forwarded_headers_are_believed_only_from_trusted_proxies(
    bed: Harness, headers: tuple[str, ...]
) -> None:
    k = await key(bed, 1)
    router = build_router(bed.engine, lambda: {"ok": True})
    request = ask("/v1/authorize", f"X-API-Key: {k}", *headers)
    async with running(router) as (_, port):
        await exchange(port, request)
    untrusted = bed.sink.last
    async with running(router, trusted=("127.0.0.1/32",)) as (_, port):
        raw = await exchange(port, request)
    trusted = bed.sink.last
    assert (untrusted.method, untrusted.path) == ("GET", "/")
    assert (trusted.method, trusted.path) == ("POST", "/v1/chat/completions")
    assert statuses(raw) == [200]


async def test_envoy_style_prefix_keeps_the_method_and_query(bed: Harness) -> None:
    k = await key(bed, 1)
    router = build_router(bed.engine, lambda: {"ok": True})
    async with running(router) as (_, port):
        raw = await exchange(
            port,
            ask("/v1/authorize/v1/chat/completions?stream=1", f"X-API-Key: {k}", method="POST"),
        )
    assert statuses(raw) == [200]
    assert (bed.sink.last.method, bed.sink.last.path) == ("POST", "/v1/chat/completions")


async def test_health_and_readiness(bed: Harness) -> None:
    checks = {"identity_loaded": True, "audit_sink": True}
    router = build_router(bed.engine, lambda: checks)
    async with running(router) as (_, port):
        ready = await exchange(port, ask("/readyz"))
        checks["audit_sink"] = False
        not_ready = await exchange(port, ask("/readyz"))
        alive = await exchange(port, ask("/healthz"))
        missing = await exchange(port, ask("/nope"))
    assert statuses(ready) == [200]
    assert statuses(not_ready) == [503]
    assert statuses(alive) == [200]
    assert statuses(missing) == [404]


def test_settings_reject_bad_trusted_proxies() -> None:
    from authgate.config import load_settings
    from authgate.errors import ConfigError

    env = {"AUTHGATE_CONFIG": "/dev/null", "AUTHGATE_SERVER__TRUSTED_PROXIES": '["nope"]'}
    with pytest.raises(ConfigError, match=r"server.trusted_proxies\[0\]"):
        load_settings(None, env)
