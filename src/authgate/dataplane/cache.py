"""The gateway's response cache: an in-memory LRU bounded in bytes, opt-in per route.

What is kept: answers to GET whose status is cacheable, that the upstream marked fresh for a
while (``s-maxage`` or ``max-age``, less any ``Age``) and did not forbid (``no-store``,
``no-cache``, ``private``), that set no cookie, and that vary on nothing or on named request
headers (``Vary: *`` is never kept). HEAD is answered from a kept GET.

Whose it is: the key always holds the principal — or, for a route that declares its
answers the same for everyone of a tier (``cache = "tier"``), the tier — so one caller's
answer never reaches another. A request's own ``Cache-Control: no-cache`` or ``no-store``
skips the lookup (``no-store`` also skips keeping). A change to a principal or its keys
(revocation, disabling) drops that principal's entries; a reload of the whole store
drops every per-principal entry.

Bodies above ``compress_above_bytes`` are kept zstd-compressed.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Mapping

import zstandard

from authgate.config import Cache as CacheSettings

CACHEABLE_STATUS = frozenset({200, 203, 204, 300, 301, 308, 404, 410})
ENTRY_OVERHEAD = 256  # bytes counted per entry beyond its body and headers


class Entry:
    """One kept answer."""

    __slots__ = (
        "age",
        "body",
        "compressed",
        "expires",
        "headers",
        "length",
        "owner",
        "size",
        "status",
        "stored",
    )

    def __init__(
        self,
        status: int,
        headers: str,
        body: bytes,
        compressed: bool,
        length: int,
        stored: float,
        expires: float,
        age: int,
        owner: str | None,
    ) -> None:
        self.status = status
        self.stored = stored
        self.age = age
        self.headers = headers
        self.body = body
        self.compressed = compressed
        self.length = length
        self.expires = expires
        self.owner = owner
        self.size = len(body) + len(headers) + ENTRY_OVERHEAD


Key = tuple[str, str, str, tuple[str | None, ...]]


class ResponseCache:
    """The LRU. ``lookup`` and ``store`` are called by the proxy; times are monotonic."""

    def __init__(self, settings: CacheSettings) -> None:
        self.max_bytes = settings.max_bytes
        self.max_entry_bytes = settings.max_entry_bytes
        self.compress_above = settings.compress_above_bytes
        self.entries: OrderedDict[Key, Entry] = OrderedDict()
        self.vary: dict[tuple[str, str, str], tuple[str, ...]] = {}
        self.by_owner: dict[str, set[Key]] = {}
        self.size = 0
        self.hits = 0
        self.misses = 0
        self._zc = zstandard.ZstdCompressor(level=3)
        self._zd = zstandard.ZstdDecompressor()

    # -- reading -----------------------------------------------------------------------------

    def lookup(
        self, route: str, scope: str, target: str, headers: Mapping[str, str]
    ) -> tuple[Entry, bytes, int] | None:
        """A fresh entry for this request, its body and its age in seconds; None on a miss."""
        if _forbids(headers.get("cache-control")):
            self.misses += 1
            return None
        base = (route, scope, target)
        names = self.vary.get(base)
        if names is None:
            self.misses += 1
            return None
        key = (*base, tuple(headers.get(n) for n in names))
        entry = self.entries.get(key)
        now = time.monotonic()
        if entry is None or entry.expires <= now:
            if entry is not None:
                self._remove(key)
            self.misses += 1
            return None
        self.entries.move_to_end(key)
        self.hits += 1
        body = self._zd.decompress(entry.body) if entry.compressed else entry.body
        return entry, body, int(now - entry.stored) + entry.age

    # -- writing -----------------------------------------------------------------------------

    def store(
        self,
        route: str,
        scope: str,
        owner: str | None,
        target: str,
        request_headers: Mapping[str, str],
        status: int,
        response_headers: list[tuple[str, str]],
        rendered: str,
        body: bytes,
    ) -> bool:
        """Keep an answer if the rules allow; returns whether it was kept."""
        if status not in CACHEABLE_STATUS or self.max_bytes == 0:
            return False
        if "no-store" in (request_headers.get("cache-control") or "").lower():
            return False
        fresh = freshness(response_headers)
        if fresh is None or fresh[0] <= fresh[1]:
            return False
        lifetime, age = fresh
        vary: tuple[str, ...] = ()
        for name, value in response_headers:
            if name == "vary":
                names = tuple(sorted(n.strip().lower() for n in value.split(",") if n.strip()))
                if "*" in names:
                    return False
                vary = tuple(sorted({*vary, *names}))
            elif name == "set-cookie":
                return False
        if len(body) > self.max_entry_bytes:
            return False
        compressed = len(body) > self.compress_above
        kept = self._zc.compress(body) if compressed else body
        base = (route, scope, target)
        if self.vary.get(base, vary) != vary:  # the upstream changed its Vary: start over
            for key in [k for k in self.entries if k[:3] == base]:
                self._remove(key)
        self.vary[base] = vary
        key = (*base, tuple(request_headers.get(n) for n in vary))
        if key in self.entries:
            self._remove(key)
        now = time.monotonic()
        entry = Entry(
            status, rendered, kept, compressed, len(body), now, now + lifetime - age, age, owner
        )
        if entry.size > self.max_bytes:
            return False
        self.entries[key] = entry
        self.size += entry.size
        if owner is not None:
            self.by_owner.setdefault(owner, set()).add(key)
        while self.size > self.max_bytes:
            self._remove(next(iter(self.entries)))
        return True

    def forget(self, principal_id: str | None) -> None:
        """Drop a principal's entries (None: every principal's, after a full reload)."""
        if principal_id is None:
            for key in [k for k, e in self.entries.items() if e.owner is not None]:
                self._remove(key)
            return
        for key in list(self.by_owner.get(principal_id, ())):
            self._remove(key)

    def _remove(self, key: Key) -> None:
        entry = self.entries.pop(key, None)
        if entry is None:
            return
        self.size -= entry.size
        if entry.owner is not None:
            keys = self.by_owner.get(entry.owner)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self.by_owner[entry.owner]


def _forbids(cache_control: str | None) -> bool:
    if not cache_control:
        return False
    value = cache_control.lower()
    return "no-cache" in value or "no-store" in value or "max-age=0" in value


def freshness(headers: list[tuple[str, str]]) -> tuple[int, int] | None:
    """An answer's freshness lifetime for a shared cache and its current age, in seconds;
    None if it must not be kept."""
    max_age: int | None = None
    s_maxage: int | None = None
    age = 0
    for name, value in headers:
        if name == "cache-control":
            for directive in value.lower().split(","):
                key, _, arg = directive.strip().partition("=")
                if key in ("no-store", "no-cache", "private"):
                    return None
                if key in ("max-age", "s-maxage"):
                    try:
                        seconds = int(arg.strip().strip('"'))
                    except ValueError:
                        return None
                    if key == "max-age":
                        max_age = seconds
                    else:
                        s_maxage = seconds
        elif name == "age":
            try:
                age = int(value.strip())
            except ValueError:
                return None
    lifetime = s_maxage if s_maxage is not None else max_age
    return None if lifetime is None or lifetime < 0 or age < 0 else (lifetime, age)
