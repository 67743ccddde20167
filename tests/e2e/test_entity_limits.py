"""An entity that would outgrow its cap does not take the node down (issue 18, finding 1).

Ten events of about 0.9 MB, each adding 1,000 properties to one entity, used to make its changelog
record too large for the broker: the worker crashed, and every restart crashed again. Now the
events past ``FLUX_MAX_ENTITY_BYTES`` go to the dead-letter topic with the reason, and the node
keeps folding everything else, across a ``kill -9`` and restart.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

from aiokafka import AIOKafkaConsumer

from tests.conftest import NodeFactory

VALUE = "v" * 880  # 1,000 of these: an event of about 0.9 MB


def big_event(entity: str, n: int) -> dict[str, Any]:
    properties = {f"e{n}-{i:04d}": VALUE for i in range(1_000)}
    return {
        "stream": "bulk",
        "source": "pytest",
        "eventId": f"big-{n}",
        "payload": {"entity_id": entity, "properties": properties},
    }


async def read_dead_letters(bootstrap: str, topic: str, expected: int, timeout: float = 60) -> list[dict[str, Any]]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None, fetch_max_bytes=64 << 20
    )
    await consumer.start()
    found: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(timeout):
            while len(found) < expected:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    found += [json.loads(record.value) for record in records]
    finally:
        await consumer.stop()
    return found


def rejected_total(metrics: str) -> int:
    match = re.search(r"^flux_events_rejected_total ([\d.e+]+)", metrics, re.M)
    assert match, metrics[:2000]
    return int(float(match.group(1)))


async def test_events_past_the_entity_cap_go_to_the_dead_letter_topic_and_the_node_keeps_folding(
    new_flux: NodeFactory, uid: str
) -> None:
    node = new_flux(partitions=2)
    big, other = f"big-{uid}", f"other-{uid}"
    for n in range(10):
        response = await asyncio.to_thread(node.client.post, "/api/events", json=big_event(big, n))
        assert response.status_code == 200, response.text
        assert node.publish(other, {"n": n}).status_code == 200

    dead = await read_dead_letters(node.bootstrap, node.dead_letter_topic, 9)
    assert len(dead) == 9
    assert sorted(d["value"]["eventId"] for d in dead) == [f"big-{n}" for n in range(1, 10)]
    for letter in dead:
        assert f"entity '{big}' would take" in letter["reason"]
        assert "the limit is 1,048,576 (FLUX_MAX_ENTITY_BYTES)" in letter["reason"]
        assert {"topic", "partition", "offset", "index", "value"} <= set(letter)
        assert letter["topic"] == node.events_topic

    assert node.client.get("/ready").status_code == 200 and node.proc is not None and node.proc.poll() is None
    node.wait_entity(other, lambda e: e["properties"] == {"n": 9})
    entity = node.wait_entity(big, lambda e: len(e["properties"]) == 1_000)
    assert all(name.startswith("e0-") for name in entity["properties"])
    assert rejected_total(node.client.get("/metrics").text) == 9

    # Later events to the entity and to others still fold: an update that does not grow it applies.
    assert node.publish(big, {"e0-0000": "small"}).status_code == 200
    node.wait_entity(big, lambda e: e["properties"]["e0-0000"] == "small")

    # A crash and restart: no crash loop, the same state, nothing applied twice.
    node.kill()
    node.start()
    after = node.wait_entity(big, lambda e: len(e["properties"]) == 1_000)
    assert after["properties"] == {**entity["properties"], "e0-0000": "small"}
    assert node.publish(other, {"n": "after restart"}).status_code == 200
    node.wait_entity(other, lambda e: e["properties"] == {"n": "after restart"})
    assert node.client.get("/ready").status_code == 200


async def test_an_event_that_alone_breaks_an_entity_cap_is_refused_at_publish(new_flux: NodeFactory, uid: str) -> None:
    node = new_flux(partitions=1, FLUX_MAX_ENTITY_PROPERTIES="5", FLUX_MAX_ENTITY_BYTES="4096")
    too_many = node.publish(f"wide-{uid}", {str(i): i for i in range(6)})
    assert too_many.status_code == 413
    assert too_many.json()["error"] == (
        f"entity 'wide-{uid}' would have 6 properties; the limit is 5 (FLUX_MAX_ENTITY_PROPERTIES)"
    )
    too_big = node.publish(f"fat-{uid}", {"blob": "x" * 5_000})
    assert too_big.status_code == 413 and "(FLUX_MAX_ENTITY_BYTES)" in too_big.json()["error"]
    batch = node.client.post(
        "/api/events/batch",
        json=[
            {"stream": "s", "source": "t", "payload": {"entity_id": f"ok-{uid}", "properties": {"a": 1}}},
            {"stream": "s", "source": "t", "payload": {"entity_id": f"fat-{uid}", "properties": {"b": "x" * 5_000}}},
        ],
    )
    assert batch.status_code == 200
    assert batch.json()["successful"] == 1 and "events[1]: entity" in batch.json()["results"][1]["error"]
    node.wait_entity(f"ok-{uid}", lambda e: e["properties"] == {"a": 1})
