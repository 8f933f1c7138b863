"""A handoff's stored record, its ticket format and the sealing of its context.

A ticket is an ``agh_`` string in the shape of an API key (:mod:`authgate.secretfmt`):
prefix, public ticket id, 190-bit secret, CRC-32. The store keeps only the secret's keyed
hash, and the context sealed (AES-256-GCM) under a key derived from the secret: whoever
reads the store — a backup, a stolen file — learns neither the ticket nor the context. Only
the ticket's holder can open it, and after redemption the sealed context is erased.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import msgspec

from authgate import sealing
from authgate.secretfmt import SecretFormat

TICKETS = SecretFormat("agh_")
AUDIENCE_PREFIX = "aud:"
_CONTEXT_KEY_LABEL = b"authgate handoff context v1"


class Handoff(msgspec.Struct, frozen=True, kw_only=True):
    """One handoff ticket as stored.

    ``subject`` is whose authority is handed on (the delegated token's ``sub``); ``creator``
    is the principal that made the ticket (the subject itself, or an agent acting for it);
    ``act`` is the creator's delegation chain (RFC 8693), None unless the creator was itself
    acting for someone. ``to`` is a principal id, or ``aud:NAME`` for any principal that
    holds that scope. ``tier`` and ``scopes`` are the most the recipient can receive.
    """

    ticket_id: str
    secret_hash: bytes
    subject: str
    creator: str
    to: str
    scopes: frozenset[str]
    tier: int
    correlation_id: str
    sealed: bytes
    created_ns: int
    expires_ns: int
    akid: str | None = None
    act: dict[str, Any] | None = None
    redeemed_ns: int | None = None
    redeemed_by: str | None = None

    def about(self) -> dict[str, str]:
        """What an audit event says of the ticket (never its secret or context)."""
        return {
            "ticket": self.ticket_id,
            "to": self.to,
            "subject": self.subject,
            "correlation_id": self.correlation_id,
        }

    def for_recipient(self, principal_id: str, scopes: frozenset[str]) -> bool:
        """Whether ``principal_id`` (holding ``scopes``) is who the ticket names."""
        if self.to.startswith(AUDIENCE_PREFIX):
            return self.to in scopes
        return hmac.compare_digest(self.to, principal_id)


def _context_key(secret: str, ticket_id: str) -> bytes:
    # The secret has 190 random bits: one SHA-256 over label, ticket and secret is a sound
    # key derivation (HKDF's extract step adds nothing for a uniformly random input).
    material = b"%s\0%s\0%s" % (_CONTEXT_KEY_LABEL, ticket_id.encode(), secret.encode())
    return hashlib.sha256(material).digest()


def seal(context: bytes, secret: str, ticket_id: str) -> bytes:
    """The context encrypted under a key only the ticket's secret gives."""
    return sealing.seal(_context_key(secret, ticket_id), context, ticket_id.encode())


def unseal(sealed: bytes, secret: str, ticket_id: str) -> bytes | None:
    """The context, or None when ``sealed`` was not made with this secret and ticket."""
    return sealing.unseal(_context_key(secret, ticket_id), sealed, ticket_id.encode())
