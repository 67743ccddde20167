"""The merge rule, exhaustively: order independence, idempotence, deletion, late events."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from flux.model.events import MAX_TIMESTAMP_MS
from flux.model.reducer import (
    EntityDeleted,
    PropertyChanged,
    apply_event,
    exists,
    fold,
    new_state,
    rfc3339_ms,
    to_entity,
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=5),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3), children, max_size=3),
    max_leaves=5,
)


def make_event(ts: int, eid: str, props: dict[str, Any] | None, delete: bool = False) -> dict[str, Any]:
    event: dict[str, Any] = {
        "eventId": eid,
        "stream": "s",
        "source": "t",
        "timestamp": ts,
        "payload": {"entity_id": "e"},
    }
    if delete:
        event["op"] = "delete"
    else:
        event["payload"]["properties"] = props
    return event


events_strategy = st.lists(
    st.builds(
        make_event,
        ts=st.integers(0, 20),
        eid=st.text(alphabet="abc", min_size=1, max_size=2),
        props=st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), json_values, max_size=3),
        delete=st.sampled_from([False, False, True]),
    ),
    max_size=25,
).map(lambda evs: list({e["eventId"] + str(e["timestamp"]): e for e in evs}.values()))


def reference_fold(events: list[dict[str, Any]]) -> dict[str, Any] | None:
    """An independent statement of the rule: per property, the max version newer than the max tombstone."""
    versions = lambda e: (e["timestamp"], e["eventId"])  # noqa: E731
    tombstones = [versions(e) for e in events if e.get("op") == "delete"]
    latest_tombstone = max(tombstones) if tombstones else None
    live = [
        e for e in events if e.get("op") != "delete" and (latest_tombstone is None or versions(e) > latest_tombstone)
    ]
    if not live:
        return None
    properties: dict[str, Any] = {}
    best: dict[str, tuple[int, str]] = {}
    for event in live:
        for name, value in event["payload"]["properties"].items():
            if name not in best or versions(event) > best[name]:
                best[name] = versions(event)
                properties[name] = value
    return {"properties": properties, "lastUpdated_ms": max(versions(e) for e in live)[0]}


def visible(state: dict[str, Any]) -> dict[str, Any] | None:
    if not exists(state):
        return None
    return {"properties": state["p"], "lastUpdated_ms": state["l"][0]}


@settings(max_examples=200, deadline=None)
@given(events_strategy, st.randoms())
def test_fold_is_independent_of_event_order(events, rnd):
    shuffled = events[:]
    rnd.shuffle(shuffled)
    assert visible(fold(events)) == visible(fold(shuffled))


@settings(max_examples=200, deadline=None)
@given(events_strategy)
def test_fold_matches_the_reference_rule(events):
    assert visible(fold(events)) == reference_fold(events)


@settings(max_examples=200, deadline=None)
@given(events_strategy, st.randoms())
def test_reapplying_any_events_changes_nothing(events, rnd):
    state = fold(events)
    before = copy.deepcopy(state)
    replay = events[:] * 2
    rnd.shuffle(replay)
    for event in replay:
        assert apply_event(state, event) == []
    assert state == before


@settings(max_examples=200, deadline=None)
@given(events_strategy)
def test_reported_changes_replay_to_the_visible_properties(events):
    state = new_state()
    mirror: dict[str, Any] = {}
    for event in events:
        for change in apply_event(state, event):
            if isinstance(change, EntityDeleted):
                mirror.clear()
            else:
                mirror[change.property] = change.value
    if exists(state):
        assert mirror == state["p"]


def test_newer_value_wins_and_other_properties_are_kept():
    state = fold(
        [make_event(1, "a", {"temperature": 22.5, "unit": "celsius"}), make_event(2, "b", {"temperature": 23.0})]
    )
    assert state["p"] == {"temperature": 23.0, "unit": "celsius"}


def test_late_event_does_not_overwrite_newer_value_and_reports_nothing():
    state = fold([make_event(10, "b", {"t": 2})])
    assert apply_event(state, make_event(5, "a", {"t": 1})) == []
    assert state["p"] == {"t": 2}


def test_late_event_fills_in_a_property_it_alone_has():
    state = fold([make_event(10, "b", {"t": 2})])
    assert apply_event(state, make_event(5, "a", {"t": 1, "old": True})) == [PropertyChanged("old", True, 5)]


def test_equal_timestamps_are_broken_by_event_id():
    assert fold([make_event(7, "b", {"x": "B"}), make_event(7, "a", {"x": "A"})])["p"] == {"x": "B"}
    assert fold([make_event(7, "a", {"x": "A"}), make_event(7, "b", {"x": "B"})])["p"] == {"x": "B"}


def test_null_is_a_value_that_is_stored_and_returned():
    state = fold([make_event(1, "a", {"x": 1}), make_event(2, "b", {"x": None})])
    assert to_entity("e", state) == {"id": "e", "properties": {"x": None}, "lastUpdated": "1970-01-01T00:00:00.002Z"}


def test_same_value_again_is_not_reported_as_a_change():
    state = fold([make_event(1, "a", {"x": 1})])
    assert apply_event(state, make_event(2, "b", {"x": 1})) == []
    assert apply_event(state, make_event(3, "c", {"x": 1.0})) == [PropertyChanged("x", 1.0, 3)]


def test_delete_hides_entity_and_a_later_event_recreates_it_with_only_new_properties():
    state = fold([make_event(1, "a", {"x": 1, "y": 2})])
    assert apply_event(state, make_event(2, "b", None, delete=True)) == [EntityDeleted(2)]
    assert to_entity("e", state) is None
    apply_event(state, make_event(3, "c", {"y": 9}))
    assert to_entity("e", state)["properties"] == {"y": 9}


def test_event_older_than_the_tombstone_does_not_resurrect():
    state = fold([make_event(1, "a", {"x": 1}), make_event(5, "b", None, delete=True)])
    assert apply_event(state, make_event(3, "c", {"x": 2})) == []
    assert to_entity("e", state) is None


@given(st.integers(min_value=0, max_value=MAX_TIMESTAMP_MS))
def test_rfc3339_ms_agrees_with_datetime(unix_ms):
    moment = datetime.fromtimestamp(unix_ms // 1000, tz=UTC) + timedelta(milliseconds=unix_ms % 1000)
    assert rfc3339_ms(unix_ms) == moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def test_last_updated_is_rfc3339_utc_with_milliseconds():
    state = fold([make_event(1_771_843_845_123, "a", {"x": 1})])
    assert to_entity("e", state)["lastUpdated"] == "2026-02-23T10:50:45.123Z"
