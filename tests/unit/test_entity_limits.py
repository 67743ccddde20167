"""The entity caps: the rule against a plain reference, its bound, and a fold that does not depend on batches."""

from __future__ import annotations

import contextlib
import copy
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flux.config import MAX_ENTITY_BYTES_CEILING, Settings
from flux.kafka.topics import MAX_MESSAGE_BYTES
from flux.model.entity_limits import (
    EMPTY_SIZE,
    EntityLimits,
    EntityTooLarge,
    apply_within,
    check_alone,
    growth_bound,
    state_size,
)
from flux.model.reducer import State, apply_event, new_state

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3), children, max_size=3),
    max_leaves=5,
)


def make_event(ts: int, eid: str, props: dict[str, Any], delete: bool = False) -> dict[str, Any]:
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
        eid=st.text(alphabet="abc\u00e9\n", min_size=1, max_size=3),
        props=st.dictionaries(st.text(alphabet="abcdefgh", min_size=1, max_size=2), json_values, max_size=4),
        delete=st.sampled_from([False, False, False, True]),
    ),
    max_size=30,
)
limits_strategy = st.builds(EntityLimits, bytes=st.integers(EMPTY_SIZE, 400), properties=st.integers(0, 8))


def reference(state: State, event: dict[str, Any], limits: EntityLimits) -> bool:
    """The rule as documented, computed the slow way: apply to a copy, measure, keep or drop."""
    if event.get("op") == "delete":
        apply_event(state, event)
        return True
    trial = copy.deepcopy(state)
    apply_event(trial, event)
    after, before = state_size(trial), state_size(state)
    count, before_count = len(trial["p"]), len(state["p"])
    if (after <= limits.bytes or after <= before) and (count <= limits.properties or count <= before_count):
        state.clear()
        state.update(trial)
        return True
    return False


def fold_within(events: list[dict[str, Any]], limits: EntityLimits, cuts: set[int] = frozenset()) -> State:  # type: ignore[assignment]
    """Fold as the reducer does, reloading the state from its stored bytes at every cut (a batch boundary)."""
    state, size = new_state(), EMPTY_SIZE
    for index, event in enumerate(events):
        if index in cuts:  # a new batch: the state comes back from the store, stamped
            stored = orjson.dumps({**state, "o": index})
            state, size = orjson.loads(stored), len(stored)
        with contextlib.suppress(EntityTooLarge):
            _, size = apply_within(state, event, limits, size)
    state.pop("o", None)
    return state


@settings(max_examples=400, deadline=None)
@given(events_strategy, limits_strategy, st.integers(0, 200))
def test_the_fold_decides_as_the_reference_and_its_size_bound_holds(
    events: list[dict[str, Any]], limits: EntityLimits, slack: int
) -> None:
    expected = new_state()
    state = new_state()
    size = EMPTY_SIZE + slack  # any upper bound will do
    for event in events:
        before = copy.deepcopy(state)
        applied = reference(expected, event, limits)
        try:
            _, size = apply_within(state, event, limits, size)
        except EntityTooLarge as exc:
            assert not applied, "refused an event the rule applies"
            assert state == before, "a refused event changed the state"
            assert "FLUX_MAX_ENTITY_" in str(exc)
        else:
            assert applied, "applied an event the rule refuses"
        assert state == expected
        assert state_size(state) <= size


@settings(max_examples=300, deadline=None)
@given(events_strategy, limits_strategy, st.sets(st.integers(0, 30)))
def test_the_same_log_folds_to_the_same_state_whatever_the_batches(
    events: list[dict[str, Any]], limits: EntityLimits, cuts: set[int]
) -> None:
    assert fold_within(events, limits, cuts) == fold_within(events, limits)


@settings(max_examples=300, deadline=None)
@given(
    events_strategy,
    st.builds(
        make_event,
        ts=st.integers(0, 20),
        eid=st.text(min_size=1, max_size=4),
        props=st.dictionaries(st.text(max_size=4), json_values, max_size=5),
        delete=st.booleans(),
    ),
)
def test_growth_bound_bounds_what_any_event_adds(events: list[dict[str, Any]], event: dict[str, Any]) -> None:
    state = new_state()
    for earlier in events:
        apply_event(state, earlier)
    before = state_size(state)
    apply_event(state, event)
    assert state_size(state) - before <= growth_bound(event)


