"""Context handoffs between agents: single-use tickets that pass a task's context and a
narrowed authority from one principal to another, exactly once."""

from authgate.handoff.model import AUDIENCE_PREFIX, TICKETS, Handoff
from authgate.handoff.service import Handoffs, Party, Redeemed, new_correlation_id
from authgate.handoff.store import HandoffStore, MemoryHandoffStore

__all__ = [
    "AUDIENCE_PREFIX",
    "TICKETS",
    "Handoff",
    "HandoffStore",
    "Handoffs",
    "MemoryHandoffStore",
    "Party",
    "Redeemed",
    "new_correlation_id",
]
