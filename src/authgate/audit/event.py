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


class AuditEvent(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One audit record. ``event_id`` is 128 random bits; ``ts_ns`` is wall-clock ns."""

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
    details: dict[str, str] = msgspec.field(default_factory=dict)


def new_event_id() -> bytes:
    """128 random bits."""
    return os.urandom(16)
