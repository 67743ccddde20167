"""The source router's conversion of a fetch (flux.kafka.source_router.route): what it writes where, which dead
letters, which offsets it commits. No broker: the router on a real one is tests/e2e/test_source_topics.py."""

from __future__ import annotations

from typing import Any, NamedTuple

import orjson
from aiokafka import TopicPartition

from flux.config import Settings
from flux.kafka.source_router import group_id, route
from flux.model.partitioning import partition_for
from flux.model.records import decode_record

T0 = 1_700_000_000_000
SETTINGS = Settings(source_topics="up:upsert,cj:connect-json", partitions=4, max_event_bytes=2_000)
SOURCES = {source.topic: source for source in SETTINGS.sources()}


class Record(NamedTuple):
    key: bytes | None
    value: bytes | None
    offset: int
    timestamp: int = T0
    headers: tuple[tuple[str, bytes], ...] = ()


def events_of(records: list[tuple[int, bytes]]) -> dict[str, tuple[int, dict[str, Any]]]:
    """Entity id -> (events-topic partition, event), read back as the reducer reads the records."""
    found: dict[str, tuple[int, dict[str, Any]]] = {}
    for partition, value in records:
        decoded = decode_record(value, topic="e", partition=partition, offset=0, timestamp_ms=0, partitions=4)
        assert decoded.rejected == [] and decoded.misplaced == []  # every event is on its entity's partition
        found.update({event["payload"]["entity_id"]: (partition, event) for event in decoded.events})
    return found


def test_a_fetch_becomes_packed_records_on_the_entities_partitions_and_the_offsets_to_commit():
    fetched = {
        TopicPartition("up", 0): [Record(f"e{i}".encode(), orjson.dumps({"i": i}), 10 + i) for i in range(50)],
        TopicPartition("up", 2): [Record(b"x", None, 7)],
        TopicPartition("cj", 1): [Record(b"c", b'{"schema": null, "payload": {"v": 1}}', 3)],
    }
    routed = route(fetched, SOURCES, SETTINGS)
    assert routed.offsets == {TopicPartition("up", 0): 60, TopicPartition("up", 2): 8, TopicPartition("cj", 1): 4}
    assert routed.events == 52 and routed.dead == []
    assert len(routed.records) <= 4  # one packed record per events-topic partition
    found = events_of(routed.records)
    assert len(found) == 52
    assert all(partition == partition_for(entity, 4) for entity, (partition, _) in found.items())
    assert found["x"][1]["op"] == "delete"
    assert found["c"][1]["payload"]["properties"] == {"v": 1}


def test_invalid_records_become_dead_letters_naming_their_place_and_their_offsets_are_committed_too():
    fetched = {TopicPartition("up", 3): [Record(None, b"{}", 5), Record(b"ok", b"{}", 6), Record(b"k", b"[]", 9)]}
    routed = route(fetched, SOURCES, SETTINGS)
    assert routed.offsets == {TopicPartition("up", 3): 10}
    dead = [orjson.loads(d) for d in routed.dead]
    assert [(d["topic"], d["partition"], d["offset"]) for d in dead] == [("up", 3, 5), ("up", 3, 9)]
    assert dead[0]["reason"] == "the record has no key (the entity id)"
    assert list(events_of(routed.records)) == ["ok"]


def test_an_event_over_the_size_limit_is_a_dead_letter_not_a_record_the_broker_would_refuse():
    big = orjson.dumps({"blob": "x" * 3_000})
    routed = route({TopicPartition("up", 0): [Record(b"big", big, 1), Record(b"small", b"{}", 2)]}, SOURCES, SETTINGS)
    assert list(events_of(routed.records)) == ["small"]
    [dead] = [orjson.loads(d) for d in routed.dead]
    assert dead["reason"].startswith("the event is ") and dead["reason"].endswith("FLUX_MAX_EVENT_BYTES is 2000")
    assert dead["value"] == {"entity_id": "big"}


def test_a_fetch_routed_twice_writes_the_same_records():
    fetched = {TopicPartition("up", 0): [Record(f"e{i}".encode(), b'{"a": 1}', i) for i in range(20)]}
    assert route(fetched, SOURCES, SETTINGS).records == route(fetched, SOURCES, SETTINGS).records


def test_the_routers_of_an_app_share_one_consumer_group():
    assert group_id(Settings(app_id="plant")) == "plant-sources"
