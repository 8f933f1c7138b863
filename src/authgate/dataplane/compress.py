"""Response compression for routes with ``compress = true``: brotli or gzip, as the client
accepts (brotli preferred), for answers the upstream did not compress itself, of a listed
content type, at least ``min_bytes`` long (or of unknown length). Never for server-sent
events, whose chunks must reach the client as they are produced. A compressed answer gets
``Content-Encoding``, ``Vary: Accept-Encoding``, and its strong ETag made weak.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator

import brotli

from authgate.config import Compression

COMPRESSIBLE_STATUS = frozenset({200, 203, 404, 410})


class Compressor:
    """Decides whether and how to compress one answer, and does it."""

    def __init__(self, settings: Compression) -> None:
        self.min_bytes = settings.min_bytes
        self.gzip_level = settings.gzip_level
        self.brotli_quality = settings.brotli_quality
        self.types = settings.types
        self._accepts: dict[str, str | None] = {}

    def encoding_for(
        self,
        accept_encoding: str | None,
        status: int,
        headers: list[tuple[str, str]],
        length: int | None,
    ) -> str | None:
        """``"br"``, ``"gzip"`` or None (send as it is)."""
        if accept_encoding is None or status not in COMPRESSIBLE_STATUS:
            return None
        if length is not None and length < self.min_bytes:
            return None
        encoding = self._accepts.get(accept_encoding)
        if encoding is None and accept_encoding not in self._accepts:
            encoding = _choose(accept_encoding)
            if len(self._accepts) > 1024:
                self._accepts.clear()
            self._accepts[accept_encoding] = encoding
        if encoding is None:
            return None
        kind = ""
        for name, value in headers:
            if name == "content-encoding" or name == "content-range":
                return None
            if name == "content-type":
                kind = value.split(";", 1)[0].strip().lower()
        if not kind or kind == "text/event-stream":
            return None
        if not any(kind.startswith(t) if t.endswith("/") else kind == t for t in self.types):
            return None
        return encoding

    def compress(self, encoding: str, body: bytes) -> bytes:
        """A whole body, compressed."""
        if encoding == "br":
            return bytes(brotli.compress(body, quality=self.brotli_quality))
        compressor = zlib.compressobj(self.gzip_level, zlib.DEFLATED, 31)
        return compressor.compress(body) + compressor.flush()

    async def stream(self, encoding: str, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """A streamed body, compressed as it passes."""
        if encoding == "br":
            br = brotli.Compressor(quality=self.brotli_quality)
            async for chunk in chunks:
                out = br.process(chunk)
                if out:
                    yield bytes(out)
            yield bytes(br.finish())
            return
        gz = zlib.compressobj(self.gzip_level, zlib.DEFLATED, 31)
        async for chunk in chunks:
            out = gz.compress(chunk)
            if out:
                yield out
        yield gz.flush()


def adjust_headers(headers: str, encoding: str) -> str:
    """A rendered header block for the compressed answer (lower-case names, as the proxy
    renders them): Content-Encoding added, Vary extended, a strong ETag made weak."""
    out = []
    vary_done = False
    for line in headers.split("\r\n"):
        if not line:
            continue
        name, _, value = line.partition(": ")
        if name == "vary":
            if "accept-encoding" not in value.lower() and value.strip() != "*":
                value = f"{value}, Accept-Encoding"
            vary_done = True
        elif name == "etag" and not value.startswith("W/"):
            value = "W/" + value
        out.append(f"{name}: {value}\r\n")
    if not vary_done:
        out.append("vary: Accept-Encoding\r\n")
    out.append(f"content-encoding: {encoding}\r\n")
    return "".join(out)


def _choose(accept_encoding: str) -> str | None:
    """The best coding a client accepts: br, then gzip (``*`` counts for both)."""
    weights: dict[str, float] = {}
    for item in accept_encoding.lower().split(","):
        name, _, params = item.strip().partition(";")
        q = 1.0
        params = params.strip()
        if params.startswith("q="):
            try:
                q = float(params[2:])
            except ValueError:
                q = 0.0
        weights[name.strip()] = q
    star = weights.get("*", 0.0)
    best: str | None = None
    best_q = 0.0
    for coding in ("br", "gzip"):
        q = weights.get(coding, star)
        if q > best_q:
            best, best_q = coding, q
    return best
