"""The audit event: one record per decision, admin change, token or handoff.

Fields carry integers and strings only (no floats) so that the ledger can give events one
canonical encoding. Secrets never enter an event.
"""

from __future__ import annotations

import os
from enum import StrEnum

import msgspec


class EventType(StrEnum):
    """What kind of thing happened."""

    AUTHN = "authn"
    AUTHZ = "authz"
    RATELIMIT = "ratelimit"
    ADMIN = "admin"
    TOKEN = "token"
    HANDOFF = "handoff"
    SYSTEM = "system"


class AuditEvent(msgspec.Struct, frozen=True, gc=False):
    """One audit record. ``event_id`` is 128 bits (see ``new_event_id``); ``ts_ns`` is
    wall-clock ns.

    The hot path builds events positionally: with 17 fields, keyword construction costs
    about 1 µs here and positional about 0.2 µs. ``details`` is None when empty, so that an
    event allocates no dict it does not need.
    """

    event_id: bytes
    ts_ns: int
    type: EventType
    action: str
    outcome: str
    reason: str
    principal: str | None = None
    key_id: str | None = None
    tier_held: int | None = None
    tier_required: int | None = None
    route: str | None = None
    method: str | None = None
    path: str | None = None
    status: int | None = None
    request_id: str | None = None
    correlation_id: str | None = None
    latency_us: int | None = None
    details: dict[str, str] | None = None


class _EventIds:
    """128-bit event ids: 64 random bits per process, then a 64-bit counter.

    Unique across processes with overwhelming probability and ordered within one; about
    0.2 µs instead of the 1 µs of ``os.urandom(16)`` per event. A forked worker draws a new
    random half so that its ids never repeat its parent's.
    """

    def __init__(self) -> None:
        self.reseed()

    def reseed(self) -> None:
        self.next = int.from_bytes(os.urandom(8), "big") << 64

    def __call__(self) -> bytes:
        self.next += 1
        return self.next.to_bytes(16, "big")


new_event_id = _EventIds()
os.register_at_fork(after_in_child=new_event_id.reseed)
