"""The response cache (per principal, per tier, Cache-Control, Vary, invalidation) and
response compression, through the gateway against a counting upstream."""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import AsyncIterator
from urllib.parse import parse_qs

import brotli
import pytest
from hypothesis import given
from hypothesis import strategies as st

from authgate.config import Cache as CacheSettings
from authgate.dataplane.cache import ResponseCache, freshness
from authgate.dataplane.compress import _choose
from authgate.dataplane.http import Request, Response, StreamingResponse
from authgate.dataplane.router import Router
from authgate.dataplane.server import Limits, Server
from tests.dataplane.gateway import Gate, dechunk, fetch, gateway, request


class Origin:
    """Counts calls; answers with the caller's identity and headers chosen by the query:
    ``cc`` (Cache-Control), ``vary``, ``cookie``, ``pad`` (body bytes), ``type``, ``enc``,
    ``etag``."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, request: Request) -> Response:
        self.calls += 1
        cut = request.target.find("?")
        q = {k: v[-1] for k, v in parse_qs(request.target[cut + 1 :]).items()} if cut > 0 else {}
        headers = f"content-type: {q.get('type', 'application/json')}\r\n"
        for name, key in (
            ("cache-control", "cc"),
            ("vary", "vary"),
            ("set-cookie", "cookie"),
            ("content-encoding", "enc"),
            ("etag", "etag"),
        ):
            if key in q:
                headers += f"{name}: {q[key]}\r\n"
        body = json.dumps(
            {
                "n": self.calls,
                "principal": request.headers.get("x-auth-principal"),
                "lang": request.headers.get("accept-language"),
                "pad": "x" * int(q.get("pad", "0")),
            }
        ).encode()
        if request.target.startswith("/v1/zipped/sse"):
            return StreamingResponse(200, "content-type: text/event-stream\r\n", _events(body))
        if len(body) > 65536:  # a streamed answer, as a large one from an upstream would be
            return StreamingResponse(200, headers, _events(body), len(body))
        return Response(200, headers, body)


async def _events(body: bytes) -> AsyncIterator[bytes]:
    for i in range(0, len(body), 40000):
        yield body[i : i + 40000]


async def origin_gateway() -> tuple[Server, Origin]:
    origin = Origin()
    router = Router()
    router.set_fallback(origin)
    server = Server(router, Limits())
    await server.start("127.0.0.1", 0)
    return server, origin


async def get(gw: Gate, target: str, key: str, *headers: str) -> tuple[int, dict[str, str], bytes]:
    return await fetch(gw.port, request(target, key, *headers))


async def test_answers_are_kept_per_principal() -> None:
    up, origin = await origin_gateway()
    async with gateway([f"http://127.0.0.1:{up.ports[0]}"]) as gw:
        other = await gw.key_for(3)
        target = "/v1/cached/x?cc=max-age=60"
        first = await get(gw, target, gw.key)
        second = await get(gw, target, gw.key)
        theirs = await get(gw, target, other)
    await up.shutdown(1.0)
    assert [first[1]["x-cache"], second[1]["x-cache"], theirs[1]["x-cache"]] == [
        "MISS",
        "HIT",
        "MISS",
    ]
    assert json.loads(first[2]) == json.loads(second[2])
    assert json.loads(theirs[2])["principal"] != json.loads(first[2])["principal"]
    assert origin.calls == 2
    assert int(second[1]["age"]) >= 0


async def test_tier_shared_answers_are_kept_per_tier() -> None:
    up, origin = await origin_gateway()
    async with gateway([f"http://127.0.0.1:{up.ports[0]}"]) as gw:
        same_tier = await gw.key_for(3)
        other_tier = await gw.key_for(2)
        target = "/v1/shared/x?cc=s-maxage=60"
        results = [await get(gw, target, k) for k in (gw.key, same_tier, other_tier)]
    await up.shutdown(1.0)
    assert [r[1]["x-cache"] for r in results] == ["MISS", "HIT", "MISS"]
    assert origin.calls == 2


@pytest.mark.parametrize(
    "query",
    [
        "cc=no-store,max-age=60",
        "cc=private,max-age=60",
        "cc=no-cache,max-age=60",
        "",  # no freshness given: not kept
        "cc=max-age=60&vary=*",
        "cc=max-age=60&cookie=session=1",
    ],
)
async def test_what_the_upstream_forbids_is_not_kept(query: str) -> None:
    up, origin = await origin_gateway()
    async with gateway([f"http://127.0.0.1:{up.ports[0]}"]) as gw:
        results = [await get(gw, f"/v1/cached/x?{query}", gw.key) for _ in range(2)]
    await up.shutdown(1.0)
    assert [r[1]["x-cache"] for r in results] == ["MISS", "MISS"]
    assert origin.calls == 2


async def test_vary_keeps_one_answer_per_header_value() -> None:
    up, _origin = await origin_gateway()
    async with gateway([f"http://127.0.0.1:{up.ports[0]}"]) as gw:
        target = "/v1/cached/x?cc=max-age=60&vary=Accept-Language"
        en = await get(gw, target, gw.key, "Accept-Language: en")
        fr = await get(gw, target, gw.key, "Accept-Language: fr")
        en_again = await get(gw, target, gw.key, "Accept-Language: en")
    await up.shutdown(1.0)
    assert [en[1]["x-cache"], fr[1]["x-cache"], en_again[1]["x-cache"]] == ["MISS", "MISS", "HIT"]
    assert json.loads(en_again[2])["lang"] == "en"


async def test_a_client_asking_for_fresh_bypasses_the_cache() -> None:
    up, origin = await origin_gateway()
    async with gateway([f"http://127.0.0.1:{up.ports[0]}"]) as gw:
        target = "/v1/cached/x?cc=max-age=60"
        await get(gw, target, gw.key)
        fresh = await get(gw, target, gw.key, "Cache-Control: no-cache")
    await up.shutdown(1.0)
    assert fresh[1]["x-cache"] == "MISS"
    assert origin.calls == 2


async def test_revoking_a_key_drops_its_principals_entries() -> None:
    up, _origin = await origin_gateway()
    async with gateway([f"http://127.0.0.1:{up.ports[0]}"]) as gw:
        identity = gw.bed.identity
        principal = identity.principal("caller")
        spare = (await identity.issue_key(principal.id)).key
        target = "/v1/cached/x?cc=max-age=60"
        await get(gw, target, gw.key)
        assert (await get(gw, target, spare))[1]["x-cache"] == "HIT"
        await identity.revoke_key(gw.key[4:16])
        after = await get(gw, target, spare)
        revoked = await get(gw, target, gw.key)
    await up.shutdown(1.0)
    assert after[1]["x-cache"] == "MISS"
    assert revoked[0] == 401


async def test_disabling_a_principal_drops_its_entries() -> None:
    up, _origin = await origin_gateway()
    async with gateway([f"http://127.0.0.1:{up.ports[0]}"]) as gw:
        identity = gw.bed.identity
        target = "/v1/cached/x?cc=max-age=60"
        await get(gw, target, gw.key)
        cache = gw.proxy.cache
        assert cache is not None
        owner = identity.principal("caller").id
        assert cache.by_owner.get(owner)
        await identity.set_disabled("caller", True)
        assert not cache.by_owner.get(owner)
        assert (await get(gw, target, gw.key))[0] == 401
    await up.shutdown(1.0)


async def test_entries_expire() -> None:
    up, _origin = await origin_gateway()
    async with gateway([f"http://127.0.0.1:{up.ports[0]}"]) as gw:
        target = "/v1/cached/x?cc=max-age=1"
        await get(gw, target, gw.key)
        await asyncio.sleep(1.1)
        late = await get(gw, target, gw.key)
    await up.shutdown(1.0)
    assert late[1]["x-cache"] == "MISS"


async def test_large_streamed_answers_are_kept_compressed_and_head_uses_them() -> None:
    up, origin = await origin_gateway()
    settings = CacheSettings(compress_above_bytes=1000)
    async with gateway([f"http://127.0.0.1:{up.ports[0]}"], cache=settings) as gw:
        target = "/v1/cached/big?cc=max-age=60&pad=200000"
        first = await get(gw, target, gw.key)
        second = await get(gw, target, gw.key)
        head = await fetch(gw.port, request(target, gw.key, method="HEAD"))
        cache = gw.proxy.cache
    await up.shutdown(1.0)
    assert (first[1]["x-cache"], second[1]["x-cache"], head[1]["x-cache"]) == (
        "MISS",
        "HIT",
        "HIT",
    )
    assert second[2] == first[2]
    assert head[1]["content-length"] == str(len(first[2]))
    assert head[2] == b""
    assert cache is not None
    entry = next(iter(cache.entries.values()))
    assert entry.compressed
    assert len(entry.body) < 2000  # 200 KB of padding compresses to almost nothing
    assert origin.calls == 1


def test_the_lru_stays_within_its_byte_bound() -> None:
    cache = ResponseCache(CacheSettings(max_bytes=20_000, compress_above_bytes=1 << 20))
    headers = [("cache-control", "max-age=60")]
    for i in range(50):
        cache.store("r", "p", "p", f"/x/{i}", {}, 200, headers, "", b"y" * 1000)
    assert cache.size <= 20_000
    kept = [key[2] for key in cache.entries]
    assert kept[-1] == "/x/49"
    assert "/x/0" not in kept
    assert cache.lookup("r", "p", "/x/49", {}) is not None


@given(st.text(max_size=80), st.text(max_size=10))
def test_freshness_never_raises(cache_control: str, age: str) -> None:
    result = freshness([("cache-control", cache_control), ("age", age)])
    assert result is None or (result[0] >= 0 and result[1] >= 0)


@given(st.text(max_size=60))
def test_accept_encoding_parsing_never_raises(value: str) -> None:
    assert _choose(value) in (None, "br", "gzip")


# -- compression ---------------------------------------------------------------------------


async def test_gzip_and_brotli_as_the_client_accepts() -> None:
    up, _origin = await origin_gateway()
    async with gateway([f"http://127.0.0.1:{up.ports[0]}"]) as gw:
        target = "/v1/zipped/x?pad=5000&etag=%22v1%22"
        plain = await get(gw, target, gw.key)
        gz = await get(gw, target, gw.key, "Accept-Encoding: gzip")
        br = await get(gw, target, gw.key, "Accept-Encoding: gzip, br")
        refused = await get(gw, target, gw.key, "Accept-Encoding: br;q=0, gzip;q=0")
    await up.shutdown(1.0)
    assert "content-encoding" not in plain[1]
    assert gz[1]["content-encoding"] == "gzip"
    assert br[1]["content-encoding"] == "br"
    assert gz[1]["vary"] == "Accept-Encoding"
    assert gz[1]["etag"] == 'W/"v1"'
    assert "content-encoding" not in refused[1]
    original = json.loads(plain[2])
    assert json.loads(gzip.decompress(gz[2]))["pad"] == original["pad"]
    assert json.loads(brotli.decompress(br[2]))["pad"] == original["pad"]
    assert len(gz[2]) < len(plain[2]) // 10


async def test_small_precompressed_and_sse_answers_are_left_alone() -> None:
    up, _origin = await origin_gateway()
    async with gateway([f"http://127.0.0.1:{up.ports[0]}"]) as gw:
        accept = "Accept-Encoding: gzip, br"
        small = await get(gw, "/v1/zipped/x", gw.key, accept)
        done = await get(gw, "/v1/zipped/x?pad=5000&enc=identity", gw.key, accept)
        binary = await get(gw, "/v1/zipped/x?pad=5000&type=image/png", gw.key, accept)
        sse = await get(gw, "/v1/zipped/sse?pad=5000", gw.key, accept)
        other = await get(gw, "/v1/other?pad=5000", gw.key, accept)
    await up.shutdown(1.0)
    for result in (small, done, binary, sse, other):
        assert result[1].get("content-encoding") in (None, "identity")
    assert dechunk(sse[2])[1]


async def test_a_large_streamed_answer_is_compressed_as_it_passes() -> None:
    up, _origin = await origin_gateway()
    async with gateway([f"http://127.0.0.1:{up.ports[0]}"]) as gw:
        plain = await get(gw, "/v1/zipped/big?pad=300000", gw.key)
        packed = await get(gw, "/v1/zipped/big?pad=300000", gw.key, "Accept-Encoding: gzip")
    await up.shutdown(1.0)
    payload, complete = dechunk(packed[2])
    assert (packed[1]["content-encoding"], packed[1]["transfer-encoding"]) == ("gzip", "chunked")
    assert complete
    assert json.loads(gzip.decompress(payload))["pad"] == json.loads(plain[2])["pad"]
