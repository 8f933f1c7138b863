"""IdentityService: every change to principals and keys, durable first, then in memory.

Each mutation writes through the :class:`~authgate.identity.store.IdentityStore` and, once
the store has it, updates the :class:`~authgate.identity.directory.Directory` that the hot
path reads — so a revoked key stops working the moment ``revoke_key`` returns.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from typing import Any, NamedTuple

import msgspec

from authgate import sealing
from authgate.clock import NS_PER_S, Clock
from authgate.config import Passwords
from authgate.errors import AuthenticationFailed, Conflict, InvalidRequest, NotFound, Reason
from authgate.identity import totp
from authgate.identity.directory import Directory
from authgate.identity.ids import Kind, new_principal_id
from authgate.identity.keys import hash_secret, is_key_id, new_key
from authgate.identity.lockout import Lockout
from authgate.identity.model import ApiKey, Principal
from authgate.identity.passwords import PasswordHasher
from authgate.identity.store import IdentityStore

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@:-]{0,127}")
_SCOPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:/-]{0,127}")
MAX_DURATION_S = 10 * 365 * 86400


class IssuedKey(NamedTuple):
    """A newly issued key: its record and the key string, shown once."""

    record: ApiKey
    key: str


def _check_tier(tier: int) -> int:
    if not isinstance(tier, int) or isinstance(tier, bool) or not 0 <= tier <= 5:
        raise InvalidRequest(f"tier must be an integer 0-5, got {tier!r}")
    return tier


def _check_scopes(scopes: Iterable[str]) -> frozenset[str]:
    out = frozenset(scopes)
    for scope in out:
        if not isinstance(scope, str) or not _SCOPE.fullmatch(scope):
            raise InvalidRequest(f"invalid scope {scope!r}")
    return out


def _check_duration(seconds: float, what: str, *, zero_ok: bool = False) -> int:
    if not (0 <= seconds <= MAX_DURATION_S) or (seconds == 0 and not zero_ok):
        raise InvalidRequest(f"{what} must be between 0 and {MAX_DURATION_S} seconds")
    return int(seconds * NS_PER_S)


class IdentityService:
    """Principals, keys and password logins over a store, an in-memory directory and a clock."""

    def __init__(
        self, store: IdentityStore, pepper: bytes, clock: Clock, passwords: Passwords
    ) -> None:
        if len(pepper) < 32:
            raise InvalidRequest("the pepper must be at least 32 bytes")
        self.store = store
        self.clock = clock
        self.directory = Directory(pepper)
        self._pepper = pepper
        self.hasher = PasswordHasher(passwords)
        self.loaded = False
        self._version = 0
        self.lockout = Lockout(
            passwords.max_failures, passwords.failure_window_s, passwords.lockout_s
        )
        # TOTP seeds are sealed under a key derived from the pepper, bound to the principal
        self._totp_key = hashlib.sha256(b"authgate totp seed v1\0" + pepper).digest()
        self._totp_steps: dict[str, int] = {}  # the last TOTP step each user logged in with

    async def start(self) -> None:
        """Open the store and load everything into memory."""
        await self.store.open()
        self._version = await self.store.version()
        self.directory.replace_all(await self.store.load())
        self.loaded = True

    async def reload_if_changed(self) -> bool:
        """Reload from the store when another process changed it; True if it did."""
        version = await self.store.version()
        if version == self._version:
            return False
        self._version = version
        self.directory.replace_all(await self.store.load())
        return True

    async def close(self) -> None:
        """Close the store and the password thread pool."""
        self.hasher.close()
        await self.store.close()

    # -- reading -------------------------------------------------------------------------

    def principal(self, ref: str) -> Principal:
        """A principal by id or name; NotFound otherwise."""
        principal = self.directory.find(ref)
        if principal is None:
            raise NotFound(f"no principal {ref!r}")
        return principal

    def principals(self) -> list[Principal]:
        """Every principal, in id order (kinds grouped, then creation time)."""
        return sorted(self.directory.principals.values(), key=lambda p: p.id)

    def key(self, key_id: str) -> ApiKey:
        """A key by its public id; NotFound otherwise."""
        key = self.directory.keys.get(key_id) if is_key_id(key_id) else None
        if key is None:
            raise NotFound(f"no key {key_id!r}")
        return key

    def keys(self, principal_ref: str | None = None) -> list[ApiKey]:
        """All keys, or one principal's."""
        if principal_ref is not None:
            return self.directory.keys_of(self.principal(principal_ref).id)
        return sorted(self.directory.keys.values(), key=lambda k: (k.created_ns, k.key_id))

    # -- principals ----------------------------------------------------------------------

    async def create_principal(
        self,
        kind: Kind,
        name: str,
        tier: int,
        scopes: Iterable[str] = (),
        password: str | None = None,
    ) -> Principal:
        """Create a principal; a password only for users."""
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise InvalidRequest(f"invalid name {name!r}: letters, digits and _.@:- (max 128)")
        if self.directory.find(name) is not None:
            raise Conflict(f"a principal named {name!r} exists")
        if password is not None and kind is not Kind.USER:
            raise InvalidRequest("only usr_ principals have passwords")
        now = self.clock.now_ns()
        principal = Principal(
            id=new_principal_id(kind, now),
            name=name,
            tier=_check_tier(tier),
            scopes=_check_scopes(scopes),
            password_hash=await self.hasher.hash(password) if password is not None else None,
            created_ns=now,
        )
        await self._save(principal)
        return principal

    async def set_disabled(self, ref: str, disabled: bool) -> Principal:
        """Disable or re-enable a principal; its keys stop or resume working at once."""
        return await self._save(msgspec.structs.replace(self.principal(ref), disabled=disabled))

    async def set_tier(self, ref: str, tier: int) -> Principal:
        """Change a principal's base tier."""
        return await self._save(
            msgspec.structs.replace(self.principal(ref), tier=_check_tier(tier))
        )

    async def elevate(self, ref: str, tier: int, duration_s: float) -> Principal:
        """Raise a principal to ``tier`` for ``duration_s``; afterwards it ends by itself.
        A duration of 0 ends a current elevation."""
        principal = self.principal(ref)
        span = _check_duration(duration_s, "duration", zero_ok=True)
        if span == 0:
            elevated = msgspec.structs.replace(
                principal, elevated_tier=None, elevated_until_ns=None
            )
        else:
            if _check_tier(tier) <= principal.tier:
                raise InvalidRequest(f"elevation to {tier} is not above the base tier")
            elevated = msgspec.structs.replace(
                principal, elevated_tier=tier, elevated_until_ns=self.clock.now_ns() + span
            )
        return await self._save(elevated)

    async def set_password(self, ref: str, password: str) -> Principal:
        """Set a user's password."""
        principal = self.principal(ref)
        if principal.kind is not Kind.USER:
            raise InvalidRequest("only usr_ principals have passwords")
        hashed = await self.hasher.hash(password)
        return await self._save(msgspec.structs.replace(principal, password_hash=hashed))

    # -- second factor -------------------------------------------------------------------

    async def enroll_totp(self, ref: str) -> tuple[Principal, str, str]:
        """Give a user a new TOTP seed (replacing any). Returns the principal, the seed in
        base32 and the ``otpauth://`` URI: shown once, stored only sealed."""
        principal = self.principal(ref)
        if principal.kind is not Kind.USER:
            raise InvalidRequest("only usr_ principals have a second factor")
        seed = totp.new_secret()
        sealed = sealing.seal(self._totp_key, totp.decode_secret(seed), principal.id.encode())
        saved = await self._save(msgspec.structs.replace(principal, totp_sealed=sealed))
        return saved, seed, totp.provisioning_uri(seed, principal.name)

    async def remove_totp(self, ref: str) -> Principal:
        """Take a user's second factor away."""
        principal = self.principal(ref)
        return await self._save(msgspec.structs.replace(principal, totp_sealed=None))

    async def second_factor(self, ref: str, enable: bool) -> dict[str, Any]:
        """Enrol (a new seed, shown in the answer once) or remove a user's TOTP; the
        principal's public view, for the admin API and CLI."""
        if enable:
            principal, seed, uri = await self.enroll_totp(ref)
            now = self.clock.now_ns()
            return {**principal.public(now), "totp_secret": seed, "otpauth_uri": uri}
        return (await self.remove_totp(ref)).public(self.clock.now_ns())

    def _second_factor(self, principal: Principal, code: str, now: int) -> bool:
        """Whether ``code`` is the user's current TOTP (one step of drift either way) and
        not one already used: a code opens one login, never two."""
        if principal.totp_sealed is None:
            return False
        seed = sealing.unseal(self._totp_key, principal.totp_sealed, principal.id.encode())
        step = None if seed is None else totp.verify(seed, code, now / NS_PER_S)
        if step is None or step <= self._totp_steps.get(principal.id, -1):
            return False
        self._totp_steps[principal.id] = step
        return True

    async def _save(self, principal: Principal) -> Principal:
        await self.store.put_principal(principal)
        self.directory.put_principal(principal)
        return principal

    # -- keys ----------------------------------------------------------------------------

    async def issue_key(
        self,
        ref: str,
        name: str = "",
        tier: int | None = None,
        scopes: Iterable[str] | None = None,
        ttl_s: float | None = None,
    ) -> IssuedKey:
        """Issue a key for a principal. Its tier and scopes may narrow the principal's,
        never widen them."""
        principal = self.principal(ref)
        if tier is not None and _check_tier(tier) > principal.tier:
            raise InvalidRequest(f"key tier {tier} is above the principal's tier")
        narrowed = None if scopes is None else _check_scopes(scopes)
        if narrowed is not None and not narrowed <= principal.scopes:
            extra = ", ".join(sorted(narrowed - principal.scopes))
            raise InvalidRequest(f"the principal does not hold scopes: {extra}")
        now = self.clock.now_ns()
        expires = None if ttl_s is None else now + _check_duration(ttl_s, "ttl")
        issued = self._new_key(principal.id, name, tier, narrowed, now, expires)
        await self._save_keys(issued.record)
        return issued

    def _new_key(
        self,
        principal_id: str,
        name: str,
        tier: int | None,
        scopes: frozenset[str] | None,
        now: int,
        expires: int | None,
    ) -> IssuedKey:
        if len(name) > 128:
            raise InvalidRequest("a key name is at most 128 characters")
        raw, parsed = new_key()
        while parsed.key_id in self.directory.keys:  # 60 random bits: practically never
            raw, parsed = new_key()
        record = ApiKey(
            key_id=parsed.key_id,
            principal_id=principal_id,
            secret_hash=hash_secret(self._pepper, parsed.secret),
            name=name,
            tier=tier,
            scopes=scopes,
            created_ns=now,
            expires_ns=expires,
        )
        return IssuedKey(record, raw)

    async def _save_keys(self, *keys: ApiKey) -> None:
        await self.store.put_keys(keys)
        for key in keys:
            self.directory.put_key(key)

    async def revoke_key(self, key_id: str) -> ApiKey:
        """Revoke a key; it stops working at once. Revoking twice is a Conflict."""
        key = self.key(key_id)
        if key.revoked_ns is not None:
            raise Conflict(f"key {key_id} is already revoked")
        revoked = msgspec.structs.replace(key, revoked_ns=self.clock.now_ns())
        await self._save_keys(revoked)
        return revoked

    async def rotate_key(self, key_id: str, overlap_s: float) -> IssuedKey:
        """Issue a successor with the same owner, name, tier and scopes. The old key keeps
        working for ``overlap_s`` seconds (0: stops now), then expires by itself."""
        old = self.key(key_id)
        now = self.clock.now_ns()
        if old.status(now) != "active":
            raise Conflict(f"key {key_id} is {old.status(now)}; only active keys rotate")
        overlap = _check_duration(overlap_s, "overlap", zero_ok=True)
        lifetime = None if old.expires_ns is None else old.expires_ns - old.created_ns
        issued = self._new_key(
            old.principal_id,
            old.name,
            old.tier,
            old.scopes,
            now,
            None if lifetime is None else now + lifetime,
        )
        cutoff = now + overlap
        retiring = msgspec.structs.replace(
            old,
            expires_ns=cutoff if old.expires_ns is None else min(old.expires_ns, cutoff),
            replaced_by=issued.record.key_id,
        )
        await self._save_keys(issued.record, retiring)
        return issued

    # -- passwords -----------------------------------------------------------------------

    async def login(
        self, login: str, password: str, client: str, code: str | None = None
    ) -> Principal:
        """Check a user's password and, given ``code``, their TOTP second factor. Raises
        LockedOut, or AuthenticationFailed with the reason for the audit log; a wrong code
        counts towards the lockout like a wrong password. Upgrades the password hash when
        the parameters have changed."""
        now = self.clock.now_ns()
        principal = self.directory.find(login)
        who = f"p:{principal.id}" if principal is not None else f"n:{login[:128]}"
        counters = (who, f"a:{client}")
        self.lockout.check(counters, now)
        if principal is None or principal.password_hash is None:
            await self.hasher.burn(password)
            self.lockout.fail(counters, self.clock.now_ns())
            reason = Reason.UNKNOWN_PRINCIPAL if principal is None else Reason.NO_PASSWORD
            raise AuthenticationFailed(reason)
        try:
            await self.hasher.verify(principal.password_hash, password)
        except AuthenticationFailed:
            self.lockout.fail(counters, self.clock.now_ns())
            raise
        if principal.disabled:
            raise AuthenticationFailed(Reason.DISABLED_PRINCIPAL)
        if code is not None and not self._second_factor(principal, code, self.clock.now_ns()):
            self.lockout.fail(counters, self.clock.now_ns())
            raise AuthenticationFailed(Reason.INVALID_SECOND_FACTOR)
        self.lockout.succeed(who)
        if self.hasher.needs_rehash(principal.password_hash):
            rehashed = await self.hasher.hash(password)
            current = self.directory.principals[principal.id]
            principal = await self._save(msgspec.structs.replace(current, password_hash=rehashed))
        return principal
