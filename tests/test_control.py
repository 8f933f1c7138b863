"""The admin API: tier-5 only, JSON in and out, stable error codes, audited changes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from authgate.audit.event import EventType
from authgate.control.app import build_admin_app
from authgate.identity.ids import Kind
from authgate.testing import Harness


@pytest.fixture
async def admin(bed: Harness) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    root = await bed.identity.create_principal(Kind.SYSTEM, "root", 5)
    key = (await bed.identity.issue_key(root.id)).key
    app = build_admin_app(bed.identity, bed.sink, bed.clock)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://admin") as client:
        yield client, key


async def test_credentials_are_required_and_must_be_tier_5(
    bed: Harness, admin: tuple[httpx.AsyncClient, str]
) -> None:
    client, _ = admin
    assert (await client.get("/admin/principals")).status_code == 401
    user = await bed.identity.create_principal(Kind.USER, "u", 4)
    weak = (await bed.identity.issue_key(user.id)).key
    denied = await client.get("/admin/principals", headers={"Authorization": f"Bearer {weak}"})
    assert denied.status_code == 403
    assert denied.json()["error"] == "forbidden"
    bad = await client.get("/admin/principals", headers={"Authorization": "Bearer agk_x"})
    assert bad.status_code == 401
    assert bad.json()["error"] == "authentication_failed"


async def test_principal_and_key_lifecycle(
    bed: Harness, admin: tuple[httpx.AsyncClient, str]
) -> None:
    client, key = admin
    auth = {"Authorization": f"Bearer {key}"}
    made = await client.post(
        "/admin/principals", json={"name": "planner", "kind": "agt", "tier": 3}, headers=auth
    )
    assert made.status_code == 200
    pid = made.json()["id"]
    issued = (await client.post(f"/admin/principals/{pid}/keys", json={}, headers=auth)).json()
    assert issued["key"].startswith("agk_")
    decision = bed.engine.decide("GET", "/v1/models", {"x-api-key": issued["key"]})
    assert decision.allowed
    revoked = await client.post(f"/admin/keys/{issued['key_id']}/revoke", headers=auth)
    assert revoked.json()["status"] == "revoked"
    assert not bed.engine.decide("GET", "/v1/models", {"x-api-key": issued["key"]}).allowed
    shown = (await client.get("/admin/principals/planner", headers=auth)).json()
    assert [k["status"] for k in shown["keys"]] == ["revoked"]
    assert "secret_hash" not in str(shown)
    elevated = await client.post(
        f"/admin/principals/{pid}/elevate", json={"tier": 5, "duration_s": 60}, headers=auth
    )
    assert elevated.json()["effective_tier"] == 5
    disabled = await client.post(f"/admin/principals/{pid}/disable", headers=auth)
    assert disabled.json()["disabled"]
    admin_events = [e for e in bed.sink.events if e.type is EventType.ADMIN]
    assert [e.action for e in admin_events] == [
        "principal.add",
        "key.issue",
        "key.revoke",
        "principal.elevate",
        "principal.disable",
    ]


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code"),
    [
        ("POST", "/admin/principals", {"name": "x", "tier": 9}, 400, "invalid_request"),
        ("POST", "/admin/principals", {"name": "x", "colour": 1}, 400, "invalid_request"),
        ("POST", "/admin/principals", {"name": "x", "kind": "bot"}, 400, "invalid_request"),
        ("POST", "/admin/principals", {"name": "root"}, 409, "conflict"),
        ("GET", "/admin/principals/nobody", None, 404, "not_found"),
        ("POST", "/admin/keys/zzzzzzzzzzzz/revoke", None, 404, "not_found"),
    ],
)
async def test_errors_carry_stable_codes(
    admin: tuple[httpx.AsyncClient, str],
    method: str,
    path: str,
    body: object,
    status: int,
    code: str,
) -> None:
    client, key = admin
    answer = await client.request(
        method, path, json=body, headers={"Authorization": f"Bearer {key}"}
    )
    assert (answer.status_code, answer.json()["error"]) == (status, code)


async def test_malformed_json_is_invalid_request(admin: tuple[httpx.AsyncClient, str]) -> None:
    client, key = admin
    answer = await client.post(
        "/admin/principals", content=b"{not json", headers={"Authorization": f"Bearer {key}"}
    )
    assert (answer.status_code, answer.json()["error"]) == (400, "invalid_request")


async def test_audit_endpoints_serve_checkpoints_proofs_and_events(
    bed: Harness, tmp_path: Path
) -> None:
    from authgate.audit import merkle
    from authgate.audit.log import Ledger
    from authgate.audit.note import Signer

    ledger = Ledger(tmp_path, "test.local/w0", Signer.generate("test.local/w0"))
    ledger.open()
    root = await bed.identity.create_principal(Kind.SYSTEM, "root", 5)
    key = (await bed.identity.issue_key(root.id)).key
    app = build_admin_app(bed.identity, ledger, bed.clock, tmp_path)
    auth = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://admin"
    ) as client:
        for name in ("a", "b", "c"):  # three audited admin changes
            made = await client.post("/admin/principals", json={"name": name}, headers=auth)
            assert made.status_code == 200
        ledger.close()  # signs the final checkpoint
        cp = (await client.get("/audit/checkpoint", headers=auth)).json()
        assert cp["size"] == 3
        inc = (await client.get("/audit/proof/inclusion?seq=1", headers=auth)).json()
        merkle.verify_inclusion(
            1,
            3,
            bytes.fromhex(inc["leaf_hash"]),
            [bytes.fromhex(p) for p in inc["proof"]],
            bytes.fromhex(cp["root"]),
        )
        con = (await client.get("/audit/proof/consistency?from=1&to=3", headers=auth)).json()
        merkle.verify_consistency(
            1,
            3,
            [bytes.fromhex(p) for p in con["proof"]],
            bytes.fromhex(con["from_root"]),
            bytes.fromhex(cp["root"]),
        )
        events = (await client.get("/audit/events?type=admin", headers=auth)).json()
        assert [e["action"] for e in events] == ["principal.add"] * 3
        bad = await client.get("/audit/proof/inclusion?seq=x", headers=auth)
        assert (bad.status_code, bad.json()["error"]) == (400, "invalid_request")
        beyond = await client.get("/audit/proof/inclusion?seq=9", headers=auth)
        assert (beyond.status_code, beyond.json()["error"]) == (400, "invalid_proof")
        anonymous = await client.get("/audit/checkpoint")
        assert anonymous.status_code == 401


async def test_second_factor_enrolment_is_audited_without_its_seed(
    bed: Harness, admin: tuple[httpx.AsyncClient, str]
) -> None:
    client, key = admin
    auth = {"Authorization": f"Bearer {key}"}
    await bed.identity.create_principal(Kind.USER, "ada", 3, password="pw")
    enrolled = await client.post("/admin/principals/ada/totp", headers=auth)
    assert enrolled.status_code == 200
    seed = enrolled.json()["totp_secret"]
    removed = await client.delete("/admin/principals/ada/totp", headers=auth)
    assert removed.json()["has_totp"] is False
    actions = [e.action for e in bed.sink.events if e.type == EventType.ADMIN]
    assert actions[-2:] == ["principal.totp", "principal.totp_remove"]
    assert all(seed not in str(e) for e in bed.sink.events)
