"""Authenticated encryption of small stored secrets (AES-256-GCM): a handoff's context, a
user's TOTP seed. The key comes from the caller (derived from a ticket's secret, or from the
server pepper); the associated data binds the sealed bytes to the record they belong to,
so they cannot be moved to another."""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

NONCE_BYTES = 12


def seal(key: bytes, plaintext: bytes, bound_to: bytes) -> bytes:
    """``plaintext`` encrypted under the 32-byte ``key``, bound to ``bound_to``."""
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, bound_to)


def unseal(key: bytes, sealed: bytes, bound_to: bytes) -> bytes | None:
    """The plaintext, or None when ``sealed`` was not made with this key and binding."""
    try:
        return AESGCM(key).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], bound_to)
    except (InvalidTag, ValueError):
        return None
