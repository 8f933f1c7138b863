"""Password hashing with argon2id, always off the event loop.

An argon2id verify with the default parameters costs about 120 ms of CPU here, so every hash
and verify runs in a small thread pool (argon2-cffi releases the GIL while it works).
"""

from __future__ import annotations

import asyncio
import contextlib
from concurrent.futures import ThreadPoolExecutor

from argon2 import PasswordHasher as _Argon2
from argon2 import Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from authgate.config import Passwords
from authgate.errors import AuthenticationFailed, InvalidRequest, Reason

MAX_PASSWORD_BYTES = 1024


class PasswordHasher:
    """argon2id hashing and verification in a thread pool."""

    def __init__(self, config: Passwords) -> None:
        self._argon2 = _Argon2(
            time_cost=config.argon2_time_cost,
            memory_cost=config.argon2_memory_kib,
            parallelism=config.argon2_parallelism,
            type=Type.ID,
        )
        self._pool = ThreadPoolExecutor(config.threads, thread_name_prefix="authgate-argon2")
        self._dummy: str | None = None

    async def hash(self, password: str) -> str:
        """Hash a new password. Raises InvalidRequest for an empty or oversized one."""
        if not password or len(password.encode()) > MAX_PASSWORD_BYTES:
            raise InvalidRequest(f"a password must be 1-{MAX_PASSWORD_BYTES} bytes")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._argon2.hash, password)

    async def verify(self, stored: str, password: str) -> None:
        """Raise AuthenticationFailed(invalid_password) unless ``password`` matches."""
        loop = asyncio.get_running_loop()
        if len(password.encode()) > MAX_PASSWORD_BYTES:
            raise AuthenticationFailed(Reason.INVALID_PASSWORD)
        try:
            await loop.run_in_executor(self._pool, self._argon2.verify, stored, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            raise AuthenticationFailed(Reason.INVALID_PASSWORD) from None

    async def burn(self, password: str) -> None:
        """Spend the time of one verify, so an unknown login costs what a known one does."""
        if self._dummy is None:
            self._dummy = await self.hash("authgate-timing-equaliser")
        with contextlib.suppress(AuthenticationFailed):
            await self.verify(self._dummy, password)

    def needs_rehash(self, stored: str) -> bool:
        """True when ``stored`` was made with other parameters than the configured ones."""
        try:
            return self._argon2.check_needs_rehash(stored)
        except InvalidHashError:
            return True

    def close(self) -> None:
        """Stop the thread pool."""
        self._pool.shutdown(wait=False)
