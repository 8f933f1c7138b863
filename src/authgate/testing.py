"""Test doubles that ship with authgate: a fake clock, a capturing audit sink and an
in-memory identity store, plus a helper that wires them into a working engine."""

from __future__ import annotations

from dataclasses import dataclass

from authgate.audit.event import AuditEvent
from authgate.clock import NS_PER_S
from authgate.config import Passwords, Settings
from authgate.decide import DecisionEngine
from authgate.handoff import Handoffs, MemoryHandoffStore
from authgate.identity.service import IdentityService
from authgate.identity.store import MemoryIdentityStore
from authgate.policy import build_policy
from authgate.ratelimit.local import LocalLimiter
from authgate.tokens import KeyRing, Tokens, new_signing_key

__all__ = [
    "CapturingSink",
    "FakeClock",
    "Harness",
    "MemoryIdentityStore",
    "fast_passwords",
    "make_harness",
]

TEST_PEPPER = b"authgate-test-pepper-0123456789abcdef"


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self, start_s: float = 1_700_000_000.0) -> None:
        self.ns = int(start_s * NS_PER_S)

    def now_ns(self) -> int:
        """The current fake time."""
        return self.ns

    def advance(self, seconds: float) -> None:
        """Move time forward."""
        self.ns += int(seconds * NS_PER_S)


class CapturingSink:
    """An audit sink that keeps every event."""

    def __init__(self) -> None:
        self.events: list[AuditEvent] = []

    def emit(self, event: AuditEvent) -> None:
        """Keep the event."""
        self.events.append(event)

    async def emit_durable(self, event: AuditEvent) -> int:
        """Keep the event; return its position."""
        self.events.append(event)
        return len(self.events) - 1

    @property
    def last(self) -> AuditEvent:
        """The most recent event."""
        return self.events[-1]


def fast_passwords(
    max_failures: int = 5, failure_window_s: float = 900.0, lockout_s: float = 900.0
) -> Passwords:
    """argon2 parameters cheap enough for tests (the real ones cost ~120 ms a verify)."""
    return Passwords(
        argon2_time_cost=1,
        argon2_memory_kib=8,
        argon2_parallelism=1,
        max_failures=max_failures,
        failure_window_s=failure_window_s,
        lockout_s=lockout_s,
    )


@dataclass
class Harness:
    """A fully wired in-memory authgate for tests."""

    settings: Settings
    clock: FakeClock
    sink: CapturingSink
    store: MemoryIdentityStore
    identity: IdentityService
    engine: DecisionEngine
    handoffs: Handoffs

    @property
    def tokens(self) -> Tokens:
        """The engine's token service (an in-memory key ring)."""
        assert self.engine.tokens is not None
        return self.engine.tokens


async def make_harness(settings: Settings | None = None) -> Harness:
    """Build and start an engine over in-memory doubles."""
    settings = settings or Settings(passwords=fast_passwords())
    clock = FakeClock()
    sink = CapturingSink()
    store = MemoryIdentityStore()
    identity = IdentityService(store, TEST_PEPPER, clock, settings.passwords)
    await identity.start()
    engine = DecisionEngine(
        identity.directory,
        build_policy(settings),
        LocalLimiter(settings.ratelimit.max_keys),
        sink,
        clock,
        allow_anonymous=settings.allow_anonymous,
        tokens=Tokens(
            KeyRing((new_signing_key(clock.now_ns()),)),
            settings.tokens.issuer,
            settings.tokens.audience,
            settings.tokens.lifetime_minutes * 60.0,
            float(settings.tokens.leeway_s),
        ),
        second_factor_tiers=frozenset(settings.passwords.second_factor_tiers),
    )
    h = settings.handoffs
    handoffs = Handoffs(
        MemoryHandoffStore(),
        TEST_PEPPER,
        clock,
        max_context_bytes=h.max_context_bytes,
        default_ttl_s=h.default_ttl_s,
        max_ttl_s=h.max_ttl_s,
    )
    return Harness(settings, clock, sink, store, identity, engine, handoffs)
