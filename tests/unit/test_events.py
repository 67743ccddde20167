"""Envelope validation, event ids and record decoding: pure functions, no broker."""

from __future__ import annotations

import uuid

import orjson
import pytest

from flux.model.events import EventLimits, InvalidEvent, validate_event
from flux.model.ids import derived_event_id, new_event_id
from flux.model.partitioning import partition_for
from flux.model.records import decode_record
from flux.model.reducer import fold


def test_generated_ids_are_valid_uuid_v7_carrying_the_timestamp():
    eid = new_event_id(1_739_290_200_000)
    parsed = uuid.UUID(eid)
    assert parsed.version == 7 and parsed.variant == uuid.RFC_4122
    assert int(eid.replace("-", "")[:12], 16) == 1_739_290_200_000


def test_ids_generated_for_the_same_millisecond_increase_so_batch_order_wins_ties():
    ids = [new_event_id(5) for _ in range(1000)]
    assert ids == sorted(ids) and len(set(ids)) == 1000
    events = [
        validate_event({"stream": "s", "source": "a", "payload": {"entity_id": "e", "properties": {"x": i}}}, now_ms=5)
        for i in range(50)
    ]
    assert fold(events)["p"] == {"x": 49}


def test_derived_ids_are_deterministic_per_record_position():
    assert derived_event_id(1, "t", 0, 5, 2) == derived_event_id(1, "t", 0, 5, 2)
    assert derived_event_id(1, "t", 0, 5, 2) != derived_event_id(1, "t", 0, 5, 3)
    assert uuid.UUID(derived_event_id(1, "t", 0, 5, 2)).version == 7


def test_validation_fills_defaults_and_keeps_optional_fields():
    env = validate_event(
        {"stream": "s", "source": "a", "key": "k", "schema": {"v": 1}, "payload": {"entity_id": "e", "properties": {}}},
        now_ms=42,
    )
    assert env["timestamp"] == 42 and env["key"] == "k" and env["schema"] == {"v": 1}
    assert uuid.UUID(env["eventId"]).version == 7


def test_entity_id_longer_than_the_limit_is_refused():
    with pytest.raises(InvalidEvent, match="at most 10 characters"):
        validate_event(
            {"stream": "s", "source": "a", "payload": {"entity_id": "x" * 11, "properties": {}}},
            now_ms=1,
            limits=EventLimits(entity_id_length=10),
        )


def test_stream_and_source_longer_than_the_limit_are_refused():
    def event(**fields):
        return {"stream": "s", "source": "a", "payload": {"entity_id": "e", "properties": {}}, **fields}

    for field in ("stream", "source"):
        assert validate_event(event(**{field: "x" * 256}), now_ms=1)[field] == "x" * 256  # the default limit
        for length, limits in (
            (257, EventLimits()),
            (100_000, EventLimits()),
            (9, EventLimits(stream_source_length=8)),
        ):
            with pytest.raises(
                InvalidEvent, match=f"^{field} must be at most {limits.stream_source_length} characters$"
            ):
                validate_event(event(**{field: "x" * length}), now_ms=1, limits=limits)


def test_delete_events_carry_no_properties():
    env = validate_event({"stream": "s", "source": "a", "op": "delete", "payload": {"entity_id": "e"}}, now_ms=1)
    assert env["op"] == "delete" and "properties" not in env["payload"]
    with pytest.raises(InvalidEvent, match=r"carries no payload\.properties"):
        validate_event(
            {"stream": "s", "source": "a", "op": "delete", "payload": {"entity_id": "e", "properties": {}}}, now_ms=1
        )
    with pytest.raises(InvalidEvent, match='op must be "delete"'):
        validate_event(
            {"stream": "s", "source": "a", "op": "upsert", "payload": {"entity_id": "e", "properties": {}}}, now_ms=1
        )


def _env(entity: str, **extra) -> dict:
    return {"stream": "s", "source": "a", "payload": {"entity_id": entity, "properties": {"v": 1}}, **extra}


def test_a_record_without_event_id_or_timestamp_gets_deterministic_defaults():
    value = orjson.dumps(_env("e"))
    p = partition_for("e", 4)
    first = decode_record(value, topic="t", partition=p, offset=9, timestamp_ms=1234, partitions=4)
    again = decode_record(value, topic="t", partition=p, offset=9, timestamp_ms=1234, partitions=4)
    assert first.events == again.events
    assert first.events[0]["timestamp"] == 1234


