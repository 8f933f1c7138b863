"""The IdentityStore protocol: the system of record for principals and keys.

Stores are asynchronous so that the PostgreSQL store (asyncpg) and the embedded SQLite store
(a worker thread) share one shape. A write returns only once it is durable.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from authgate.errors import Conflict
from authgate.identity.model import ApiKey, Principal, Snapshot


class IdentityStore(Protocol):
    """Durable storage of principals and API keys."""

    async def open(self) -> None:
        """Connect and bring the schema up to date."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...

    async def load(self) -> Snapshot:
        """Return every principal and key."""
        ...

    async def put_principal(self, principal: Principal) -> None:
        """Insert or replace a principal. Raises Conflict when its name is taken."""
        ...

    async def put_keys(self, keys: Sequence[ApiKey]) -> None:
        """Insert or replace keys in one transaction."""
        ...

    async def version(self) -> int:
        """A number that changes when another process has changed the store."""
        ...


class MemoryIdentityStore:
    """An IdentityStore that keeps everything in dicts: for tests and benchmarks."""

    def __init__(self) -> None:
        self.principals: dict[str, Principal] = {}
        self.keys: dict[str, ApiKey] = {}
        self.writes = 0

    async def open(self) -> None:
        """Nothing to open."""

    async def close(self) -> None:
        """Nothing to close."""

    async def load(self) -> Snapshot:
        """Return copies of what is stored."""
        return Snapshot(list(self.principals.values()), list(self.keys.values()))

    async def put_principal(self, principal: Principal) -> None:
        """Store a principal, enforcing unique names like the real stores."""
        for other in self.principals.values():
            if other.name == principal.name and other.id != principal.id:
                raise Conflict(f"a principal named {principal.name!r} exists")
        self.principals[principal.id] = principal
        self.writes += 1

    async def put_keys(self, keys: Sequence[ApiKey]) -> None:
        """Store keys."""
        for key in keys:
            self.keys[key.key_id] = key
        self.writes += 1

    async def version(self) -> int:
        """Nobody else writes to a memory store."""
        return 0
