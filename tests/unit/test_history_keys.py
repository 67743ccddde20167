"""The history index's key layout, cursors and time parameters (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flux.model.history import (
    InvalidQuery,
    decode_cursor,
    encode_cursor,
    entity_range,
    history_key,
    split_history_key,
    time_key,
)

ids = st.text(st.characters(blacklist_characters="\0", blacklist_categories=("Cs",)), min_size=1, max_size=30)
times = st.integers(0, 253_402_300_799_999)


@given(ids, times, st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40), times)
def test_history_keys_sort_by_entity_then_time_and_split_back(entity: str, ts: int, event_id: str, other: int) -> None:
    key = history_key(entity, ts, event_id)
    assert split_history_key(key) == (entity, ts, event_id)
    assert key.startswith(entity_range(entity))
    assert (time_key(entity, ts) <= key) and (key < time_key(entity, ts + 1))
    assert (history_key(entity, other, event_id) < key) == (other < ts)


def test_one_entity_range_does_not_cover_an_entity_whose_id_extends_it() -> None:
    assert not history_key("acme/a1", 5, "e").startswith(entity_range("acme/a"))


def test_cursors_round_trip_and_refuse_anything_else() -> None:
    key = history_key("acme/x", 42, "id-1")
    assert decode_cursor(encode_cursor(key)) == key
    for bad in ("", "abc", "!!!", encode_cursor(b"not-a-history-key")):
        with pytest.raises(InvalidQuery, match="cursor"):
            decode_cursor(bad)
