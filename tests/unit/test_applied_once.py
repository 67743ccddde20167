"""The reducer's applied-once check against a store whose state may be older than its marks (no Kafka)."""

from __future__ import annotations

import orjson

from agents.reducer_agent import BatchReducer, _Touched
from flux.model.reducer import apply_event, new_state


class Store:
    def __init__(self, values: dict[bytes, bytes]) -> None:
        self.values = values

    def load(self, partition: int, key: bytes) -> bytes | None:
        return self.values.get(key)


def reducer_over(values: dict[bytes, bytes]) -> BatchReducer:
    reducer = BatchReducer.__new__(BatchReducer)
    reducer._store = Store(values)  # type: ignore[assignment]
    return reducer


def setting_v(timestamp: int, event_id: str = "e") -> dict[str, object]:
    return {
        "eventId": event_id,
        "stream": "s",
        "source": "a",
        "timestamp": timestamp,
        "payload": {"entity_id": "x", "properties": {"v": 1}},
    }


def entity_stamped(applied: int) -> _Touched:
    state = new_state()
    apply_event(state, setting_v(5))
    state["o"] = applied
    return _Touched(orjson.dumps(state))


def test_a_mark_the_state_includes_makes_a_duplicate() -> None:
    reducer = reducer_over({b"mark": b"10"})
    assert reducer._already_applied(0, b"mark", entity_stamped(10))
    assert reducer._already_applied(0, b"mark", entity_stamped(12))


def test_a_mark_newer_than_the_state_is_stale_and_the_event_applies_again() -> None:
    reducer = reducer_over({b"mark": b"10"})  # recovery brought back a state from before offset 10
    assert not reducer._already_applied(0, b"mark", entity_stamped(9))
    assert not reducer._already_applied(0, b"mark", _Touched(None))  # the state is gone entirely


def test_no_mark_no_duplicate() -> None:
    assert not reducer_over({})._already_applied(0, b"mark", entity_stamped(10))


def test_every_batch_that_applies_an_event_stamps_the_state() -> None:
    entity = entity_stamped(3)
    assert orjson.loads(entity.encode(42))["o"] == 42  # even though no property changed


def test_an_event_repeating_the_values_changes_the_view_through_last_updated_alone() -> None:
    entity = entity_stamped(3)
    entity.changes += apply_event(entity.state, setting_v(9, "e2"))
    assert not entity.changes  # no property took a new value
    assert entity.visibly_changed()  # but lastUpdated moved from 5 to 9: readers must see it


def test_an_older_event_repeating_the_values_changes_nothing_visible() -> None:
    entity = entity_stamped(3)
    entity.changes += apply_event(entity.state, setting_v(2, "e0"))
    assert not entity.visibly_changed()
