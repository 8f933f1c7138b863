"""Access tokens: EdDSA (Ed25519) JWTs, the signing key ring and its JWKS, and verification
with a cache of verified tokens.

A token's header is ``{"alg": "EdDSA", "kid": ..., "typ": "JWT"}``; its claims ``iss``,
``aud``, ``sub`` (the principal), ``tier``, ``scope`` (space-separated), ``iat``, ``nbf``,
``exp`` and ``jti``, plus any extra claims the issuer adds (``akid``: the API key it was
issued against; ``act``: a delegation chain (RFC 8693); ``cid``: the correlation id
of a handoff; ``amr``: how a user logged in (RFC 8176)). Verification accepts only ``EdDSA`` (so not
``none``, nor HS256 keyed with the public key), only known ``kid`` values, and checks the
signature, ``exp`` and ``nbf`` with a small leeway, ``iss`` and ``aud``. Each failure is an
:class:`~authgate.errors.AuthenticationFailed` with its own :class:`~authgate.errors.Reason`.

An Ed25519 verification costs ~100 µs, so a verified token is remembered (by the token
string) until it expires: a second use costs a dictionary lookup and an expiry check. This
module knows nothing of principals: whether the subject is still enabled and its API key
still valid is checked by the decision engine on every use, cached or not.

The key ring is a JSON file (mode 0600) of Ed25519 keys with their ``kid``. ``rotate`` adds a
key that signs from then on; the previous key stays published in the JWKS (and accepted)
until every token it signed has expired, then ``prune`` drops it.
"""

from __future__ import annotations

import base64
import os
import secrets
from pathlib import Path
from typing import Any

import jwt
import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from authgate.errors import AuthenticationFailed, ConfigError, Reason

ALGORITHM = "EdDSA"
NS = 1_000_000_000
MAX_TOKEN_LEN = 8192


_encoder = msgspec.json.Encoder()


