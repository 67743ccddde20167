"""Publishing straight to the events topic with a plain Kafka producer, as Kafka-native shops do."""

from __future__ import annotations

import asyncio
import json

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from flux.model.partitioning import partition_for


async def _produce(bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes, int | None]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for key, value, partition in records:
            await producer.send_and_wait(topic, value, key=key, partition=partition)
    finally:
        await producer.stop()


async def _read_all(bootstrap: str, topic: str, expected: int, timeout: float = 30) -> list[dict]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    out: list[dict] = []
    try:
        async with asyncio.timeout(timeout):
            while len(out) < expected:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    out += [json.loads(r.value) for r in records]
    finally:
        await consumer.stop()
    return out


def envelope(entity_id: str, props: dict, **extra) -> dict:
    return {"stream": "native", "source": "gateway", "payload": {"entity_id": entity_id, "properties": props}, **extra}


async def test_a_record_keyed_by_entity_id_is_applied_with_a_deterministic_event_id(flux, uid):
    entity = f"native-{uid}"
    await _produce(
        flux.bootstrap, flux.events_topic, [(entity.encode(), json.dumps(envelope(entity, {"v": 1})).encode(), None)]
    )
    got = await asyncio.to_thread(flux.wait_entity, entity, lambda e: True)
    assert got["properties"] == {"v": 1}


async def test_invalid_records_go_to_the_dead_letter_topic_and_the_agent_keeps_going(flux, uid):
    good = f"after-bad-{uid}"
    bad = [
        (b"k1", b"not json at all", None),
        (b"k2", json.dumps({"stream": "s", "payload": {"entity_id": "x", "properties": {}}}).encode(), None),
        (b"k3", b"42", None),
    ]
    await _produce(
        flux.bootstrap,
        flux.events_topic,
        [*bad, (good.encode(), json.dumps(envelope(good, {"ok": True})).encode(), None)],
    )
    await asyncio.to_thread(flux.wait_entity, good, lambda e: True)
    dead = await _read_all(flux.bootstrap, flux.dead_letter_topic, 3)
    reasons = sorted(d["reason"] for d in dead[-3:])
    assert any("not JSON" in r for r in reasons)
    assert "source is required" in reasons
    assert any("must be a JSON object or an array" in r for r in reasons)
    assert all({"topic", "partition", "offset", "value"} <= set(d) for d in dead)


async def test_an_event_on_the_wrong_partition_is_forwarded_to_its_own(flux, uid):
    entity = f"stray-{uid}"
    home = partition_for(entity, flux.partitions)
    wrong = (home + 1) % flux.partitions
    value = json.dumps(envelope(entity, {"where": "forwarded"})).encode()
    await _produce(flux.bootstrap, flux.events_topic, [(None, value, wrong)])
    got = await asyncio.to_thread(flux.wait_entity, entity, lambda e: True)
    assert got["properties"] == {"where": "forwarded"}


async def test_a_packed_record_of_many_events_is_applied_in_full(flux, uid):
    partition = partition_for(f"pack-{uid}-0", flux.partitions)
    ids = [i for i in (f"pack-{uid}-{n}" for n in range(200)) if partition_for(i, flux.partitions) == partition]
    value = json.dumps([envelope(i, {"n": n}, timestamp=1000 + n) for n, i in enumerate(ids)]).encode()
    await _produce(flux.bootstrap, flux.events_topic, [(None, value, partition)])
    await asyncio.to_thread(
        flux.wait_for,
        lambda: len(flux.client.get(f"/api/state/entities?prefix=pack-{uid}-").json()) == len(ids),
        30,
        "packed",
    )


async def test_records_of_an_aborted_transaction_are_never_applied(flux, uid):
    ghost, marker = f"ghost-{uid}", f"marker-{uid}"
    producer = AIOKafkaProducer(
        bootstrap_servers=flux.bootstrap, transactional_id=f"abort-{uid}", enable_idempotence=True
    )
    await producer.start()
    try:
        await producer.begin_transaction()
        await producer.send_and_wait(
            flux.events_topic, json.dumps(envelope(ghost, {"x": 1})).encode(), key=ghost.encode()
        )
        await producer.abort_transaction()
    finally:
        await producer.stop()
    await _produce(
        flux.bootstrap, flux.events_topic, [(ghost.encode(), json.dumps(envelope(marker, {"m": 1})).encode(), None)]
    )
    await asyncio.to_thread(flux.wait_entity, marker, lambda e: True)
    assert flux.entity(ghost).status_code == 404
