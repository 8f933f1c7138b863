"""POST /v1/handoffs and /v1/handoffs/redeem over a real socket: the whole handoff, the
delegated token at work, chains, exactly once over HTTP, and every refusal audited."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from authgate.audit.event import EventType
from authgate.config import Settings
from authgate.dataplane.app import build_router
from authgate.handoff import TICKETS, Handoffs
from authgate.handoff.sqlite import SqliteHandoffStore
from authgate.identity.ids import Kind
from authgate.testing import TEST_PEPPER, Harness, fast_passwords, make_harness
from tests.dataplane.conftest import running
from tests.dataplane.gateway import fetch


@pytest.fixture
async def bed() -> AsyncIterator[Harness]:
    harness = await make_harness(Settings(passwords=fast_passwords()))
    yield harness
    await harness.identity.close()


async def agent(bed: Harness, name: str, tier: int, *scopes: str) -> tuple[str, str]:
    p = await bed.identity.create_principal(Kind.AGENT, name, tier, scopes)
    return p.id, (await bed.identity.issue_key(p.id)).key


def post(path: str, credential: str | None, body: object) -> bytes:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    auth = f"Authorization: Bearer {credential}\r\n" if credential else ""
    return (
        f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n{auth}"
        f"Content-Length: {len(data)}\r\n\r\n"
    ).encode() + data


async def call(port: int, path: str, credential: str | None, body: object) -> tuple[int, Any]:
    status, _, raw = await fetch(port, post(path, credential, body))
    return status, json.loads(raw)


async def use(port: int, token: str) -> tuple[int, dict[str, str]]:
    get = f"GET /v1/authorize/v1/models HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}"
    status, headers, _ = await fetch(port, f"{get}\r\n\r\n".encode())
    return status, headers


def router_for(bed: Harness, handoffs: Handoffs | None = None) -> Any:
    return build_router(bed.engine, lambda: {"ok": True}, handoffs=handoffs or bed.handoffs)


def forge(ticket: str) -> str:
    """A well-formed ticket with the same id and another secret."""
    parts = TICKETS.parse(ticket)
    assert parts is not None
    return TICKETS.new(parts.key_id)[0]


CONTEXT = {"task": "summarise", "doc": "s3://bucket/q3.pdf", "user": {"locale": "de"}}


async def test_create_redeem_and_act_with_the_delegated_token(bed: Harness) -> None:
    a_id, a_key = await agent(bed, "planner", 3, "chat", "embed", "tune")
    b_id, b_key = await agent(bed, "writer", 2, "chat")
    async with running(router_for(bed)) as (_, port):
        created = await call(
            port,
            "/v1/handoffs",
            a_key,
            {"to": "writer", "scopes": "chat embed", "context": CONTEXT, "ttl_s": 60},
        )
        redeemed = await call(port, "/v1/handoffs/redeem", b_key, {"ticket": created[1]["ticket"]})
        status, headers = await use(port, redeemed[1]["access_token"])
    assert created[0] == 201
    assert created[1]["to"] == b_id
    assert created[1]["scopes"] == ["chat", "embed"]
    assert created[1]["ticket"].startswith("agh_")
    answer = redeemed[1]
    assert redeemed[0] == 200
    assert (answer["from"], answer["created_by"], answer["context"]) == (a_id, a_id, CONTEXT)
    assert (answer["tier"], answer["scopes"]) == (2, ["chat", "embed"])
    claims = jwt.decode(answer["access_token"], options={"verify_signature": False})
    assert claims["sub"] == a_id
    assert claims["act"]["sub"] == b_id
    assert claims["cid"] == created[1]["correlation_id"] == answer["correlation_id"]
    assert status == 200
    assert headers["x-auth-principal"] == a_id
    assert headers["x-auth-actor"] == b_id
    assert headers["x-correlation-id"] == answer["correlation_id"]
    correlated = [e for e in bed.sink.events if e.correlation_id == answer["correlation_id"]]
    assert [(e.type, e.action, e.outcome) for e in correlated] == [
        (EventType.HANDOFF, "create", "allow"),
        (EventType.HANDOFF, "redeem", "allow"),
        (EventType.AUTHZ, "decide", "allow"),
    ]
    assert all("s3://bucket" not in str(e) for e in bed.sink.events)  # context is not logged


async def test_a_chain_of_three_agents_keeps_the_act_chain_and_only_narrows(
    bed: Harness,
) -> None:
    a_id, a_key = await agent(bed, "a", 4, "chat", "embed", "tune")
    b_id, b_key = await agent(bed, "b", 3, "chat", "embed")
    c_id, c_key = await agent(bed, "c", 5, "chat", "embed", "tune")
    async with running(router_for(bed)) as (_, port):
        first = await call(port, "/v1/handoffs", a_key, {"to": b_id, "scopes": ["chat", "embed"]})
        b_token = (await call(port, "/v1/handoffs/redeem", b_key, {"ticket": first[1]["ticket"]}))[
            1
        ]["access_token"]
        wider = await call(port, "/v1/handoffs", b_token, {"to": c_id, "scopes": ["tune"]})
        second = await call(port, "/v1/handoffs", b_token, {"to": c_id, "scopes": ["chat"]})
        c_answer = (
            await call(port, "/v1/handoffs/redeem", c_key, {"ticket": second[1]["ticket"]})
        )[1]
        works = await use(port, c_answer["access_token"])
        await bed.identity.set_disabled(b_id, True)  # a link of the chain goes away
        broken = await use(port, c_answer["access_token"])
    assert wider[0] == 403
    assert wider[1]["error"] == "invalid_scope"
    assert second[1]["correlation_id"] == first[1]["correlation_id"]
    claims = jwt.decode(c_answer["access_token"], options={"verify_signature": False})
    assert claims["sub"] == a_id
    assert claims["act"]["sub"] == c_id
    assert claims["act"]["act"]["sub"] == b_id
    assert (claims["tier"], claims["scope"]) == (3, "chat")  # min(4, 3, 5); narrowed twice
    assert works[0] == 200
    assert works[1]["x-auth-tier"] == "3"
    assert broken[0] == 401
    assert bed.sink.last.reason == "disabled_principal"


async def test_exactly_one_of_100_concurrent_http_redeems_wins(
    bed: Harness, tmp_path: Path
) -> None:
    store = SqliteHandoffStore(tmp_path / "handoffs.db")
    await store.open()
    handoffs = Handoffs(store, TEST_PEPPER, bed.clock)
    _, a_key = await agent(bed, "a", 5, "chat")
    b_id, b_key = await agent(bed, "b", 5, "chat")  # tier 5: a burst above 100
    try:
        async with running(router_for(bed, handoffs)) as (_, port):
            ticket = (await call(port, "/v1/handoffs", a_key, {"to": b_id, "context": [1]}))[1][
                "ticket"
            ]
            results = await asyncio.gather(
                *(call(port, "/v1/handoffs/redeem", b_key, {"ticket": ticket}) for _ in range(100))
            )
    finally:
        await store.close()
    statuses = sorted(status for status, _ in results)
    assert statuses == [200] + [409] * 99
    assert {body["error"] for status, body in results if status == 409} == {"ticket_redeemed"}
    replays = [e for e in bed.sink.events if e.reason == "ticket_redeemed"]
    assert len(replays) == 99
    assert all(e.details and e.details["severity"] == "security" for e in replays)


async def test_refusals_are_clear_and_audited_as_security_events(bed: Harness) -> None:
    _, a_key = await agent(bed, "a", 2, "chat")
    b_id, b_key = await agent(bed, "b", 2, "chat")
    _, c_key = await agent(bed, "c", 2, "chat")
    async with running(router_for(bed)) as (_, port):
        ticket = (await call(port, "/v1/handoffs", a_key, {"to": b_id, "ttl_s": 30}))[1]["ticket"]
        wrong = await call(port, "/v1/handoffs/redeem", c_key, {"ticket": ticket})
        forged = await call(port, "/v1/handoffs/redeem", b_key, {"ticket": forge(ticket)})
        bed.clock.advance(31)
        late = await call(port, "/v1/handoffs/redeem", b_key, {"ticket": ticket})
        anonymous = await call(port, "/v1/handoffs/redeem", None, {"ticket": ticket})
    assert (wrong[0], wrong[1]["error"]) == (403, "wrong_recipient")
    assert (forged[0], forged[1]["error"]) == (404, "unknown_ticket")
    assert (late[0], late[1]["error"]) == (410, "ticket_expired")
    assert (anonymous[0], anonymous[1]["error"]) == (401, "unauthorized")
    denials = [e for e in bed.sink.events if e.type == EventType.HANDOFF and e.outcome == "deny"]
    assert [e.reason for e in denials] == [
        "wrong_recipient",
        "unknown_ticket",
        "ticket_expired",
        "missing_credential",
    ]
    assert [e.details and e.details.get("severity") for e in denials[:3]] == ["security"] * 3
    assert denials[0].details
    assert denials[0].details["to"] == b_id
    assert all(ticket not in str(e) for e in bed.sink.events)  # the ticket is never logged


async def test_bad_create_requests(bed: Harness) -> None:
    _, a_key = await agent(bed, "a", 2, "chat")
    b_id, _ = await agent(bed, "b", 2, "chat")
    big = {"to": b_id, "context": "x" * 70_000}
    async with running(router_for(bed)) as (_, port):
        answers = [
            await call(port, "/v1/handoffs", a_key, body)
            for body in (
                {"to": "nobody"},
                {"to": b_id, "scopes": ["admin"]},
                {"to": b_id, "ttl_s": 0},
                {"to": b_id, "surprise": 1},
                {"scopes": ["chat"]},
                b"{not json",
                big,
            )
        ]
        status, headers, _ = await fetch(port, b"GET /v1/handoffs HTTP/1.1\r\nHost: t\r\n\r\n")
    assert [(s, body["error"]) for s, body in answers] == [
        (400, "invalid_recipient"),
        (403, "invalid_scope"),
        (400, "invalid_request"),
        (400, "invalid_request"),
        (400, "invalid_request"),
        (400, "invalid_request"),
        (400, "invalid_request"),
    ]
    assert (status, headers["allow"]) == (405, "POST")


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(["to", "ticket", "scopes", "context", "ttl_s", "x"]), inner, max_size=5
        )
    ),
    max_leaves=12,
)
BODIES = st.one_of(st.binary(max_size=200), JSON.map(lambda v: json.dumps(v).encode()))


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=BODIES)
async def test_no_body_makes_a_500(body: bytes) -> None:
    bed = await make_harness(Settings(passwords=fast_passwords()))
    _, key = await agent(bed, "a", 2, "chat")
    try:
        async with running(router_for(bed)) as (_, port):
            for path in ("/v1/handoffs", "/v1/handoffs/redeem"):
                status, _ = await call(port, path, key, body)
                assert status in {201, 400, 403, 404}, (path, body)
    finally:
        await bed.identity.close()