def test_a_packed_record_splits_into_valid_misplaced_and_rejected():
    here = next(f"e{i}" for i in range(100) if partition_for(f"e{i}", 4) == 0)
    there = next(f"e{i}" for i in range(100) if partition_for(f"e{i}", 4) == 1)
    value = orjson.dumps([_env(here), _env(there), {"stream": "s"}, 7])
    out = decode_record(value, topic="t", partition=0, offset=0, timestamp_ms=1, partitions=4)
    assert [e["payload"]["entity_id"] for e in out.events] == [here]
    assert [(p, e["payload"]["entity_id"]) for p, e in out.misplaced] == [(1, there)]
    assert [(r.index, r.reason) for r in out.rejected] == [
        (2, "source is required"),
        (3, "event must be a JSON object, got number"),
    ]


@pytest.mark.parametrize(
    ("value", "reason"),
    [(None, "empty record value"), (b"{", "not JSON"), (b'"x"', "must be a JSON object or an array")],
)
def test_undecodable_records_are_rejected_whole(value, reason):
    out = decode_record(value, topic="t", partition=0, offset=0, timestamp_ms=1, partitions=4)
    assert not out.events and reason in out.rejected[0].reason


def test_packing_groups_by_partition_keeps_order_and_bounds_record_size():
    from flux.kafka import publisher

    events = [
        validate_event(
            {
                "stream": "s",
                "source": "a",
                "payload": {"entity_id": f"e{i % 7}", "properties": {"i": i, "pad": "x" * 300}},
            },
            now_ms=1,
        )
        for i in range(5000)
    ]
    records = publisher.pack_by_partition(events, 4)
    assert all(len(value) <= publisher.PACKED_RECORD_MAX_BYTES for _, value in records)
    unpacked = [(p, e) for p, value in records for e in orjson.loads(value)]
    assert sorted(e["payload"]["properties"]["i"] for _, e in unpacked) == list(range(5000))
    for partition, event in unpacked:
        assert partition == partition_for(event["payload"]["entity_id"], 4)
    for entity in {e["payload"]["entity_id"] for _, e in unpacked}:
        order = [e["payload"]["properties"]["i"] for _, e in unpacked if e["payload"]["entity_id"] == entity]
        assert order == sorted(order)


def test_a_data_dir_from_another_cluster_is_moved_aside_and_a_matching_one_kept(tmp_path):
    from flux.datadir import claim_data_dir

    data = tmp_path / "data"
    assert claim_data_dir(data, "cluster-a", "flux") is None
    (data / "tables").mkdir()
    assert claim_data_dir(data, "cluster-a", "flux") is None and (data / "tables").exists()
    moved = claim_data_dir(data, "cluster-b", "flux")
    assert moved is not None and (moved / "tables").exists()
    assert data.exists() and not (data / "tables").exists()
    assert (data / "flux-cluster.txt").read_text().strip() == "cluster-b/flux"


@pytest.mark.parametrize(("raw", "expected"), [(1739290200000.0, 1739290200000), (0.0, 0), (5, 5)])
def test_a_timestamp_with_a_zero_fraction_is_an_integer(raw, expected):
    body = {"stream": "s", "source": "a", "timestamp": raw, "payload": {"entity_id": "e", "properties": {}}}
    stamped = validate_event(body, now_ms=1)["timestamp"]
    assert stamped == expected and type(stamped) is int


@pytest.mark.parametrize("raw", [1.5, True, "1739290200000", -1, float("inf"), 1e300])
def test_fractional_non_numeric_and_out_of_range_timestamps_are_refused(raw):
    body = {"stream": "s", "source": "a", "timestamp": raw, "payload": {"entity_id": "e", "properties": {}}}
    with pytest.raises(InvalidEvent, match="timestamp"):
        validate_event(body, now_ms=1)


def test_more_properties_than_the_limit_are_refused_with_the_count() -> None:
    event = {"stream": "s", "source": "a", "payload": {"entity_id": "e", "properties": {f"p{i}": i for i in range(4)}}}
    with pytest.raises(InvalidEvent, match="has 4 properties; the limit is 3"):
        validate_event(event, now_ms=1, limits=EventLimits(properties=3))
    assert validate_event(event, now_ms=1, limits=EventLimits(properties=4))


def test_a_property_name_longer_than_the_limit_is_refused() -> None:
    event = {"stream": "s", "source": "a", "payload": {"entity_id": "e", "properties": {"k" * 9: 1, "ok": 2}}}
    with pytest.raises(InvalidEvent, match="is 9 characters; the limit is 8"):
        validate_event(event, now_ms=1, limits=EventLimits(property_key_length=8))
