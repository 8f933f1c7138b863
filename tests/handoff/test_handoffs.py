"""Handoff tickets in the domain: format, create and redeem rules, exactly once (memory and
SQLite stores), expiry on a fake clock, sealing, restart."""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from authgate.errors import HandoffRefused, InvalidRequest, Reason
from authgate.handoff import TICKETS, Handoffs, HandoffStore, MemoryHandoffStore, Party
from authgate.handoff.sqlite import SqliteHandoffStore
from authgate.testing import TEST_PEPPER, FakeClock

A = Party("agt_a", "agt_a", 3, frozenset({"chat", "embed", "tune"}), "akida")
B = Party("agt_b", "agt_b", 2, frozenset({"chat"}), "akidb")
C = Party("agt_c", "agt_c", 4, frozenset({"aud:summarizers"}))
CONTEXT = b'{"task":"summarise","doc":"s3://bucket/report.pdf","marker":"ctx-7f3a"}'


@pytest.fixture(params=["memory", "sqlite", "sqlite-fsync"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[HandoffStore]:
    s: HandoffStore = (
        MemoryHandoffStore()
        if request.param == "memory"
        else SqliteHandoffStore(tmp_path / "h.db", fsync=request.param == "sqlite-fsync")
    )
    await s.open()
    yield s
    await s.close()


def tickets(store: HandoffStore, clock: FakeClock | None = None) -> Handoffs:
    return Handoffs(store, TEST_PEPPER, clock or FakeClock(), max_context_bytes=1024)


async def test_the_recipient_redeems_once_and_gets_the_context(store: HandoffStore) -> None:
    h = tickets(store)
    ticket, record = await h.create(A, B.actor, frozenset({"chat"}), CONTEXT, 60)
    won = await h.redeem(ticket, B)
    assert won.context == CONTEXT
    assert (won.handoff.subject, won.handoff.creator, won.handoff.scopes) == (
        "agt_a",
        "agt_a",
        frozenset({"chat"}),
    )
    assert won.tier == 2  # min(A's 3, B's 2)
    assert won.act == {"sub": "agt_b", "akid": "akidb"}
    assert record.correlation_id.startswith("cor_")
    with pytest.raises(HandoffRefused) as again:
        await h.redeem(ticket, B)
    assert again.value.reason is Reason.TICKET_REDEEMED
    assert again.value.ticket is not None
    assert again.value.ticket["correlation_id"] == record.correlation_id


async def test_scopes_narrow_and_never_widen(store: HandoffStore) -> None:
    h = tickets(store)
    _, everything = await h.create(A, B.actor, None, b"{}")
    assert everything.scopes == A.scopes
    with pytest.raises(HandoffRefused) as wider:
        await h.create(A, B.actor, frozenset({"chat", "admin"}), b"{}")
    assert wider.value.reason is Reason.MISSING_SCOPE


async def test_a_wrong_recipient_is_refused_and_does_not_use_the_ticket_up(
    store: HandoffStore,
) -> None:
    h = tickets(store)
    ticket, _ = await h.create(A, B.actor, None, CONTEXT)
    with pytest.raises(HandoffRefused) as wrong:
        await h.redeem(ticket, C)
    assert wrong.value.reason is Reason.WRONG_RECIPIENT
    assert (await h.redeem(ticket, B)).context == CONTEXT


async def test_an_audience_ticket_goes_to_whoever_holds_the_audience_scope(
    store: HandoffStore,
) -> None:
    h = tickets(store)
    ticket, _ = await h.create(A, "aud:summarizers", None, b"{}")
    with pytest.raises(HandoffRefused):
        await h.redeem(ticket, B)
    assert (await h.redeem(ticket, C)).handoff.redeemed_ns is None  # the record as it was


async def test_expiry_follows_the_clock(store: HandoffStore) -> None:
    clock = FakeClock()
    h = tickets(store, clock)
    ticket, _ = await h.create(A, B.actor, None, b"{}", ttl_s=30)
    clock.advance(30)
    with pytest.raises(HandoffRefused) as late:
        await h.redeem(ticket, B)
    assert late.value.reason is Reason.TICKET_EXPIRED
    clock.advance(3600 + 1)  # past keep_expired_s
    assert await h.purge() == 1
    with pytest.raises(HandoffRefused) as gone:
        await h.redeem(ticket, B)
    assert gone.value.reason is Reason.UNKNOWN_TICKET


async def test_exactly_one_of_100_concurrent_redeems_wins(store: HandoffStore) -> None:
    h = tickets(store)
    ticket, _ = await h.create(A, B.actor, None, CONTEXT)
    results = await asyncio.gather(
        *(h.redeem(ticket, B) for _ in range(100)), return_exceptions=True
    )
    won = [r for r in results if not isinstance(r, BaseException)]
    lost = [r for r in results if isinstance(r, HandoffRefused)]
    assert len(won) == 1
    assert won[0].context == CONTEXT
    assert len(lost) == 99
    assert {r.reason for r in lost} == {Reason.TICKET_REDEEMED}


async def test_a_chain_keeps_every_actor_and_never_widens(store: HandoffStore) -> None:
    h = tickets(store)
    first, _ = await h.create(A, B.actor, frozenset({"chat", "embed"}), b"{}")
    won_b = await h.redeem(first, B)
    # B now acts for A with the handoff's scopes and tier (what its delegated token says)
    b_for_a = Party(
        "agt_b",
        won_b.handoff.subject,
        won_b.tier,
        won_b.handoff.scopes,
        won_b.handoff.akid,
        won_b.act,
        won_b.handoff.correlation_id,
    )
    with pytest.raises(HandoffRefused):
        await h.create(b_for_a, "agt_c", frozenset({"tune"}), b"{}")  # A had it; B does not
    second, record = await h.create(b_for_a, "agt_c", frozenset({"chat"}), b"{}")
    assert record.correlation_id == won_b.handoff.correlation_id  # one piece of work
    won_c = await h.redeem(second, C)
    assert won_c.handoff.subject == "agt_a"
    assert won_c.act == {"sub": "agt_c", "act": {"sub": "agt_b", "akid": "akidb"}}
    assert won_c.tier == 2  # C is tier 4, but the chain passed through B's 2
    assert won_c.handoff.scopes == frozenset({"chat"})


async def test_bad_input_is_refused_before_anything_is_stored(store: HandoffStore) -> None:
    h = tickets(store)
    with pytest.raises(InvalidRequest):
        await h.create(A, B.actor, None, b"x" * 1025)
    for ttl in (0, -1, 3601):
        with pytest.raises(InvalidRequest):
            await h.create(A, B.actor, None, b"{}", ttl)
    for junk in ("", "agh_", "agk_" + "x" * 53, TICKETS.new()[0]):  # the last: never issued
        with pytest.raises(HandoffRefused) as refused:
            await h.redeem(junk, B)
        assert refused.value.reason is Reason.UNKNOWN_TICKET


async def test_a_guessed_secret_for_a_real_ticket_id_is_unknown(store: HandoffStore) -> None:
    h = tickets(store)
    _, record = await h.create(A, B.actor, None, CONTEXT)
    forged, _ = TICKETS.new(record.ticket_id)
    with pytest.raises(HandoffRefused) as refused:
        await h.redeem(forged, B)
    assert refused.value.reason is Reason.UNKNOWN_TICKET


def _row_of(path: Path, ticket_id: str) -> tuple[object, ...]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        query = "SELECT redeemed_by, sealed FROM handoffs WHERE ticket_id = ?"
        return tuple(db.execute(query, (ticket_id,)).fetchone())


def _everything_in(directory: Path) -> bytes:
    return b"".join(p.read_bytes() for p in directory.iterdir())


async def test_the_sqlite_file_holds_neither_ticket_nor_context_and_survives_restart(
    tmp_path: Path,
) -> None:
    path = tmp_path / "h.db"
    first = SqliteHandoffStore(path)
    await first.open()
    ticket, _ = await tickets(first).create(A, B.actor, None, CONTEXT)
    await first.close()
    raw = _everything_in(tmp_path)
    assert b"ctx-7f3a" not in raw
    assert ticket.split("_")[2][:32].encode() not in raw
    second = SqliteHandoffStore(path)
    await second.open()
    try:
        won = await tickets(second).redeem(ticket, B)
        assert won.context == CONTEXT
    finally:
        await second.close()
    stored = _row_of(path, won.handoff.ticket_id)
    assert stored == ("agt_b", b"")  # redeemed by B, and the context is erased


async def test_exactly_once_holds_across_two_processes_sharing_the_file(tmp_path: Path) -> None:
    """Two stores on one file stand for two workers: each claim is one write transaction."""
    path = tmp_path / "h.db"
    one, two = SqliteHandoffStore(path), SqliteHandoffStore(path)
    await one.open()
    await two.open()
    try:
        ticket, _ = await tickets(one).create(A, B.actor, None, CONTEXT)
        results = await asyncio.gather(
            *(tickets(s).redeem(ticket, B) for s in (one, two) * 50), return_exceptions=True
        )
        assert sum(not isinstance(r, BaseException) for r in results) == 1
        lost = {r.reason for r in results if isinstance(r, HandoffRefused)}
        assert lost == {Reason.TICKET_REDEEMED}
    finally:
        await one.close()
        await two.close()


def _redeem_all(path: str, tickets_: list[str], start: Any) -> list[str]:
    """One worker process: wait for the others, then try to redeem every ticket."""

    async def run() -> list[str]:
        store = SqliteHandoffStore(Path(path))
        await store.open()
        won = []
        for ticket in tickets_:
            try:
                await tickets(store).redeem(ticket, B)
                won.append(ticket)
            except HandoffRefused as exc:
                if exc.reason is not Reason.TICKET_REDEEMED:
                    raise
        await store.close()
        return won

    start.wait()
    return asyncio.run(run())


def test_exactly_once_holds_across_worker_processes(tmp_path: Path) -> None:
    """Four processes race to redeem the same 200 tickets in the same order on one file:
    real parallelism, so the store's conditional UPDATE is what decides each race."""
    path = tmp_path / "h.db"

    async def create() -> list[str]:
        store = SqliteHandoffStore(path)
        await store.open()
        made = [(await tickets(store).create(A, B.actor, None, b"{}"))[0] for _ in range(200)]
        await store.close()
        return made

    made = asyncio.run(create())
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager:
        start = manager.Barrier(4)
        with context.Pool(4) as pool:
            runs = pool.starmap(_redeem_all, [(str(path), made, start)] * 4)
    winners = [ticket for run in runs for ticket in run]
    assert sorted(winners) == sorted(made)  # every ticket won once, none twice


@given(st.text(max_size=80))
def test_ticket_parsing_never_raises(text: str) -> None:
    parsed = TICKETS.parse(text)
    assert parsed is None or TICKETS.parse(text) == parsed


@given(st.data())
def test_every_single_character_change_of_a_ticket_is_caught(data: st.DataObject) -> None:
    ticket, _ = TICKETS.new()
    i = data.draw(st.integers(0, len(ticket) - 1))
    other = data.draw(st.characters(codec="ascii").filter(lambda c: c != ticket[i]))
    assert TICKETS.parse(ticket[:i] + other + ticket[i + 1 :]) is None


def test_a_ticket_is_not_an_api_key() -> None:
    from authgate.identity.keys import parse_key

    ticket, _ = TICKETS.new()
    assert ticket.startswith("agh_")
    assert parse_key(ticket) is None
    assert json.loads(msgspec.json.encode({"t": ticket}))["t"] == ticket


async def test_purge_removes_every_long_expired_ticket_in_batches(store: HandoffStore) -> None:
    clock = FakeClock()
    h = tickets(store, clock)
    old = [(await h.create(A, B.actor, None, b"{}", ttl_s=10))[0] for _ in range(2500)]
    clock.advance(3600)
    fresh, _ = await h.create(A, B.actor, None, b"{}", ttl_s=10)
    clock.advance(20)  # the old ones expired more than keep_expired_s (3600 s) ago
    assert await h.purge() == 2500
    with pytest.raises(HandoffRefused) as gone:
        await h.redeem(old[0], B)
    assert gone.value.reason is Reason.UNKNOWN_TICKET
    with pytest.raises(HandoffRefused) as kept:
        await h.redeem(fresh, B)
    assert kept.value.reason is Reason.TICKET_EXPIRED  # expired, but not purged yet
