"""Principal ids: prefix by kind, time-sortable, unique."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from authgate.identity.ids import Kind, is_principal_id, kind_of, new_principal_id


@given(st.sampled_from(list(Kind)), st.integers(0, 2**47))
def test_ids_carry_their_kind_and_parse(kind: Kind, millis: int) -> None:
    pid = new_principal_id(kind, millis * 1_000_000)
    assert pid.startswith(f"{kind.value}_")
    assert is_principal_id(pid)
    assert kind is kind_of(pid)


@given(st.integers(0, 2**46), st.integers(1, 2**20))
def test_later_ids_sort_after_earlier_ones(millis: int, gap: int) -> None:
    earlier = new_principal_id(Kind.AGENT, millis * 1_000_000)
    later = new_principal_id(Kind.AGENT, (millis + gap) * 1_000_000)
    assert earlier < later


def test_ids_are_unique_within_one_millisecond() -> None:
    ids = {new_principal_id(Kind.USER, 0) for _ in range(10_000)}
    assert len(ids) == 10_000


@given(st.text(max_size=40))
def test_foreign_strings_are_not_ids(text: str) -> None:
    if is_principal_id(text):
        assert text[:4] in {"usr_", "agt_", "svc_", "sys_"}
        assert len(text) == 30
