"""Where events go from the request path. The ledger issue supplies the durable sink."""

from __future__ import annotations

from collections import deque
from typing import Protocol

from authgate.audit.event import AuditEvent


class AuditSink(Protocol):
    """Accepts events on the request path. ``emit`` must not block on I/O; it raises
    AuditUnavailable when it cannot take the event (the caller fails closed)."""

    def emit(self, event: AuditEvent) -> None:
        """Take one event."""
        ...

    async def emit_durable(self, event: AuditEvent) -> int:
        """Take one event and return once it is durable (its sequence number)."""
        ...


class MemorySink:
    """Keeps the last ``maxlen`` events in memory and counts all of them.

    The embedded default until the durable ledger lands; it never blocks and drops the
    oldest events when full, and says so in ``dropped``.
    """

    def __init__(self, maxlen: int = 10_000) -> None:
        self.events: deque[AuditEvent] = deque(maxlen=maxlen)
        self.total = 0

    def emit(self, event: AuditEvent) -> None:
        """Append the event."""
        self.events.append(event)
        self.total += 1

    async def emit_durable(self, event: AuditEvent) -> int:
        """Memory is as durable as this sink gets."""
        self.emit(event)
        return self.total - 1

    @property
    def dropped(self) -> int:
        """How many events fell off the front."""
        return self.total - len(self.events)
