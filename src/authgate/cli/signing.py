"""``authgate keys``: the token signing keys."""

from __future__ import annotations

import time

import click

from authgate.cli.common import out, settings_of
from authgate.wiring import load_token_ring

NS = 1_000_000_000


@click.group("keys")
def keys() -> None:
    """Token signing keys (Ed25519)."""


@keys.command("rotate-signing")
@click.pass_context
def rotate_signing(ctx: click.Context) -> None:
    """Sign new tokens with a new key; keep older keys published until their tokens expire.

    Running workers pick the new key up within about a second."""
    settings = settings_of(ctx)
    t = settings.tokens
    path = settings.path(t.keys_file)
    now = time.time_ns()
    ring = load_token_ring(path, now, create=True)
    rotated = ring.rotate(now).prune(now, t.lifetime_minutes * 60.0, float(t.leeway_s))
    rotated.save(path)
    out.print(f"signing with {rotated.current.kid}", markup=False)
    published = ", ".join(k.kid for k in rotated.keys)
    out.print(f"published   {published}", markup=False)
