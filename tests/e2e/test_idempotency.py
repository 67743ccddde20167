"""X-Idempotency-Key on a real broker: the keys are durable and every process of an app honours them.

Replayed answers, reused keys and what a key is scoped to are proven in process:
tests/api/test_idempotency_keys.py.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from flux.config import Settings
from tests.conftest import NodeFactory, _node
from tests.flux_process import FluxProcess


def event(entity_id: str, **props: Any) -> dict[str, Any]:
    return {
        "stream": "s",
        "source": "a",
        "timestamp": 1_700_000_000_000,
        "payload": {"entity_id": entity_id, "properties": props},
    }


def keyed(key: str) -> dict[str, str]:
    return {"X-Idempotency-Key": key}


@pytest.fixture(scope="module")
def two_processes(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FluxProcess]:
    """A node with two HTTP processes on its port (the kernel spreads connections between them)."""
    node = _node(kafka_bootstrap, tmp_path_factory.mktemp("idem"), 4, {"FLUX_HTTP_PROCESSES": "2"})
    node.start()
    yield node
    node.stop()


def events_published(flux: FluxProcess) -> int:
    """How many records the events topic holds (its end offsets, summed)."""

    async def read() -> int:
        consumer = AIOKafkaConsumer(bootstrap_servers=flux.bootstrap)
        await consumer.start()
        try:
            tps = [TopicPartition(flux.events_topic, p) for p in range(flux.partitions)]
            return sum((await consumer.end_offsets(tps)).values())
        finally:
            await consumer.stop()

    return asyncio.run(read())


def history(flux: FluxProcess, entity_id: str) -> list[dict[str, Any]]:
    response = flux.client.get("/api/events", params={"entity": entity_id, "since": "0"})
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def test_keys_survive_a_restart_and_are_honoured_by_every_process(new_flux: NodeFactory, uid: str) -> None:
    first_node = new_flux(2)
    other_node = new_flux(join=first_node)
    key = f"k-{uuid.uuid4()}"
    body = [event(f"i{uid}/d", v=1)]
    answer = first_node.client.post("/api/events/batch", json=body, headers=keyed(key))
    assert answer.status_code == 200
    on_other = other_node.wait_for(
        lambda: (
            (r := other_node.client.post("/api/events/batch", json=body, headers=keyed(key))).headers.get(
                "idempotent-replayed"
            )
            and r
        ),
        what="the other process replays the answer",
    )
    assert on_other.json() == answer.json()
    other_node.stop()
    first_node.stop()
    first_node.start()
    after = first_node.client.post("/api/events/batch", json=body, headers=keyed(key))
    assert after.headers["idempotent-replayed"] == "true" and after.json() == answer.json()


def test_a_keyed_batch_of_the_largest_size_answers_and_a_retry_publishes_nothing(
    two_processes: FluxProcess, uid: str
) -> None:
    # As many events as a batch may hold, half of them refused (each result its own): the whole answer
    # is megabytes, far over the 1 MiB a broker takes in one record.
    most = Settings().max_batch_events
    batch: list[dict[str, Any]] = [event(f"big{uid}/{n % 100}", n=n) for n in range(most // 2)]
    batch += [{"stream": "s"}] * (most - len(batch))
    key = f"k-{uuid.uuid4()}"
    with httpx.Client(base_url=two_processes.url, timeout=120) as client:
        first = client.post("/api/events/batch", json=batch, headers=keyed(key))
        assert first.status_code == 200, first.text[:500]
        assert first.json()["successful"] == most // 2 and len(first.content) > 4 * 1_048_576
        published = events_published(two_processes)
        for _ in range(4):  # any of the HTTP processes
            again = client.post("/api/events/batch", json=batch, headers=keyed(key))
            assert again.status_code == 200 and again.headers.get("idempotent-replayed") == "true", again.text[:500]
            assert again.json() == first.json()
    assert events_published(two_processes) == published


def test_racing_first_attempts_on_two_processes_answer_alike_and_apply_once(
    two_processes: FluxProcess, uid: str
) -> None:
    entity = f"race{uid}/a"
    body = [event(entity, v=1), event(entity, w=2)]  # no eventIds: derived from the request
    for attempt in range(3):
        key = f"k-{uuid.uuid4()}"

        def post(_: int, key: str = key) -> httpx.Response:
            with httpx.Client(base_url=two_processes.url, timeout=30) as client:  # a connection each
                return client.post("/api/events/batch", json=body, headers=keyed(key))

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(post, range(16)))
        assert {a.status_code for a in answers} == {200}
        assert len({a.text for a in answers}) == 1, "every attempt answers the same"
        ids = {r["eventId"] for r in answers[0].json()["results"]}
        two_processes.wait_for(
            lambda ids=ids: ids <= {e["eventId"] for e in history(two_processes, entity)}, what="applied"
        )
        assert len(history(two_processes, entity)) == 2 * (attempt + 1), "each event applied once"


def test_a_key_used_again_after_its_ttl_is_a_new_request(new_flux: NodeFactory, uid: str) -> None:
    flux = new_flux(2, FLUX_IDEMPOTENCY_TTL_S="2")
    entity = f"ttl{uid}/a"
    key = f"k-{uuid.uuid4()}"
    body = event(entity, v=1)  # no eventId: derived from the request
    first = flux.client.post("/api/events", json=body, headers=keyed(key), params={"wait": "true"})
    assert first.status_code == 200
    time.sleep(2.5)
    later = flux.client.post("/api/events", json=body, headers=keyed(key), params={"wait": "true"})
    assert later.status_code == 200 and "idempotent-replayed" not in later.headers
    assert later.json()["eventId"] != first.json()["eventId"]
    assert sorted(e["eventId"] for e in history(flux, entity)) == sorted(
        [first.json()["eventId"], later.json()["eventId"]]
    )