def big_event(n: int, props: int = 1_000, value_bytes: int = 900) -> dict[str, Any]:
    return make_event(1_000 + n, f"big-{n}", {f"p{n}-{i:04d}": "x" * value_bytes for i in range(props)})


def test_ten_large_events_to_one_entity_stop_at_the_cap_and_smaller_ones_still_apply() -> None:
    limits = EntityLimits()
    state, size, refused = new_state(), EMPTY_SIZE, []
    for n in range(10):
        try:
            _, size = apply_within(state, big_event(n), limits, size)
        except EntityTooLarge as exc:
            refused.append(str(exc))
    assert len(state["p"]) == 1_000 and len(refused) == 9
    assert "would take" in refused[0] and "the limit is 1,048,576 (FLUX_MAX_ENTITY_BYTES)" in refused[0]
    _, size = apply_within(state, make_event(5_000, "small", {"p0-0000": "y"}), limits, size)
    assert state["p"]["p0-0000"] == "y" and state_size(state) <= size <= limits.bytes


def test_properties_cap_and_a_delete_that_makes_room() -> None:
    limits = EntityLimits(properties=3)
    state, size = new_state(), EMPTY_SIZE
    _, size = apply_within(state, make_event(1, "a", {"a": 1, "b": 2}), limits, size)
    with pytest.raises(EntityTooLarge, match=r"would have 4 properties; the limit is 3 \(FLUX_MAX_ENTITY_PROPERTIES"):
        apply_within(state, make_event(2, "b", {"c": 3, "d": 4}), limits, size)
    _, size = apply_within(state, make_event(2, "c", {"a": 9, "c": 3}), limits, size)  # 3 properties: fits
    _, size = apply_within(state, make_event(3, "d", {}, delete=True), limits, size)  # deletions always apply
    _, size = apply_within(state, make_event(4, "e", {"x": 1, "y": 2, "z": 3}), limits, size)
    assert state["p"] == {"x": 1, "y": 2, "z": 3}


def test_an_entity_over_a_lowered_cap_takes_updates_that_do_not_grow_it() -> None:
    state = new_state()
    apply_event(state, make_event(1, "a", {"a": "x" * 500, "b": 1, "c": 2}))
    limits = EntityLimits(bytes=200, properties=2)
    size = state_size(state)
    _, size = apply_within(state, make_event(2, "b", {"a": "y" * 400}), limits, size)  # smaller: applies
    with pytest.raises(EntityTooLarge):
        apply_within(state, make_event(3, "c", {"d": 1}), limits, size)  # a new property grows it
    assert state["p"]["a"] == "y" * 400 and "d" not in state["p"]


def test_an_event_alone_over_a_cap_is_known_at_publish() -> None:
    limits = EntityLimits(bytes=10_000, properties=5)
    check_alone(make_event(1, "a", {"a": "x" * 5_000}), limits)
    check_alone(make_event(1, "a", {}, delete=True), limits)
    with pytest.raises(EntityTooLarge, match=r"would take 10,0\d\d bytes"):
        check_alone(make_event(1, "a", {"a": "x" * 9_990}), limits)
    with pytest.raises(EntityTooLarge, match="would have 6 properties"):
        check_alone(make_event(1, "a", {str(i): i for i in range(6)}), limits)


def test_the_entity_cap_stays_well_under_the_changelog_record_limit() -> None:
    assert MAX_ENTITY_BYTES_CEILING <= MAX_MESSAGE_BYTES // 2
    assert Settings().max_entity_bytes <= MAX_ENTITY_BYTES_CEILING
    assert Settings().entity_limits() == EntityLimits(1_048_576, 10_000)
    with pytest.raises(ValueError, match="less than or equal to 4194304"):
        Settings(max_entity_bytes=MAX_ENTITY_BYTES_CEILING + 1)
