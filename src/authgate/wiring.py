"""build_services(settings): the one place that picks concrete backends and wires them."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import stat
from dataclasses import dataclass
from pathlib import Path

import msgspec

from authgate.audit.log import Ledger
from authgate.audit.note import Signer
from authgate.audit.sink import AuditSink, MemorySink
from authgate.clock import NS_PER_S, Clock, SystemClock
from authgate.config import Settings
from authgate.decide import DecisionEngine
from authgate.errors import AuthgateError, ConfigError
from authgate.handoff import Handoffs, HandoffStore, MemoryHandoffStore
from authgate.handoff.sqlite import SqliteHandoffStore
from authgate.identity.service import IdentityService
from authgate.identity.sqlite import SqliteIdentityStore
from authgate.identity.store import IdentityStore
from authgate.policy import Policy, build_policy
from authgate.ratelimit.local import LocalLimiter
from authgate.tokens import KeyRing, KeyRingFile, Tokens, new_signing_key

PEPPER_BYTES = 32
log = logging.getLogger(__name__)


@dataclass
class Services:
    """Everything a running authgate holds."""

    settings: Settings
    clock: Clock
    identity: IdentityService
    policy: Policy
    limiter: LocalLimiter
    sink: AuditSink
    engine: DecisionEngine

    ledger: Ledger | None = None
    handoffs: Handoffs | None = None
    _ring_mtime: int = 0

    def reload_token_keys(self) -> bool:
        """Reload the token signing keys if their file changed (``keys rotate-signing``);
        whether it did."""
        tokens = self.engine.tokens
        if tokens is None:
            return False
        path = self.settings.path(self.settings.tokens.keys_file)
        try:
            mtime = path.stat().st_mtime_ns
        except OSError:
            return False
        if mtime == self._ring_mtime:
            return False
        first = self._ring_mtime == 0
        self._ring_mtime = mtime
        if first:
            return False  # the version the ring was loaded from at start
        tokens.ring = KeyRing.load(path)
        return True

    async def close(self) -> None:
        """Release the store, the ledger and thread pools."""
        await self.identity.close()
        if self.handoffs is not None:
            await self.handoffs.close()
        if self.ledger is not None:
            await asyncio.to_thread(self.ledger.close)

    def readiness(self) -> dict[str, bool]:
        """Named readiness checks for ``/readyz``."""
        ledger_ok = self.ledger is None or self.ledger.failed is None
        return {"identity_loaded": self.identity.loaded, "audit_ledger": ledger_ok}


def write_new_file(path: Path, data: bytes, mode: int) -> bool:
    """Create ``path`` with ``mode`` and make it durable; False (and no change) when it
    already exists, so a secret is never overwritten."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    return True


def load_signer(path: Path, name: str, *, create: bool) -> Signer:
    """The audit signing key at ``path`` (created, mode 600, when ``create``)."""
    if not path.exists():
        if not create:
            raise ConfigError(f"audit signing key {path} does not exist; run 'authgate init'")
        signer = Signer.generate(name)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_new_file(path, (signer.skey + "\n").encode(), 0o600)
        return signer
    if os.name == "posix" and path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"audit signing key {path} is accessible to others; chmod 600 it")
    try:
        return Signer.from_skey(path.read_text())
    except AuthgateError as exc:
        raise ConfigError(f"audit signing key {path}: {exc.message}") from None


def load_hmac_key(path: Path, *, create: bool) -> bytes:
    """The audit HMAC key (32 random bytes, hex, mode 600), created when ``create``."""
    if not path.exists() and create:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_new_file(path, os.urandom(32).hex().encode() + b"\n", 0o600)
    try:
        return read_secret_hex(path, "audit HMAC key")
    except FileNotFoundError:
        raise ConfigError(f"audit HMAC key {path} does not exist; run 'authgate init'") from None


def load_token_ring(path: Path, now_ns: int, *, create: bool) -> KeyRing:
    """The token signing keys at ``path``; a first key is created (mode 600) when missing."""
    if not path.exists() and create:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        first = KeyRingFile((new_signing_key(now_ns),))
        write_new_file(path, msgspec.json.encode(first), 0o600)  # never replaces one
    return KeyRing.load(path)


def build_tokens(settings: Settings, now_ns: int) -> Tokens | None:
    """The token service, or None when tokens are disabled."""
    t = settings.tokens
    if not t.enabled:
        return None
    ring = load_token_ring(settings.path(t.keys_file), now_ns, create=True)
    return Tokens(ring, t.issuer, t.audience, t.lifetime_minutes * 60.0, float(t.leeway_s))


