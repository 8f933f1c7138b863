"""TOTP against the RFC vectors, drift, and arbitrary input."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from authgate.identity.totp import (
    decode_secret,
    hotp,
    new_secret,
    provisioning_uri,
    totp,
    verify,
)

RFC_KEY = b"12345678901234567890"


def test_rfc_4226_hotp_vectors() -> None:
    expected = [
        "755224",
        "287082",
        "359152",
        "969429",
        "338314",
        "254676",
        "287922",
        "162583",
        "399871",
        "520489",
    ]
    assert [hotp(RFC_KEY, i) for i in range(10)] == expected


@pytest.mark.parametrize(
    ("t", "code"),
    [
        (59, "94287082"),
        (1111111109, "07081804"),
        (1111111111, "14050471"),
        (1234567890, "89005924"),
        (2000000000, "69279037"),
        (20000000000, "65353130"),
    ],
)
def test_rfc_6238_sha1_vectors(t: int, code: str) -> None:
    assert totp(RFC_KEY, t, digits=8) == code


def test_one_step_of_drift_either_way_and_no_more() -> None:
    key = decode_secret(new_secret())
    now = 1_800_000_000.0
    assert verify(key, totp(key, now), now) == int(now // 30)
    assert verify(key, totp(key, now - 30), now) == int(now // 30) - 1
    assert verify(key, totp(key, now + 30), now) == int(now // 30) + 1
    far = totp(key, now - 60)
    assert verify(key, far, now) is None or far in (
        totp(key, now - 30),
        totp(key, now),
        totp(key, now + 30),
    )


def test_secrets_and_uris() -> None:
    secret = new_secret()
    assert len(decode_secret(secret)) == 20
    assert decode_secret(secret.lower()) == decode_secret(secret)
    uri = urlsplit(provisioning_uri(secret, "alice@example.org"))
    assert (uri.scheme, uri.netloc) == ("otpauth", "totp")
    assert parse_qs(uri.query)["secret"] == [secret]
    with pytest.raises(ValueError, match="base32"):
        decode_secret("not base32!")


@given(st.text(max_size=12), st.floats(min_value=0, max_value=4e9))
def test_any_code_is_judged_without_error(code: str, now: float) -> None:
    assert verify(RFC_KEY, code, now) in (None, *range(int(now // 30) - 1, int(now // 30) + 2))
