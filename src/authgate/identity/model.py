"""Principals and API keys as immutable records; changes make new records."""

from __future__ import annotations

from typing import Any

import msgspec

from authgate.identity.ids import Kind, kind_of


class Principal(msgspec.Struct, frozen=True, kw_only=True):
    """Someone or something that authenticates: a user, agent, service or the system.

    ``elevated_tier`` is a temporary tier that applies until ``elevated_until_ns`` and then
    ends by itself; :meth:`effective_tier` applies it.
    """

    id: str
    name: str
    tier: int
    scopes: frozenset[str] = frozenset()
    disabled: bool = False
    elevated_tier: int | None = None
    elevated_until_ns: int | None = None
    password_hash: str | None = None
    created_ns: int = 0
    totp_sealed: bytes | None = None  # the TOTP seed, sealed under a key from the pepper

    @property
    def kind(self) -> Kind:
        """The principal's kind, from its id prefix."""
        return kind_of(self.id)

    def effective_tier(self, now_ns: int) -> int:
        """The tier in force at ``now_ns``: the elevation while it lasts, else the base tier."""
        until = self.elevated_until_ns
        if until is not None and now_ns < until and self.elevated_tier is not None:
            return max(self.tier, self.elevated_tier)
        return self.tier

    def public(self, now_ns: int) -> dict[str, Any]:
        """A JSON-ready view without secrets (no password hash)."""
        elevated = self.elevated_until_ns is not None and now_ns < self.elevated_until_ns
        return {
            "id": self.id,
            "name": self.name,
            "kind": self.kind.value,
            "tier": self.tier,
            "effective_tier": self.effective_tier(now_ns),
            "scopes": sorted(self.scopes),
            "disabled": self.disabled,
            "elevated_tier": self.elevated_tier if elevated else None,
            "elevated_until_ns": self.elevated_until_ns if elevated else None,
            "has_password": self.password_hash is not None,
            "has_totp": self.totp_sealed is not None,
            "created_ns": self.created_ns,
        }


class ApiKey(msgspec.Struct, frozen=True, kw_only=True):
    """An API key's stored record. The secret itself is never kept, only its keyed hash.

    ``tier`` and ``scopes`` narrow the owner's: None inherits, a value caps.
    """

    key_id: str
    principal_id: str
    secret_hash: bytes
    name: str = ""
    tier: int | None = None
    scopes: frozenset[str] | None = None
    created_ns: int = 0
    expires_ns: int | None = None
    revoked_ns: int | None = None
    replaced_by: str | None = None

    def status(self, now_ns: int) -> str:
        """``active``, ``revoked`` or ``expired`` at ``now_ns``."""
        if self.revoked_ns is not None:
            return "revoked"
        if self.expires_ns is not None and now_ns >= self.expires_ns:
            return "expired"
        return "active"

    def public(self, now_ns: int) -> dict[str, Any]:
        """A JSON-ready view without the secret hash."""
        return {
            "key_id": self.key_id,
            "principal_id": self.principal_id,
            "name": self.name,
            "tier": self.tier,
            "scopes": None if self.scopes is None else sorted(self.scopes),
            "status": self.status(now_ns),
            "created_ns": self.created_ns,
            "expires_ns": self.expires_ns,
            "revoked_ns": self.revoked_ns,
            "replaced_by": self.replaced_by,
        }


class Snapshot(msgspec.Struct, frozen=True):
    """Everything a store holds, as loaded at start."""

    principals: list[Principal]
    keys: list[ApiKey]
