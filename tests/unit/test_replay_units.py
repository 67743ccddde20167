"""Replay's pure parts and its fold into a new generation (RocksDB, no Kafka)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.replay.shadow_store import ShadowPartition, open_shadow, shadow_events
from agents.replay.switch import joined, stamped, unstamped
from flux.config import Settings
from flux.model.events import encode
from flux.model.partitioning import partition_for
from flux.model.reducer import EntityDeleted, PropertyChanged, PropertyRemoved, diff_states, fold, to_entity
from flux.model.replay import (
    DONE,
    FROM_BEGINNING,
    FROM_OFFSETS,
    FROM_TIMESTAMP,
    InvalidReplay,
    PartitionProgress,
    ReplayJob,
    ReplayRange,
    parse_replay_request,
)

T0 = 1_700_000_000_000


def envelope(entity_id: str, ts: int, event_id: str, op: str | None = None, **props: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {"entity_id": entity_id}
    if op is None:
        payload["properties"] = props
    body = {"stream": "s", "source": "t", "timestamp": ts, "eventId": event_id, "payload": payload}
    if op is not None:
        body["op"] = op
    return body


# -- requests ------------------------------------------------------------------------------
def test_a_request_names_exactly_one_start() -> None:
    assert parse_replay_request({"fromBeginning": True}) == ReplayRange(FROM_BEGINNING)
    assert parse_replay_request({"fromTimestamp": "2023-11-14T22:13:20Z"}) == ReplayRange(
        FROM_TIMESTAMP, from_timestamp=T0
    )
    assert parse_replay_request({"fromTimestamp": 0}) == ReplayRange(FROM_TIMESTAMP, from_timestamp=0)
    assert parse_replay_request({"fromOffsets": "0:5, 3:0"}).from_offsets == {0: 5, 3: 0}
    assert parse_replay_request({"fromOffsets": {"2": 9}, "toTimestamp": T0}) == ReplayRange(
        FROM_OFFSETS, from_offsets={2: 9}, to_timestamp=T0
    )
    for bad in ({}, {"fromBeginning": False}, {"fromBeginning": True, "fromOffsets": "0:1"}, [], "x"):
        with pytest.raises(InvalidReplay):
            parse_replay_request(bad)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"fromBeginning": "yes"}, "must be true"),
        ({"fromTimestamp": True}, "Unix epoch milliseconds"),
        ({"fromTimestamp": -1}, "between 0 and"),
        ({"fromTimestamp": "2026-01-01T00:00:00"}, "time zone"),
        ({"fromOffsets": {"a": 1}}, "partition numbers"),
        ({"fromOffsets": {"1": -1}}, "offsets >= 0"),
        ({"fromOffsets": {"1": True}}, "offsets >= 0"),
        ({"fromOffsets": "1:2,1:3"}, "twice"),
        ({"fromOffsets": {}}, "fromOffsets must be"),
        ({"fromTimestamp": 10, "toTimestamp": 9}, "before fromTimestamp"),
        ({"fromBeginning": True, "extra": 1}, "unknown field"),
        ({"fromTimestamp": T0 + 1}, "in the future"),
        ({"fromBeginning": True, "toTimestamp": "2023-11-14T22:13:21Z"}, "in the future"),
    ],
)
def test_a_bad_request_says_what_is_wrong(body: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidReplay, match=message):
        parse_replay_request(body, now_ms=T0)


def test_a_job_shows_share_rate_and_eta_until_it_is_done() -> None:
    job = ReplayJob("j1", ReplayRange(FROM_BEGINNING), started=100.0)
    assert job.public(now=101.0)["percent"] == 0.0  # no partitions known yet is not "done"
    job.partitions = {0: PartitionProgress(10, 60, 110), 1: PartitionProgress(0, 50, 100)}
    job.events = 100
    shown = job.public(now=102.0)
    assert (shown["percent"], shown["eventsPerSecond"], shown["etaSeconds"]) == (50.0, 50, 2.0)
    assert shown["partitions"][0] == {"partition": 0, "start": 10, "position": 60, "end": 110}
    job.status, job.finished = DONE, 104.0
    assert job.public(now=200.0)["etaSeconds"] is None and job.public()["percent"] == 100.0


# -- stamps and the key join -------------------------------------------------------------
def test_a_stamp_is_removed_only_when_it_is_the_last_key() -> None:
    state = fold([envelope("e", T0, "a", o=5)])
    bare = orjson.dumps(state)
    assert unstamped(stamped(dict(state), 42)) == bare
    assert unstamped(bare) == bare  # "o" as a property name is not a stamp
    assert orjson.loads(stamped(orjson.loads(stamped(dict(state), 1)), 7))["o"] == 7


def test_the_join_pairs_equal_keys_and_keeps_order() -> None:
    live = iter([(b"a", b"1"), (b"c", b"3"), (b"d", b"4")])
    new = iter([(b"b", b"2"), (b"c", b"33"), (b"e", b"5")])
    assert list(joined(live, new)) == [
        (b"a", b"1", None),
        (b"b", None, b"2"),
        (b"c", b"3", b"33"),
        (b"d", b"4", None),
        (b"e", None, b"5"),
    ]


# -- diffs -------------------------------------------------------------------------------
def test_a_diff_names_removed_changed_new_and_deleted() -> None:
    old = fold([envelope("e", T0, "a", x=1, y=2)])
    new = fold([envelope("e", T0, "b", x=1, z=3)])
    assert diff_states(old, new, 0) == [PropertyRemoved("y"), PropertyChanged("z", 3, T0)]
    assert diff_states(None, new, 0) == [PropertyChanged("x", 1, T0), PropertyChanged("z", 3, T0)]
    assert diff_states(old, None, 99) == [EntityDeleted(99)]
    gone = fold([envelope("e", T0, "a", x=1), envelope("e", T0 + 5, "d", op="delete")])
    assert diff_states(old, gone, 99) == [EntityDeleted(T0 + 5)]
    assert diff_states(gone, None, 99) == []
    assert diff_states(new, fold([envelope("e", T0, "c", x=True, z=3)]), 0) == [PropertyChanged("x", True, T0)]


values = st.one_of(st.integers(-3, 3), st.booleans(), st.text(max_size=2))
events = st.lists(
    st.tuples(st.integers(0, 20), st.sampled_from(["p", "q", "r", None]), values), min_size=0, max_size=12
)


def _fold(items: list[tuple[int, str | None, Any]], tag: str) -> dict[str, Any]:
    return fold(
        [
            envelope("e", T0 + ts, f"{tag}{i}", op="delete")
            if name is None
            else envelope("e", T0 + ts, f"{tag}{i}", **{name: v})
            for i, (ts, name, v) in enumerate(items)
        ]
    )


@settings(max_examples=300, deadline=None)
@given(events, events)
def test_applying_a_diff_to_the_old_view_gives_the_new_view(a: list[Any], b: list[Any]) -> None:
    old, new = _fold(a, "a"), _fold(b, "b")
    view = dict((to_entity("e", old) or {"properties": {}})["properties"])
    for change in diff_states(old, new, 0):
        if isinstance(change, EntityDeleted):
            view = {}
        elif isinstance(change, PropertyRemoved):
            del view[change.property]
        else:
            view[change.property] = change.value
    expected = to_entity("e", new)
    assert view == ({} if expected is None else expected["properties"])


# -- the fold into a new generation ----------------------------------------------------------
def _record(offset: int, value: bytes, partition: int = 0) -> Any:
    return SimpleNamespace(topic="flux.events", partition=partition, offset=offset, value=value, timestamp=T0)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["e1", "e2"]), st.integers(0, 9), st.integers(0, 3), values), max_size=25))
def test_the_new_generation_folds_like_the_reducer_and_applies_an_event_id_once(
    tmp_path_factory: pytest.TempPathFactory, items: list[tuple[str, int, int, Any]]
) -> None:
    settings_ = Settings(partitions=1)
    shadow = ShadowPartition(open_shadow(tmp_path_factory.mktemp("shadow") / "p0"), settings_)
    published = [envelope(entity, T0 + ts, f"id{eid}", v=v) for entity, ts, eid, v in items]
    half = len(published) // 2
    shadow.fold([_record(i, encode(e)) for i, e in enumerate(published[:half])])
    shadow.fold([_record(half + i, encode(e)) for i, e in enumerate(published[half:])])
    first: dict[tuple[str, str], dict[str, Any]] = {}
    for e in published:
        first.setdefault((e["payload"]["entity_id"], e["eventId"]), e)
    for entity in ("e1", "e2"):
        stored = shadow.db.get(entity.encode())
        expected = [e for (ent, _), e in first.items() if ent == entity]
        assert (None if stored is None else orjson.loads(stored)) == (fold(expected) if expected else None)
    assert shadow_events(shadow.db) == len(first)
    shadow.db.close()


def test_the_new_generation_skips_invalid_and_misplaced_events(tmp_path: Path) -> None:
    shadow = ShadowPartition(open_shadow(tmp_path / "p0"), Settings(partitions=8))
    good = next(f"g{i}" for i in range(100) if partition_for(f"g{i}", 8) == 0)
    elsewhere = next(f"m{i}" for i in range(100) if partition_for(f"m{i}", 8) != 0)
    applied = shadow.fold(
        [
            _record(0, b"not json"),
            _record(1, encode(envelope(elsewhere, T0, "m", v=1))),
            _record(2, encode(envelope(good, T0, "g", v=1))),
        ]
    )
    assert applied == 1
    assert shadow.db.get(elsewhere.encode()) is None
    assert orjson.loads(shadow.db.get(good.encode()))["p"] == {"v": 1}
    shadow.db.close()