async def build_handoffs(settings: Settings, pepper: bytes, clock: Clock) -> Handoffs | None:
    """The handoff tickets over the configured store (opened), or None when disabled.
    Delegated tokens need the token service, so handoffs are off without tokens too."""
    h = settings.handoffs
    if not h.enabled or not settings.tokens.enabled:
        return None
    store: HandoffStore = (
        SqliteHandoffStore(settings.path(h.sqlite_path), fsync=h.fsync)
        if h.store == "sqlite"
        else MemoryHandoffStore()
    )
    await store.open()
    return Handoffs(
        store,
        pepper,
        clock,
        max_context_bytes=h.max_context_bytes,
        default_ttl_s=h.default_ttl_s,
        max_ttl_s=h.max_ttl_s,
        keep_expired_s=h.keep_expired_s,
    )


def instance_name(settings: Settings) -> str:
    """The name of this instance in log origins and the signing key."""
    return settings.audit.instance or f"authgate.{socket.gethostname()}"


async def open_ledger(settings: Settings, log_name: str) -> Ledger:
    """Open (and recover) the ledger of one worker."""
    audit = settings.audit
    name = instance_name(settings)
    signer = load_signer(settings.path(audit.signing_key_file), name, create=True)
    ledger = Ledger(
        settings.path(audit.directory) / log_name,
        f"{name}/{log_name}",
        signer,
        segment_bytes=audit.segment_mib << 20,
        queue_max=audit.queue_max,
        checkpoint_interval=audit.checkpoint_interval_s,
        commit_interval=audit.commit_interval_ms / 1000,
    )
    report = await asyncio.to_thread(ledger.open)
    for note in report.notes:
        log.warning("audit ledger %s: %s", log_name, note)
    return ledger


def read_pepper(path: Path) -> bytes:
    """Read the server pepper; ConfigError when it is missing, short or readable by others."""
    try:
        return read_secret_hex(path, "pepper file")
    except FileNotFoundError:
        raise ConfigError(f"pepper file {path} does not exist; run 'authgate init'") from None


def read_secret_hex(path: Path, what: str) -> bytes:
    """A secret of 32+ bytes stored as hex in a file only its owner may read.
    FileNotFoundError when missing; ConfigError when unreadable, exposed, short or not hex."""
    try:
        info = path.stat()
        data = path.read_bytes().strip()
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}") from None
    if os.name == "posix" and info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"{what} {path} is accessible to others; chmod 600 it")
    try:
        secret = bytes.fromhex(data.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise ConfigError(f"{what} {path} is not hex") from None
    if len(secret) < PEPPER_BYTES:
        raise ConfigError(f"{what} {path} holds fewer than {PEPPER_BYTES} bytes")
    return secret


def make_store(settings: Settings) -> IdentityStore:
    """The configured identity store."""
    return SqliteIdentityStore(settings.path(settings.identity.sqlite_path))


async def build_services(
    settings: Settings,
    clock: Clock | None = None,
    sink: AuditSink | None = None,
    *,
    ledger_name: str | None = None,
    handoffs: bool = False,
) -> Services:
    """Open the store, load identities into memory and build the decision engine.

    With ``ledger_name`` (``serve`` passes ``w0``, ``w1``...) and ``audit.enabled``, events
    go to that worker's durable ledger; otherwise (CLI commands) to memory. ``handoffs``
    (``serve``) opens the handoff store; the CLI and the benchmarks' set-up have no use
    for it.
    """
    clock = clock or SystemClock()
    policy = build_policy(settings)
    pepper = read_pepper(settings.path(settings.identity.pepper_file))
    identity = IdentityService(make_store(settings), pepper, clock, settings.passwords)
    await identity.start()
    limiter = LocalLimiter(
        settings.ratelimit.max_keys, int(settings.ratelimit.sweep_interval_s * NS_PER_S)
    )
    ledger = None
    audit_key = None
    if sink is None and ledger_name is not None and settings.audit.enabled:
        ledger = await open_ledger(settings, ledger_name)
        sink = ledger
        audit_key = load_hmac_key(settings.path(settings.audit.hmac_key_file), create=True)
    sink = sink or MemorySink()
    engine = DecisionEngine(
        identity.directory,
        policy,
        limiter,
        sink,
        clock,
        allow_anonymous=settings.allow_anonymous,
        audit_key=audit_key,
        tokens=build_tokens(settings, clock.now_ns()),
        second_factor_tiers=frozenset(settings.passwords.second_factor_tiers),
    )
    tickets = await build_handoffs(settings, pepper, clock) if handoffs else None
    services = Services(settings, clock, identity, policy, limiter, sink, engine, ledger, tickets)
    services.reload_token_keys()  # records the key file's version the ring was loaded from
    return services
