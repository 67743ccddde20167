"""Source topics (FLUX_SOURCE_TOPICS) on a real broker: records produced with aiokafka to topics other than the
events topic, in the upsert, connect-json and flux formats, read back over HTTP.

The conversion itself (every format's valid and invalid records, tombstones, wrappers, headers) is proven in
tests/unit/test_sources.py; here: that the router gets them into the table, deletes included, across a source
topic whose partition count is not Flux's, and across a node killed while routing (nothing lost, nothing doubled).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from tests.conftest import NodeFactory
from tests.flux_process import FluxProcess, free_port

# An hour ago, to the second: Kafka's time retention judges records by their timestamp and would delete
# records of long-gone times, once their segment rolls, before the router reads them.
T0 = (int(time.time()) - 3600) * 1000
NARROW_PARTITIONS = 3  # the node has 4

Record = tuple[bytes | None, bytes | None, int, list[tuple[str, bytes]]]  # key, value, timestamp, headers


async def produce(bootstrap: str, topic: str, records: list[Record]) -> None:
    """Write ``records`` as a plain Kafka producer would (Kafka's default partitioner on the key)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5)
    await producer.start()
    try:
        futures = [
            await producer.send(topic, value, key=key, timestamp_ms=ts, headers=headers)
            for key, value, ts, headers in records
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def dead_letters(bootstrap: str, topic: str, of: set[str], expected: int, timeout: float = 30) -> list[dict]:
    """The dead-letter entries of the source topics ``of``, once there are ``expected`` of them."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    out: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(timeout):
            while len(out) < expected:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    out += [d for d in (json.loads(r.value) for r in records) if d["topic"] in of]
    finally:
        await consumer.stop()
    return out


async def create_topic(bootstrap: str, name: str, partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
    finally:
        await admin.close()


def iso(ms: int) -> str:
    """How the API writes a time (``lastUpdated``)."""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def upsert(entity: str, props: dict[str, Any] | None, ts: int, **headers: str) -> Record:
    value = None if props is None else json.dumps(props).encode()
    return entity.encode(), value, ts, [(k, v.encode()) for k, v in headers.items()]


def connect(key: Any, payload: dict[str, Any] | None, ts: int, *, tombstone: bool = False) -> Record:
    """A record as Kafka Connect's JsonConverter (schemas.enable=true) writes it."""
    key_bytes = json.dumps({"schema": {"type": "string", "optional": False}, "payload": key}).encode()
    if tombstone:
        return key_bytes, None, ts, []
    schema = {"type": "struct", "optional": False, "name": "reading", "fields": []}
    return key_bytes, json.dumps({"schema": schema, "payload": payload}).encode(), ts, []


class Topics:
    def __init__(self, app_id: str) -> None:
        self.upsert = f"{app_id}.src-upsert"
        self.connect = f"{app_id}.src-connect"
        self.narrow = f"{app_id}.src-narrow"
        self.native = f"{app_id}.src-native"

    def spec(self) -> str:
        return (
            f"{self.upsert}:upsert,{self.connect}:connect-json,"
            f"{self.narrow}:upsert:narrow-stream:gw:narrow,{self.native}:flux"
        )


@pytest.fixture(scope="module")
def node(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FluxProcess, Topics]]:
    """A node folding four source topics, one of them created beforehand with 3 partitions."""
    app_id = f"s{uuid.uuid4().hex[:10]}"
    topics = Topics(app_id)
    asyncio.run(create_topic(kafka_bootstrap, topics.narrow, NARROW_PARTITIONS))
    workdir: Path = tmp_path_factory.mktemp("sources") / app_id
    flux = FluxProcess(kafka_bootstrap, workdir, free_port(), app_id, 4, {"FLUX_SOURCE_TOPICS": topics.spec()})
    flux.start()
    yield flux, topics
    flux.stop()


def history(flux: FluxProcess, entity: str) -> list[dict[str, Any]]:
    response = flux.client.get("/api/events", params={"since": "0", "entity": entity, "limit": 1000})
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def wait_entity(flux: FluxProcess, entity: str, props: dict[str, Any]) -> dict[str, Any]:
    got: dict[str, Any] = await asyncio.to_thread(flux.wait_entity, entity, lambda e: e["properties"] == props)
    return got


async def wait_gone(flux: FluxProcess, entity: str) -> None:
    await asyncio.to_thread(flux.wait_for, lambda: flux.entity(entity).status_code == 404, 30, f"{entity} deleted")


async def test_upsert_records_merge_by_record_time_and_a_tombstone_deletes(node, uid):
    flux, topics = node
    kept, deleted = f"up-{uid}/a", f"up-{uid}/b"
    await produce(
        flux.bootstrap,
        topics.upsert,
        [
            upsert(kept, {"temp": 20, "unit": "C"}, T0 + 10),
            upsert(kept, {"temp": 19}, T0 + 5),  # older by record time: loses to temp=20
            upsert(kept, {"temp": 21}, T0 + 20),
            upsert(deleted, {"x": 1}, T0 + 10),
            upsert(deleted, None, T0 + 30),  # a tombstone
        ],
    )
    got = await wait_entity(flux, kept, {"temp": 21, "unit": "C"})
    assert got["lastUpdated"] == iso(T0 + 20)
    await wait_gone(flux, deleted)
    events = history(flux, kept)
    assert [e["stream"] for e in events] == [topics.upsert] * 3
    assert {e["source"] for e in events} == {f"kafka:{topics.upsert}"}
    assert [e["timestamp"] for e in events] == [T0 + 5, T0 + 10, T0 + 20]
    assert [e.get("op") for e in history(flux, deleted)] == [None, "delete"]

    def routed() -> int:
        lines = flux.client.get("/metrics").text.splitlines()
        return sum(int(float(line.split()[1])) for line in lines if line.startswith("flux_source_records_total "))

    await asyncio.to_thread(flux.wait_for, lambda: routed() >= 5, 30, "flux_source_records_total")


async def test_headers_name_the_stream_and_the_source(node, uid):
    flux, topics = node
    entity = f"hdr-{uid}"
    await produce(
        flux.bootstrap,
        topics.upsert,
        [upsert(entity, {"a": 1}, T0, stream="telemetry", source="gw-9"), upsert(entity, {"b": 2}, T0 + 1)],
    )
    await wait_entity(flux, entity, {"a": 1, "b": 2})
    assert [(e["stream"], e["source"]) for e in history(flux, entity)] == [
        ("telemetry", "gw-9"),
        (topics.upsert, f"kafka:{topics.upsert}"),
    ]


async def test_connect_json_records_are_unwrapped_and_tombstones_delete(node, uid):
    flux, topics = node
    kept, deleted, struct_key = f"cj-{uid}/a", f"cj-{uid}/b", f"cj-{uid}/c"
    struct = json.dumps(
        {
            "schema": {"type": "struct", "fields": [{"field": "id", "type": "string"}], "optional": False},
            "payload": {"id": struct_key},
        }
    ).encode()
    value = json.dumps({"schema": {"type": "struct", "fields": []}, "payload": {"level": 3}}).encode()
    await produce(
        flux.bootstrap,
        topics.connect,
        [
            connect(kept, {"temp": 21.5, "unit": "C", "tags": ["a", "b"]}, T0),
            connect(deleted, {"temp": 1}, T0),
            connect(deleted, None, T0 + 1, tombstone=True),
            (struct, value, T0, []),
            (f"plain-{uid}".encode(), value, T0, []),  # a StringConverter key
        ],
    )
    await wait_entity(flux, kept, {"temp": 21.5, "unit": "C", "tags": ["a", "b"]})
    await wait_entity(flux, struct_key, {"level": 3})
    await wait_entity(flux, f"plain-{uid}", {"level": 3})
    await wait_gone(flux, deleted)


async def test_invalid_source_records_go_to_the_dead_letter_topic_and_routing_goes_on(node, uid):
    flux, topics = node
    after = f"after-bad-{uid}"
    await produce(
        flux.bootstrap,
        topics.connect,
        [
            (b"k1", json.dumps({"temp": 1}).encode(), T0, []),  # schemas.enable=false: no wrapper
            (b"k2", b"{not json", T0, []),
        ],
    )
    await produce(flux.bootstrap, topics.upsert, [(None, b'{"a": 1}', T0, []), upsert(after, {"ok": True}, T0)])
    await wait_entity(flux, after, {"ok": True})
    dead = await dead_letters(flux.bootstrap, flux.dead_letter_topic, {topics.connect, topics.upsert}, 3)
    reasons = sorted((d["topic"], d["reason"]) for d in dead)
    assert reasons[0][0] == reasons[1][0] == topics.connect
    assert reasons[0][1].startswith("record value is not JSON")
    assert "JsonConverter with schemas.enable=true" in reasons[1][1]
    assert reasons[2] == (topics.upsert, "the record has no key (the entity id)")
    assert {"key": "k1", "value": '{"temp": 1}'} in [d["value"] for d in dead]
    assert all({"topic", "partition", "offset", "value"} <= set(d) for d in dead)


async def test_flux_envelopes_on_a_source_topic_take_the_topic_defaults(node, uid):
    flux, topics = node
    entity = f"nat-{uid}"
    envelopes = [
        {"payload": {"entity_id": entity, "properties": {"a": 1}}, "timestamp": T0},
        {"stream": "own", "source": "mine", "payload": {"entity_id": entity, "properties": {"b": 2}}},
    ]
    await produce(flux.bootstrap, topics.native, [(None, json.dumps(envelopes).encode(), T0 + 1, [])])
    await wait_entity(flux, entity, {"a": 1, "b": 2})
    assert [(e["stream"], e["source"]) for e in history(flux, entity)] == [
        (topics.native, f"kafka:{topics.native}"),
        ("own", "mine"),
    ]


async def test_a_source_topic_with_another_partition_count_reaches_every_entity(node, uid):
    flux, topics = node
    count = 300
    records = [upsert(f"nw-{uid}/{i:03d}", {"i": i}, T0 + i) for i in range(count)]
    await produce(flux.bootstrap, topics.narrow, records)

    def listed() -> list[dict[str, Any]]:
        response = flux.client.get("/api/state/entities", params={"prefix": f"nw-{uid}/", "limit": 1000})
        return response.json() if response.status_code == 200 and len(response.json()) == count else []

    found = await asyncio.to_thread(flux.wait_for, listed, 60, f"{count} entities")
    assert sorted(e["properties"]["i"] for e in found) == list(range(count))
    assert history(flux, f"nw-{uid}/007")[0]["stream"] == "narrow-stream"
    assert history(flux, f"nw-{uid}/007")[0]["source"] == "gw:narrow"


async def test_a_node_killed_while_routing_loses_and_doubles_nothing(new_flux: NodeFactory, uid: str) -> None:
    topic = f"restart-{uid}"
    flux = new_flux(partitions=4, FLUX_SOURCE_TOPICS=f"{topic}:upsert")
    entities = [f"rs-{uid}/{n:02d}" for n in range(20)]
    per_round = 100

    def round_of(first: int) -> list[Record]:
        return [upsert(e, {"seq": s}, T0 + s) for s in range(first, first + per_round) for e in entities]

    await produce(flux.bootstrap, topic, round_of(0))
    await asyncio.to_thread(flux.wait_for, lambda: flux.entity(entities[0]).status_code == 200, 30, "routing")
    flux.kill()  # kill -9 while routing: some fetches written but not committed, read again after the restart
    await produce(flux.bootstrap, topic, round_of(per_round))
    flux.start()
    last = 2 * per_round - 1
    for entity in entities:
        got = await wait_entity(flux, entity, {"seq": last})
        assert got["lastUpdated"] == iso(T0 + 199)
    for entity in entities:
        events = history(flux, entity)
        assert [e["payload"]["properties"]["seq"] for e in events] == list(range(2 * per_round)), entity
        assert len({e["eventId"] for e in events}) == 2 * per_round