def _b64url(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


class SigningKey(msgspec.Struct, frozen=True):
    """One Ed25519 key of the ring. ``retired_ns``: when it stopped signing (None: it signs)."""

    kid: str
    seed: str  # the 32-byte private seed, base64url: the file is 0600 and never logged
    created_ns: int
    retired_ns: int | None = None

    def private(self) -> Ed25519PrivateKey:
        """The private key."""
        raw = base64.urlsafe_b64decode(self.seed + "=" * (-len(self.seed) % 4))
        return Ed25519PrivateKey.from_private_bytes(raw)

    def public_bytes(self) -> bytes:
        """The raw 32-byte public key."""
        return self.private().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    def jwk(self) -> dict[str, str]:
        """The public key as a JWK (RFC 8037)."""
        return {
            "kty": "OKP",
            "crv": "Ed25519",
            "x": _b64url(self.public_bytes()).decode("ascii"),
            "kid": self.kid,
            "alg": ALGORITHM,
            "use": "sig",
        }


class KeyRingFile(msgspec.Struct, frozen=True):
    """The key ring's file format."""

    keys: tuple[SigningKey, ...]


def new_signing_key(now_ns: int) -> SigningKey:
    """A fresh key with a random ``kid``."""
    seed = _b64url(os.urandom(32)).decode("ascii")
    return SigningKey(kid=secrets.token_hex(8), seed=seed, created_ns=now_ns)


class KeyRing:
    """The signing keys: the newest unretired one signs; all are published and accepted."""

    def __init__(self, keys: tuple[SigningKey, ...]) -> None:
        if not keys or all(k.retired_ns is not None for k in keys):
            raise ConfigError("the token key ring has no signing key")
        self.keys = keys
        self.current = max((k for k in keys if k.retired_ns is None), key=lambda k: k.created_ns)
        self._private = {k.kid: k.private() for k in keys}
        self._public: dict[str, Ed25519PublicKey] = {
            kid: key.public_key() for kid, key in self._private.items()
        }
        self._headers = {
            kid: _b64url(_encoder.encode({"alg": ALGORITHM, "kid": kid, "typ": "JWT"}))
            for kid in self._private
        }

    @classmethod
    def load(cls, path: Path) -> KeyRing:
        """Read the ring from ``path``."""
        try:
            data = msgspec.json.decode(path.read_bytes(), type=KeyRingFile)
        except OSError as exc:
            raise ConfigError(f"cannot read token keys {path}: {exc.strerror}") from None
        except (msgspec.DecodeError, ValueError) as exc:
            raise ConfigError(f"token keys {path} are malformed: {exc}") from None
        try:
            return cls(data.keys)
        except ValueError as exc:
            raise ConfigError(f"token keys {path} are malformed: {exc}") from None

    def save(self, path: Path) -> None:
        """Write the ring to ``path`` atomically, mode 0600."""
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(msgspec.json.encode(KeyRingFile(self.keys)))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def rotate(self, now_ns: int) -> KeyRing:
        """A ring with a new signing key; the current one retires (still published)."""
        retired = tuple(
            msgspec.structs.replace(k, retired_ns=now_ns) if k.retired_ns is None else k
            for k in self.keys
        )
        return KeyRing((*retired, new_signing_key(now_ns)))

    def prune(self, now_ns: int, lifetime_s: float, leeway_s: float) -> KeyRing:
        """A ring without retired keys whose every token has expired."""
        horizon = int((lifetime_s + leeway_s) * NS)
        kept = tuple(
            k for k in self.keys if k.retired_ns is None or now_ns < k.retired_ns + horizon
        )
        return KeyRing(kept)

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        """The JWKS document: every key still accepted."""
        return {"keys": [k.jwk() for k in self.keys]}

    def private(self, kid: str) -> Ed25519PrivateKey:
        """A key's private half."""
        return self._private[kid]

    def header(self, kid: str) -> bytes:
        """A key's encoded JWT header."""
        return self._headers[kid]

    def public(self, kid: str) -> Ed25519PublicKey | None:
        """A key's public half, None for an unknown ``kid``."""
        return self._public.get(kid)


class Claims(msgspec.Struct, frozen=True):
    """A verified token's claims."""

    sub: str
    tier: int
    scope: frozenset[str]
    exp: int
    iat: int
    jti: str
    akid: str | None = None
    act: dict[str, Any] | None = None
    cid: str | None = None  # the correlation id of a handoff's delegated token
    amr: tuple[str, ...] = ()  # how the subject authenticated (RFC 8176): "pwd", "otp"


_ERRORS: tuple[tuple[type[Exception], Reason], ...] = (
    (jwt.InvalidAudienceError, Reason.WRONG_AUDIENCE),
    (jwt.InvalidIssuerError, Reason.WRONG_ISSUER),
    (jwt.InvalidSignatureError, Reason.INVALID_SIGNATURE),
    (jwt.MissingRequiredClaimError, Reason.MALFORMED_TOKEN),
    (jwt.InvalidAlgorithmError, Reason.UNSUPPORTED_ALGORITHM),
)


class Tokens:
    """Issues and verifies tokens against a key ring; remembers verified ones."""

    def __init__(
        self,
        ring: KeyRing,
        issuer: str,
        audience: str,
        lifetime_s: float = 900.0,
        leeway_s: float = 30.0,
        cache_max: int = 100_000,
    ) -> None:
        self.ring = ring
        self.issuer = issuer
        self.audience = audience
        self.lifetime_s = lifetime_s
        self.leeway_s = leeway_s
        self.cache_max = cache_max
        self._verified: dict[str, Claims] = {}

    def issue(
        self,
        sub: str,
        tier: int,
        scopes: frozenset[str],
        now_ns: int,
        *,
        lifetime_s: float | None = None,
        extra: dict[str, Any] | None = None,
    ) -> tuple[str, Claims]:
        """A signed token and its claims."""
        now = now_ns // NS
        exp = now + int(lifetime_s if lifetime_s is not None else self.lifetime_s)
        payload: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": sub,
            "tier": tier,
            "scope": " ".join(sorted(scopes)),
            "iat": now,
            "nbf": now,
            "exp": exp,
            "jti": secrets.token_urlsafe(12),
            **(extra or {}),
        }
        # Encoded here rather than by jwt.encode (30 µs less of a 100 µs issue): the header
        # is fixed per key, the claims are msgspec-encoded, and the signature is the key's.
        kid = self.ring.current.kid
        signing_input = self.ring.header(kid) + b"." + _b64url(_encoder.encode(payload))
        signature = _b64url(self.ring.private(kid).sign(signing_input))
        return (signing_input + b"." + signature).decode("ascii"), _claims(payload)

    def verify(self, token: str, now_ns: int) -> Claims:
        """The claims of a valid token; AuthenticationFailed with the reason otherwise."""
        claims = self._verified.get(token)
        if claims is not None:
            if now_ns // NS < claims.exp + self.leeway_s:
                return claims
            del self._verified[token]
            raise AuthenticationFailed(Reason.EXPIRED_TOKEN)
        claims = self._verify(token, now_ns)
        if len(self._verified) >= self.cache_max:
            self._evict(now_ns)
        self._verified[token] = claims
        return claims

    def _verify(self, token: str, now_ns: int) -> Claims:
        if len(token) > MAX_TOKEN_LEN or token.count(".") != 2:
            raise AuthenticationFailed(Reason.MALFORMED_TOKEN)
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise AuthenticationFailed(Reason.MALFORMED_TOKEN) from None
        if header.get("alg") != ALGORITHM:
            raise AuthenticationFailed(Reason.UNSUPPORTED_ALGORITHM)
        kid = header.get("kid")
        key = self.ring.public(kid) if isinstance(kid, str) else None
        if key is None:
            raise AuthenticationFailed(Reason.UNKNOWN_SIGNING_KEY)
        try:
            payload = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway_s,
                # Times are checked below against our clock (PyJWT would read its own).
                options={
                    "require": ["exp", "iat", "nbf", "sub", "jti"],
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                },
            )
        except jwt.PyJWTError as exc:
            for kind, reason in _ERRORS:
                if isinstance(exc, kind):
                    raise AuthenticationFailed(reason) from None
            raise AuthenticationFailed(Reason.MALFORMED_TOKEN) from None
        now = now_ns // NS
        try:
            claims = _claims(payload)
        except (msgspec.ValidationError, TypeError, ValueError):
            raise AuthenticationFailed(Reason.MALFORMED_TOKEN) from None
        nbf = payload["nbf"]
        if not 0 <= claims.tier <= 5 or not isinstance(nbf, int) or isinstance(nbf, bool):
            raise AuthenticationFailed(Reason.MALFORMED_TOKEN)
        if now >= claims.exp + self.leeway_s:
            raise AuthenticationFailed(Reason.EXPIRED_TOKEN)
        if now + self.leeway_s < nbf:
            raise AuthenticationFailed(Reason.TOKEN_NOT_YET_VALID)
        return claims

    def _evict(self, now_ns: int) -> None:
        now = now_ns // NS
        for token in [t for t, c in self._verified.items() if c.exp + self.leeway_s <= now]:
            del self._verified[token]
        if len(self._verified) >= self.cache_max:
            self._verified.clear()


def _claims(payload: dict[str, Any]) -> Claims:
    scope = payload.get("scope", "")
    if not isinstance(scope, str):
        raise ValueError("scope must be a string")
    return msgspec.convert(
        {
            "sub": payload["sub"],
            "tier": payload.get("tier", 0),
            "scope": frozenset(scope.split()),
            "exp": payload["exp"],
            "iat": payload["iat"],
            "jti": payload["jti"],
            "akid": payload.get("akid"),
            "act": payload.get("act"),
            "cid": payload.get("cid"),
            "amr": payload.get("amr", []),
        },
        Claims,
        strict=True,
    )
