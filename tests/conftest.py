"""Shared fixtures: an in-memory authgate on a fake clock."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from authgate.testing import Harness, make_harness


@pytest.fixture
async def bed() -> AsyncIterator[Harness]:
    """A wired engine over an in-memory store, a fake clock and a capturing sink."""
    harness = await make_harness()
    yield harness
    await harness.identity.close()
