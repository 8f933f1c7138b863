"""EdDSA access tokens: issue, verify (each way to be wrong has its reason), the cache of
verified tokens, and the key ring's rotation as a JWKS client sees it."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import jwt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from authgate.errors import AuthenticationFailed, ConfigError, Reason
from authgate.tokens import NS, KeyRing, Tokens, new_signing_key

NOW = 1_800_000_000 * NS


def ring() -> KeyRing:
    return KeyRing((new_signing_key(NOW),))


def tokens(r: KeyRing | None = None, **kw: object) -> Tokens:
    return Tokens(r or ring(), "https://authgate.test", "ai-services", **kw)  # type: ignore[arg-type]


def reason_of(t: Tokens, token: str, now: int = NOW) -> Reason:
    with pytest.raises(AuthenticationFailed) as info:
        t.verify(token, now)
    return info.value.reason


def test_a_token_round_trips_with_its_claims() -> None:
    t = tokens()
    token, issued = t.issue("agt_1", 3, frozenset({"chat", "embed"}), NOW, extra={"akid": "k1"})
    header = jwt.get_unverified_header(token)
    assert (header["alg"], header["kid"]) == ("EdDSA", t.ring.current.kid)
    claims = t.verify(token, NOW)
    assert claims == issued
    assert (claims.sub, claims.tier, claims.scope, claims.akid) == (
        "agt_1",
        3,
        frozenset({"chat", "embed"}),
        "k1",
    )
    assert claims.exp - claims.iat == 900
    payload = jwt.decode(token, options={"verify_signature": False})
    assert (payload["iss"], payload["aud"], payload["scope"]) == (
        "https://authgate.test",
        "ai-services",
        "chat embed",
    )


def _flip(part: str) -> str:
    return part[:-2] + ("A" if part[-2] != "A" else "B") + part[-1]


def test_tampering_breaks_the_signature() -> None:
    t = tokens()
    token, _ = t.issue("agt_1", 1, frozenset(), NOW)
    head, body, sig = token.split(".")
    assert reason_of(t, f"{head}.{body}.{_flip(sig)}") is Reason.INVALID_SIGNATURE
    payload = json.loads(base64.urlsafe_b64decode(body + "=="))
    payload["tier"] = 5
    forged = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode()
    assert reason_of(t, f"{head}.{forged}.{sig}") is Reason.INVALID_SIGNATURE


def test_other_algorithms_are_refused() -> None:
    t = tokens()
    kid = t.ring.current.kid
    claims = {"sub": "agt_1", "iat": 0, "nbf": 0, "exp": 2_000_000_000, "jti": "x"}
    claims |= {"iss": "https://authgate.test", "aud": "ai-services", "tier": 5}
    none = jwt.encode(claims, "", algorithm="none", headers={"kid": kid})
    assert reason_of(t, none) is Reason.UNSUPPORTED_ALGORITHM
    public = t.ring.current.public_bytes()
    hs = jwt.encode(claims, public, algorithm="HS256", headers={"kid": kid})
    assert reason_of(t, hs) is Reason.UNSUPPORTED_ALGORITHM


def test_time_audience_issuer_and_key_are_checked() -> None:
    r = ring()
    t = tokens(r, leeway_s=30)
    token, claims = t.issue("agt_1", 1, frozenset(), NOW, lifetime_s=60)
    assert t.verify(token, NOW + 89 * NS) == claims  # within exp + leeway
    assert reason_of(tokens(r), token, NOW + 91 * NS) is Reason.EXPIRED_TOKEN
    assert reason_of(t, token, NOW + 91 * NS) is Reason.EXPIRED_TOKEN  # cached, too
    assert reason_of(tokens(r), token, NOW - 31 * NS) is Reason.TOKEN_NOT_YET_VALID
    other = Tokens(r, "https://authgate.test", "someone-else")
    assert reason_of(other, token) is Reason.WRONG_AUDIENCE
    stranger = Tokens(r, "https://elsewhere.test", "ai-services")
    assert reason_of(stranger, token) is Reason.WRONG_ISSUER
    assert reason_of(tokens(), token) is Reason.UNKNOWN_SIGNING_KEY  # another ring


def test_a_verified_token_is_not_verified_again(monkeypatch: pytest.MonkeyPatch) -> None:
    t = tokens()
    token, claims = t.issue("agt_1", 1, frozenset(), NOW)
    calls = 0
    real = t._verify

    def counting(token: str, now_ns: int) -> object:
        nonlocal calls
        calls += 1
        return real(token, now_ns)

    monkeypatch.setattr(t, "_verify", counting)
    assert [t.verify(token, NOW + i * NS) for i in range(5)] == [claims] * 5
    assert calls == 1


def test_rotation_keeps_old_tokens_valid_until_they_expire(tmp_path: Path) -> None:
    path = tmp_path / "token-keys.json"
    first = ring()
    first.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    old_token, _ = tokens(KeyRing.load(path)).issue("agt_1", 1, frozenset(), NOW)

    rotated = KeyRing.load(path).rotate(NOW + 10 * NS)
    rotated.save(path)
    t = tokens(KeyRing.load(path))
    new_token, _ = t.issue("agt_1", 1, frozenset(), NOW + 10 * NS)
    assert (
        jwt.get_unverified_header(new_token)["kid"] != jwt.get_unverified_header(old_token)["kid"]
    )
    jwks = t.ring.jwks()
    assert len(jwks["keys"]) == 2
    for token in (old_token, new_token):  # a JWKS client verifies both
        kid = jwt.get_unverified_header(token)["kid"]
        jwk = next(k for k in jwks["keys"] if k["kid"] == kid)
        key = jwt.PyJWK(jwk).key
        jwt.decode(
            token,
            key,
            algorithms=["EdDSA"],
            audience="ai-services",
            options={"verify_exp": False, "verify_nbf": False, "verify_iat": False},
        )
        assert t.verify(token, NOW + 20 * NS).sub == "agt_1"

    pruned = t.ring.prune(NOW + 10 * NS + 929 * NS, 900, 30)
    assert len(pruned.keys) == 2  # an old token may still be valid
    pruned = t.ring.prune(NOW + 10 * NS + 931 * NS, 900, 30)
    assert [k.kid for k in pruned.keys] == [t.ring.current.kid]
    assert reason_of(tokens(pruned), old_token, NOW + 20 * NS) is Reason.UNKNOWN_SIGNING_KEY


def test_a_broken_key_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    path.write_text('{"keys": []}')
    with pytest.raises(ConfigError, match="no signing key"):
        KeyRing.load(path)
    path.write_text("{nope")
    with pytest.raises(ConfigError, match="malformed"):
        KeyRing.load(path)
    with pytest.raises(ConfigError, match="cannot read"):
        KeyRing.load(tmp_path / "missing.json")


SHARED = tokens()


@given(st.text(max_size=300))
def test_any_string_is_refused_cleanly(value: str) -> None:
    with pytest.raises(AuthenticationFailed):
        SHARED.verify(value, NOW)


@given(st.lists(st.text(alphabet="ABCDEFabcdef0123456789-_", max_size=60), min_size=3, max_size=3))
def test_any_three_part_token_is_refused_cleanly(parts: list[str]) -> None:
    with pytest.raises(AuthenticationFailed):
        SHARED.verify(".".join(parts), NOW)
