"""Time-based one-time passwords (RFC 6238 over RFC 4226 HOTP), for second factors.

Secrets are random 160-bit values, shown to the user once as base32 (and as an
``otpauth://`` URI for authenticator apps). A code is accepted for the current 30-second
step and one step either way (clock drift), compared in constant time; a verifier also
returns the step it matched, so a caller can refuse a code that was already used.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import struct
from urllib.parse import quote, urlencode

STEP_S = 30
DIGITS = 6


def new_secret() -> str:
    """A fresh 160-bit secret, base32 without padding (what authenticator apps expect)."""
    return base64.b32encode(os.urandom(20)).decode("ascii").rstrip("=")


def decode_secret(secret: str) -> bytes:
    """The bytes of a base32 secret (case and padding forgiven); ValueError if it is not."""
    text = secret.strip().replace(" ", "").upper()
    try:
        return base64.b32decode(text + "=" * (-len(text) % 8))
    except (ValueError, TypeError) as exc:
        raise ValueError("not a base32 secret") from exc


def hotp(key: bytes, counter: int, digits: int = DIGITS) -> str:
    """RFC 4226: the code for ``counter``."""
    mac = hmac.digest(key, struct.pack(">Q", counter), hashlib.sha1)
    offset = mac[-1] & 0x0F
    value = struct.unpack(">I", mac[offset : offset + 4])[0] & 0x7FFFFFFF
    return str(value % 10**digits).zfill(digits)


def totp(key: bytes, now_s: float, digits: int = DIGITS) -> str:
    """RFC 6238: the code for the step containing ``now_s``."""
    return hotp(key, int(now_s // STEP_S), digits)


def verify(key: bytes, code: str, now_s: float, drift_steps: int = 1) -> int | None:
    """The step a code matches within ``drift_steps`` of now, or None. Every candidate is
    compared, in constant time, so timing says nothing about which step matched."""
    code = code.strip()
    if len(code) != DIGITS or not code.isdigit():
        return None
    step = int(now_s // STEP_S)
    matched = None
    for candidate in range(step - drift_steps, step + drift_steps + 1):
        if hmac.compare_digest(hotp(key, candidate), code) and matched is None:
            matched = candidate
    return matched


def provisioning_uri(secret: str, account: str, issuer: str = "authgate") -> str:
    """The ``otpauth://totp/...`` URI an authenticator app imports (often as a QR code)."""
    label = quote(f"{issuer}:{account}")
    query = urlencode({"secret": secret, "issuer": issuer, "digits": DIGITS, "period": STEP_S})
    return f"otpauth://totp/{label}?{query}"
