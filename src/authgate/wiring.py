"""build_services(settings): the one place that picks concrete backends and wires them."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from authgate.audit.sink import AuditSink, MemorySink
from authgate.clock import NS_PER_S, Clock, SystemClock
from authgate.config import Settings
from authgate.decide import DecisionEngine
from authgate.errors import ConfigError
from authgate.identity.service import IdentityService
from authgate.identity.sqlite import SqliteIdentityStore
from authgate.identity.store import IdentityStore
from authgate.policy import Policy, build_policy
from authgate.ratelimit.local import LocalLimiter

PEPPER_BYTES = 32


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

    async def close(self) -> None:
        """Release the store and thread pools."""
        await self.identity.close()

    def readiness(self) -> dict[str, bool]:
        """Named readiness checks for ``/readyz``."""
        return {"identity_loaded": self.identity.loaded, "audit_sink": True}


def read_pepper(path: Path) -> bytes:
    """Read the server pepper; ConfigError when it is missing, short or readable by others."""
    try:
        info = path.stat()
        data = path.read_bytes().strip()
    except FileNotFoundError:
        raise ConfigError(f"pepper file {path} does not exist; run 'authgate init'") from None
    except OSError as exc:
        raise ConfigError(f"cannot read pepper file {path}: {exc.strerror}") from None
    if os.name == "posix" and info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"pepper file {path} is accessible to others; chmod 600 it")
    try:
        pepper = bytes.fromhex(data.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise ConfigError(f"pepper file {path} is not hex") from None
    if len(pepper) < PEPPER_BYTES:
        raise ConfigError(f"pepper file {path} holds fewer than {PEPPER_BYTES} bytes")
    return pepper


def make_store(settings: Settings) -> IdentityStore:
    """The configured identity store."""
    return SqliteIdentityStore(settings.path(settings.identity.sqlite_path))


async def build_services(
    settings: Settings, clock: Clock | None = None, sink: AuditSink | None = None
) -> Services:
    """Open the store, load identities into memory and build the decision engine."""
    clock = clock or SystemClock()
    policy = build_policy(settings)
    pepper = read_pepper(settings.path(settings.identity.pepper_file))
    identity = IdentityService(make_store(settings), pepper, clock, settings.passwords)
    await identity.start()
    limiter = LocalLimiter(
        settings.ratelimit.max_keys, int(settings.ratelimit.sweep_interval_s * NS_PER_S)
    )
    sink = sink or MemorySink()
    engine = DecisionEngine(
        identity.directory,
        policy,
        limiter,
        sink,
        clock,
        allow_anonymous=settings.allow_anonymous,
    )
    return Services(settings, clock, identity, policy, limiter, sink, engine)
