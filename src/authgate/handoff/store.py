"""The HandoffStore protocol and an in-memory store for tests and single-process use.

``claim`` is where exactly-once lives: it checks a ticket and marks it redeemed in one atomic
step, and erases the sealed context in the same step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import msgspec

from authgate.handoff.model import Handoff


class HandoffStore(Protocol):
    """Durable storage of handoff tickets."""

    async def open(self) -> None:
        """Connect and bring the schema up to date."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...

    async def put(self, handoff: Handoff) -> None:
        """Store a new ticket; returns once it is durable."""
        ...

    async def claim(
        self, ticket_id: str, by: str, now_ns: int, check: Callable[[Handoff], None]
    ) -> Handoff | None:
        """In one atomic step: read the ticket, let ``check`` refuse it (by raising), then
        mark it redeemed by ``by`` and erase its context. Returns the record as it was (with
        the context); None when there is no such ticket. ``check`` sees the ticket as no
        concurrent claim can change it, so it is where "not yet redeemed" is decided."""
        ...

    async def purge(self, before_ns: int) -> int:
        """Delete tickets that expired before ``before_ns``; how many."""
        ...


class MemoryHandoffStore:
    """A HandoffStore in a dict. Claims are atomic because nothing awaits between the check
    and the update."""

    def __init__(self) -> None:
        self.handoffs: dict[str, Handoff] = {}

    async def open(self) -> None:
        """Nothing to open."""

    async def close(self) -> None:
        """Nothing to close."""

    async def put(self, handoff: Handoff) -> None:
        """Keep the ticket."""
        self.handoffs[handoff.ticket_id] = handoff

    async def claim(
        self, ticket_id: str, by: str, now_ns: int, check: Callable[[Handoff], None]
    ) -> Handoff | None:
        """Check and mark in one synchronous step."""
        handoff = self.handoffs.get(ticket_id)
        if handoff is None:
            return None
        check(handoff)
        self.handoffs[ticket_id] = msgspec.structs.replace(
            handoff, redeemed_ns=now_ns, redeemed_by=by, sealed=b""
        )
        return handoff

    async def purge(self, before_ns: int) -> int:
        """Drop expired tickets."""
        old = [t for t, h in self.handoffs.items() if h.expires_ns < before_ns]
        for ticket_id in old:
            del self.handoffs[ticket_id]
        return len(old)
