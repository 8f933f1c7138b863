"""POST /v1/token (client credentials) and the JWKS, over a real socket."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator

import jwt
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from authgate.config import Settings, Tier
from authgate.dataplane.app import build_router
from authgate.identity.ids import Kind
from authgate.identity.totp import decode_secret, totp
from authgate.testing import Harness, fast_passwords, make_harness
from tests.dataplane.conftest import running
from tests.dataplane.gateway import fetch


@pytest.fixture
async def bed() -> AsyncIterator[Harness]:
    harness = await make_harness(Settings(passwords=fast_passwords()))
    yield harness
    await harness.identity.close()


async def client(bed: Harness, scopes: tuple[str, ...] = ("chat", "embed")) -> tuple[str, str]:
    p = await bed.identity.create_principal(
        Kind.SERVICE, f"svc{len(bed.store.principals)}", 2, scopes
    )
    issued = await bed.identity.issue_key(p.id)
    return issued.key, issued.record.key_id


def post(body: bytes, *headers: str, kind: str = "application/x-www-form-urlencoded") -> bytes:
    lines = ["POST /v1/token HTTP/1.1", "Host: t", f"Content-Type: {kind}", *headers]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join([*lines, "", ""])).encode() + body


def basic(user: str, password: str) -> str:
    return "Authorization: Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


async def test_client_credentials_give_a_token_that_the_data_plane_accepts(bed: Harness) -> None:
    key, kid = await client(bed)
    router = build_router(bed.engine, lambda: {"ok": True})
    async with running(router) as (_, port):
        status, headers, body = await fetch(
            port, post(b"grant_type=client_credentials&scope=chat", basic(kid, key))
        )
        answer = json.loads(body)
        token = answer["access_token"]
        get = "GET /v1/authorize/v1/models HTTP/1.1\r\nHost: t\r\n"
        allowed = await fetch(port, f"{get}Authorization: Bearer {token}\r\n\r\n".encode())
        jwks_status, _, jwks = await fetch(
            port, b"GET /.well-known/jwks.json HTTP/1.1\r\nHost: t\r\n\r\n"
        )
    assert (status, answer["token_type"], answer["scope"], answer["expires_in"]) == (
        200,
        "Bearer",
        "chat",
        900,
    )
    assert headers["cache-control"] == "no-store"
    assert allowed[0] == 200
    assert allowed[1]["x-auth-scopes"] == "chat"
    assert allowed[1]["x-auth-key-id"] == kid
    jwk = json.loads(jwks)["keys"][0]
    claims = jwt.decode(
        token,
        jwt.PyJWK(jwk).key,
        algorithms=["EdDSA"],
        audience="authgate",
        options={"verify_exp": False, "verify_nbf": False, "verify_iat": False},
    )
    assert (jwks_status, claims["akid"], claims["tier"]) == (200, kid, 2)
    assert [e.reason for e in bed.sink.events if e.type == "token"] == ["ok"]


async def test_json_bodies_bearer_keys_and_the_secret_alone_work(bed: Harness) -> None:
    key, kid = await client(bed)
    secret = key.split("_", 2)[2]
    router = build_router(bed.engine, lambda: {"ok": True})
    async with running(router) as (_, port):
        as_json = await fetch(
            port,
            post(
                b'{"grant_type": "client_credentials"}',
                f"Authorization: Bearer {key}",
                kind="application/json",
            ),
        )
        secret_only = await fetch(port, post(b"grant_type=client_credentials", basic(kid, secret)))
    assert json.loads(as_json[2])["scope"] == "chat embed"
    assert secret_only[0] == 200


async def test_errors_follow_rfc_6749(bed: Harness) -> None:
    key, kid = await client(bed, ("chat",))
    router = build_router(bed.engine, lambda: {"ok": True})
    async with running(router) as (_, port):
        wider = await fetch(
            port, post(b"grant_type=client_credentials&scope=chat+admin", basic(kid, key))
        )
        grant = await fetch(port, post(b"grant_type=password", basic(kid, key)))
        nobody = await fetch(port, post(b"grant_type=client_credentials"))
        wrong = await fetch(
            port,
            post(
                b"grant_type=client_credentials",
                basic(kid, key[:-1] + ("0" if key[-1] != "0" else "1")),
            ),
        )
        bad_json = await fetch(port, post(b"{", basic(kid, key), kind="application/json"))
        get = await fetch(port, b"GET /v1/token HTTP/1.1\r\nHost: t\r\n\r\n")
    assert (wider[0], json.loads(wider[2])["error"]) == (400, "invalid_scope")
    assert (grant[0], json.loads(grant[2])["error"]) == (400, "unsupported_grant_type")
    assert (nobody[0], json.loads(nobody[2])["error"]) == (401, "invalid_client")
    assert nobody[1]["www-authenticate"] == 'Basic realm="authgate"'
    assert (wrong[0], json.loads(wrong[2])["error"]) == (401, "invalid_client")
    assert (bad_json[0], json.loads(bad_json[2])["error"]) == (400, "invalid_request")
    assert (get[0], get[1]["allow"]) == (405, "POST")
    reasons = [e.reason for e in bed.sink.events if e.type == "token"]
    assert "invalid_secret" in reasons or "malformed_credential" in reasons


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    st.binary(max_size=200),
    st.sampled_from(["application/json", "application/x-www-form-urlencoded", "text/plain"]),
    st.text(max_size=40),
)
def test_any_body_or_authorization_is_answered_cleanly(body: bytes, kind: str, auth: str) -> None:
    async def run() -> int:
        harness = await make_harness(Settings(passwords=fast_passwords()))
        router = build_router(harness.engine, lambda: {"ok": True})
        request = post(body, kind=kind)
        safe = "".join(c for c in auth if c.isprintable() and c.isascii())
        if safe.strip():
            request = post(body, f"Authorization: {safe.strip()}", kind=kind)
        async with running(router) as (_, port):
            status, _, _ = await fetch(port, request)
        await harness.identity.close()
        return status

    assert asyncio.run(run()) in (400, 401)


async def test_token_requests_count_against_the_tier_limit() -> None:
    tiers = tuple(
        Tier(level=i, name=n, requests_per_minute=60, burst=2)
        for i, n in enumerate(["guest", "user", "advanced", "trusted", "privileged", "system"])
    )
    bed = await make_harness(Settings(tiers=tiers, passwords=fast_passwords()))
    key, kid = await client(bed)
    router = build_router(bed.engine, lambda: {"ok": True})
    async with running(router) as (_, port):
        answers = [
            await fetch(port, post(b"grant_type=client_credentials", basic(kid, key)))
            for _ in range(3)
        ]
    await bed.identity.close()
    assert [a[0] for a in answers] == [200, 200, 429]
    assert answers[2][1]["retry-after"] == "1"
    assert json.loads(answers[2][2])["error"] == "rate_limited"
    assert [e.reason for e in bed.sink.events if e.type == "token"][-1] == "rate_limited"


async def test_login_gives_users_a_token_and_locks_out_guessers(bed: Harness) -> None:
    await bed.identity.create_principal(Kind.USER, "alice", 2, ("chat",), password="s3cret pw")
    router = build_router(bed.engine, lambda: {"ok": True}, identity=bed.identity)

    def login(body: bytes) -> bytes:
        return post(body, kind="application/json").replace(b"/v1/token", b"/v1/login")

    async with running(router) as (_, port):
        good = await fetch(port, login(b'{"username": "alice", "password": "s3cret pw"}'))
        token = json.loads(good[2])["access_token"]
        get = "GET /v1/authorize/v1/models HTTP/1.1\r\nHost: t\r\n"
        allowed = await fetch(port, f"{get}Authorization: Bearer {token}\r\n\r\n".encode())
        bad = await fetch(port, login(b'{"username": "alice", "password": "guess"}'))
        nobody = await fetch(port, login(b'{"username": "mallory", "password": "guess"}'))
        broken = await fetch(port, login(b'{"username": 1}'))
        for _ in range(5):
            await fetch(port, login(b'{"username": "alice", "password": "guess"}'))
        locked = await fetch(port, login(b'{"username": "alice", "password": "s3cret pw"}'))
    assert (good[0], json.loads(good[2])["scope"]) == (200, "chat")
    assert (allowed[0], allowed[1]["x-auth-tier"]) == (200, "2")
    assert (bad[0], json.loads(bad[2])["error"]) == (401, "invalid_grant")
    assert (nobody[0], json.loads(nobody[2])["error"]) == (401, "invalid_grant")
    assert broken[0] == 400
    assert (locked[0], json.loads(locked[2])["error"]) == (429, "locked_out")
    assert int(locked[1]["retry-after"]) > 0
    reasons = [e.reason for e in bed.sink.events if e.action == "login"]
    assert reasons[:4] == ["ok", "invalid_password", "unknown_principal", "malformed_request"]
    assert reasons[-1] == "locked_out"


async def test_guarded_tiers_ask_a_password_login_to_step_up_with_its_second_factor() -> None:
    """passwords.second_factor_tiers = [3]: the fine-tuning route (tier 3) answers a
    password-only token with an RFC 9470 step-up challenge; a login with the TOTP code
    gets through; a wrong code is invalid_grant, audited as invalid_second_factor."""
    passwords = msgspec.structs.replace(fast_passwords(), second_factor_tiers=(3,))
    bed = await make_harness(Settings(passwords=passwords))
    await bed.identity.create_principal(
        Kind.USER, "root", 3, ("chat", "fine-tune"), password="s3cret pw"
    )
    _, seed, _ = await bed.identity.enroll_totp("root")
    router = build_router(bed.engine, lambda: {"ok": True}, identity=bed.identity)
    code = totp(decode_secret(seed), bed.clock.ns / 1e9)
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"

    def login(otp: str | None) -> bytes:
        body = {"username": "root", "password": "s3cret pw", **({"otp": otp} if otp else {})}
        raw = post(json.dumps(body).encode(), kind="application/json")
        return raw.replace(b"/v1/token", b"/v1/login")

    async def ask(token: str, path: str) -> tuple[int, dict[str, str], bytes]:
        get = f"GET /v1/authorize{path} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}"
        return await fetch(port, f"{get}\r\n\r\n".encode())

    async with running(router) as (_, port):
        password_only = json.loads((await fetch(port, login(None)))[2])["access_token"]
        light = await ask(password_only, "/v1/models")
        guarded = await ask(password_only, "/v1/fine_tuning/jobs")
        refused = await fetch(port, login(wrong))
        both = json.loads((await fetch(port, login(code)))[2])["access_token"]
        stepped_up = await ask(both, "/v1/fine_tuning/jobs")
    await bed.identity.close()
    assert jwt.decode(password_only, options={"verify_signature": False})["amr"] == ["pwd"]
    assert jwt.decode(both, options={"verify_signature": False})["amr"] == ["pwd", "otp"]
    assert light[0] == 200
    assert guarded[0] == 401
    assert 'error="insufficient_user_authentication"' in guarded[1]["www-authenticate"]
    assert json.loads(guarded[2])["error"] == "step_up_required"
    assert (refused[0], json.loads(refused[2])["error"]) == (401, "invalid_grant")
    assert stepped_up[0] == 200
    decided = [(e.outcome, e.reason) for e in bed.sink.events if e.action == "decide"]
    assert decided == [("allow", "ok"), ("step_up", "step_up_required"), ("allow", "ok")]
    logins = [e.reason for e in bed.sink.events if e.action == "login"]
    assert logins == ["ok", "invalid_second_factor", "ok"]
