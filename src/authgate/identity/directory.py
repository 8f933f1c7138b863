"""The in-memory view of every principal and key: what the hot path reads.

Lookups are dict reads; nothing here does I/O. :class:`~authgate.identity.service.
IdentityService` keeps it in step with the store.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from authgate.errors import AuthenticationFailed, Reason
from authgate.identity.keys import parse_key, secret_matches
from authgate.identity.model import ApiKey, Principal, Snapshot

MAX_CHAIN = 16  # actors in one delegation chain


class Authenticated(NamedTuple):
    """Who a credential belongs to, and the tier and scopes it carries right now."""

    principal: Principal
    key: ApiKey | None  # None for a token issued without an API key (a login)
    tier: int
    scopes: frozenset[str]


class Directory:
    """Principals by id and name, keys by key id.

    Keys whose secret has been checked once are remembered in ``_verified`` (key string →
    key id), so the hot path skips parsing and HMAC on later requests (~5 µs here) — the
    way Kong's key-auth caches credentials in memory. Only the secret check is cached: the
    key's state (revoked, expired) and its owner's are read fresh on every request, so
    revocation, expiry and disabling act at once. A hit needs the whole key string to be
    equal; the table lives only in memory and is bounded by ``max_verified``.
    """

    def __init__(self, pepper: bytes, max_verified: int = 100_000) -> None:
        self._pepper = pepper
        self._verified: dict[str, str] = {}
        self.max_verified = max_verified
        self.principals: dict[str, Principal] = {}
        self.by_name: dict[str, str] = {}
        self.keys: dict[str, ApiKey] = {}
        self._keys_of: dict[str, set[str]] = {}
        # Told of every change: a principal id, or None when everything was reloaded.
        # Caches of per-principal data (the gateway's response cache) listen here.
        self.listeners: list[Callable[[str | None], None]] = []

    def replace_all(self, snapshot: Snapshot) -> None:
        """Load a store's snapshot, replacing whatever was here."""
        listeners, self.listeners = self.listeners, []  # one notice for all, at the end
        try:
            self._replace_all(snapshot)
        finally:
            self.listeners = listeners
        self._changed(None)

    def _replace_all(self, snapshot: Snapshot) -> None:
        self.principals.clear()
        self._verified.clear()
        self.by_name.clear()
        self.keys.clear()
        self._keys_of.clear()
        for principal in snapshot.principals:
            self.put_principal(principal)
        for key in snapshot.keys:
            self.put_key(key)

    def _changed(self, principal_id: str | None) -> None:
        for listener in self.listeners:
            listener(principal_id)

    def put_principal(self, principal: Principal) -> None:
        """Add or replace a principal."""
        old = self.principals.get(principal.id)
        if old is not None and old.name != principal.name:
            self.by_name.pop(old.name, None)
        self.principals[principal.id] = principal
        self.by_name[principal.name] = principal.id
        self._changed(principal.id)

    def put_key(self, key: ApiKey) -> None:
        """Add or replace a key."""
        self.keys[key.key_id] = key
        self._keys_of.setdefault(key.principal_id, set()).add(key.key_id)
        self._changed(key.principal_id)

    def find(self, ref: str) -> Principal | None:
        """A principal by id or by name."""
        principal = self.principals.get(ref)
        if principal is None:
            pid = self.by_name.get(ref)
            principal = self.principals.get(pid) if pid else None
        return principal

    def keys_of(self, principal_id: str) -> list[ApiKey]:
        """The keys of one principal, oldest first."""
        ids = self._keys_of.get(principal_id, ())
        return sorted((self.keys[k] for k in ids), key=lambda k: (k.created_ns, k.key_id))

    def _check_secret(self, raw: str) -> ApiKey:
        parsed = parse_key(raw)
        if parsed is None:
            raise AuthenticationFailed(Reason.MALFORMED_CREDENTIAL)
        key = self.keys.get(parsed.key_id)
        if key is None:
            raise AuthenticationFailed(Reason.UNKNOWN_KEY)
        if not secret_matches(self._pepper, parsed.secret, key.secret_hash):
            raise AuthenticationFailed(Reason.INVALID_SECRET)
        if len(self._verified) >= self.max_verified:
            self._verified.clear()
        self._verified[raw] = key.key_id
        return key

    def check_subject(self, principal_id: str, key_id: str | None, now_ns: int) -> Authenticated:
        """The live state behind a verified token: the API key it was issued against (if
        any) must still be valid and belong to it, and its principal exist and be enabled,
        checked as for a key. Called on every use of the token, so revocation and disabling
        act at once."""
        if key_id is None:
            principal = self._enabled(principal_id)
            tier = principal.effective_tier(now_ns)
            return Authenticated(principal, None, tier, principal.scopes)
        key = self.keys.get(key_id)
        if key is None or key.principal_id != principal_id:
            raise AuthenticationFailed(Reason.UNKNOWN_KEY)
        return self._holder_of(key, now_ns)

    def check_actors(self, act: Mapping[str, Any], now_ns: int) -> tuple[str, int]:
        """The live state behind a delegation chain (a token's ``act`` claim, RFC 8693):
        every actor in it checked as :meth:`check_subject` does. Returns the acting
        principal (the outermost ``sub``) and the lowest tier along the chain."""
        actor: str | None = None
        tier = 5
        level: object = act
        for _ in range(MAX_CHAIN):
            if level is None:
                break
            if not isinstance(level, Mapping):
                raise AuthenticationFailed(Reason.MALFORMED_TOKEN)
            sub, key_id = level.get("sub"), level.get("akid")
            if not isinstance(sub, str) or not isinstance(key_id, str | None):
                raise AuthenticationFailed(Reason.MALFORMED_TOKEN)
            tier = min(tier, self.check_subject(sub, key_id, now_ns).tier)
            actor = actor or sub
            level = level.get("act")
        if actor is None or level is not None:  # empty, or deeper than MAX_CHAIN
            raise AuthenticationFailed(Reason.MALFORMED_TOKEN)
        return actor, tier

    def authenticate_key(self, raw: str, now_ns: int) -> Authenticated:
        """Check an API key; raise AuthenticationFailed with the precise reason otherwise.

        The secret is compared before the key's state is revealed, so only the holder of a
        key learns (through the audit log) that it was revoked or expired.
        """
        key_id = self._verified.get(raw)
        key = self.keys.get(key_id) if key_id is not None else None
        if key is None:
            key = self._check_secret(raw)
        return self._holder_of(key, now_ns)

    def _holder_of(self, key: ApiKey, now_ns: int) -> Authenticated:
        """A key's state, then its owner's; the tier and scopes the key carries now."""
        if key.revoked_ns is not None:
            raise AuthenticationFailed(Reason.REVOKED_KEY)
        if key.expires_ns is not None and now_ns >= key.expires_ns:
            raise AuthenticationFailed(Reason.EXPIRED_KEY)
        principal = self._enabled(key.principal_id)
        tier = (
            principal.tier
            if principal.elevated_until_ns is None
            else principal.effective_tier(now_ns)
        )
        if key.tier is not None and key.tier < tier:
            tier = key.tier
        scopes = principal.scopes if key.scopes is None else principal.scopes & key.scopes
        return Authenticated(principal, key, tier, scopes)

    def _enabled(self, principal_id: str) -> Principal:
        principal = self.principals.get(principal_id)
        if principal is None:
            raise AuthenticationFailed(Reason.UNKNOWN_PRINCIPAL)
        if principal.disabled:
            raise AuthenticationFailed(Reason.DISABLED_PRINCIPAL)
        return principal
