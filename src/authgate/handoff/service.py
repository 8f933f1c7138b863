"""Creating and redeeming handoff tickets.

An agent A hands a task to B: ``create`` stores a ticket naming B (or an audience), the
scopes it passes on (a subset of A's), A's tier, the sealed context and an expiry, and
returns the ticket string once. B presents it to ``redeem``, which succeeds exactly once:
the ticket must exist, its secret match, B be the recipient and the ticket be unexpired and
unredeemed, all checked inside the store's atomic ``claim``, which decides the one winner
among concurrent tries.

This module knows no principals and no tokens: the caller passes who is asking as a
:class:`Party` and turns a :class:`Redeemed` into a delegated token. Refusals raise
:class:`~authgate.errors.HandoffRefused` with the reason; bad input raises
:class:`~authgate.errors.InvalidRequest`.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Any, NamedTuple

from authgate.clock import NS_PER_S, Clock
from authgate.errors import HandoffRefused, InvalidRequest, Reason, StoreUnavailable
from authgate.handoff.model import TICKETS, Handoff, seal, unseal
from authgate.handoff.store import HandoffStore
from authgate.secretfmt import hash_secret, secret_matches

PURGE_EVERY_NS = 5 * NS_PER_S


class Party(NamedTuple):
    """Who creates or redeems: ``actor`` makes the call; ``subject`` is whose authority it
    carries (the actor itself, unless it holds a delegated token); ``act`` is the actor's
    delegation chain, None when acting for itself; ``akid`` the API key behind the subject's
    authority; ``correlation`` the id of the work the call belongs to, if any."""

    actor: str
    subject: str
    tier: int
    scopes: frozenset[str]
    akid: str | None = None
    act: dict[str, Any] | None = None
    correlation: str | None = None


class Redeemed(NamedTuple):
    """A won redemption: the ticket as it was, its context, and what the recipient may hold:
    the tier (the lower of creator's and recipient's) and the ``act`` chain to sign."""

    handoff: Handoff
    context: bytes
    tier: int
    act: dict[str, Any]


def new_correlation_id() -> str:
    """An id for one piece of work across handoffs: ``cor_`` and 64 random bits."""
    return "cor_" + secrets.token_hex(8)


class Handoffs:
    """Tickets over a store, a pepper and a clock."""

    def __init__(
        self,
        store: HandoffStore,
        pepper: bytes,
        clock: Clock,
        *,
        max_context_bytes: int = 64 * 1024,
        default_ttl_s: float = 300.0,
        max_ttl_s: float = 3600.0,
        keep_expired_s: float = 3600.0,
    ) -> None:
        self.store = store
        self.clock = clock
        self.max_context_bytes = max_context_bytes
        self.default_ttl_s = default_ttl_s
        self.max_ttl_s = max_ttl_s
        self.keep_expired_ns = int(keep_expired_s * NS_PER_S)
        self._pepper = pepper
        self._next_purge = 0
        self._purging: asyncio.Task[int] | None = None

    async def create(
        self,
        creator: Party,
        to: str,
        scopes: frozenset[str] | None,
        context: bytes,
        ttl_s: float | None = None,
    ) -> tuple[str, Handoff]:
        """Store a ticket and return it (shown once) with its record. ``scopes`` None passes
        on all of the creator's; more than the creator holds is refused (missing_scope)."""
        passed = creator.scopes if scopes is None else scopes
        if not passed <= creator.scopes:
            raise HandoffRefused(Reason.MISSING_SCOPE, "scopes beyond the creator's")
        ttl = self.default_ttl_s if ttl_s is None else ttl_s
        if not 0 < ttl <= self.max_ttl_s:
            raise InvalidRequest(f"ttl_s must be above 0 and at most {self.max_ttl_s:g}")
        if len(context) > self.max_context_bytes:
            raise InvalidRequest(f"context is larger than {self.max_context_bytes} bytes")
        ticket, parts = TICKETS.new()
        now = self.clock.now_ns()
        handoff = Handoff(
            ticket_id=parts.key_id,
            secret_hash=hash_secret(self._pepper, parts.secret),
            subject=creator.subject,
            creator=creator.actor,
            to=to,
            scopes=passed,
            tier=creator.tier,
            correlation_id=creator.correlation or new_correlation_id(),
            sealed=seal(context, parts.secret, parts.key_id),
            created_ns=now,
            expires_ns=now + int(ttl * NS_PER_S),
            akid=creator.akid,
            act=creator.act,
        )
        await self.store.put(handoff)
        if now >= self._next_purge and (self._purging is None or self._purging.done()):
            self._next_purge = now + PURGE_EVERY_NS
            self._purging = asyncio.ensure_future(self.purge())  # in the background
        return ticket, handoff

    async def purge(self) -> int:
        """Delete tickets that expired more than ``keep_expired_s`` ago; how many. Creating
        tickets runs this in the background every few seconds."""
        try:
            return await self.store.purge(self.clock.now_ns() - self.keep_expired_ns)
        except StoreUnavailable:  # housekeeping: the next round tries again
            return 0

    async def close(self) -> None:
        """Let a running purge finish, then close the store."""
        if self._purging is not None:
            await asyncio.gather(self._purging, return_exceptions=True)
        await self.store.close()

    async def redeem(self, ticket: str, redeemer: Party) -> Redeemed:
        """Redeem a ticket, exactly once. A wrong recipient does not use the ticket up.

        Every check runs inside the store's claim, on the ticket as no concurrent redeem
        can change it: one round trip to the store, and one winner."""
        parts = TICKETS.parse(ticket)
        if parts is None:
            raise HandoffRefused(Reason.UNKNOWN_TICKET)
        now = self.clock.now_ns()

        def check(handoff: Handoff) -> None:
            if not secret_matches(self._pepper, parts.secret, handoff.secret_hash):
                raise HandoffRefused(Reason.UNKNOWN_TICKET)
            about = handoff.about()
            if not handoff.for_recipient(redeemer.actor, redeemer.scopes):
                raise HandoffRefused(Reason.WRONG_RECIPIENT, ticket=about)
            if handoff.redeemed_ns is not None:
                raise HandoffRefused(Reason.TICKET_REDEEMED, ticket=about)
            if now >= handoff.expires_ns:
                raise HandoffRefused(Reason.TICKET_EXPIRED, ticket=about)

        won = await self.store.claim(parts.key_id, redeemer.actor, now, check)
        if won is None:
            raise HandoffRefused(Reason.UNKNOWN_TICKET)
        context = unseal(won.sealed, parts.secret, won.ticket_id)
        if context is None:  # the store's bytes were altered
            raise HandoffRefused(Reason.UNKNOWN_TICKET, "the context does not open", won.about())
        act: dict[str, Any] = {"sub": redeemer.actor}
        if redeemer.act is None and redeemer.akid is not None:
            act["akid"] = redeemer.akid  # revoking the key B redeemed with ends the delegation
        if won.act is not None:
            act["act"] = won.act
        return Redeemed(won, context, min(won.tier, redeemer.tier), act)
