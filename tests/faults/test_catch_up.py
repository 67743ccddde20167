"""A restarted node is ready only once it caught up with its log, and a replay started while it catches
up takes back nothing the log holds (issue 18: a replay right after a crash had removed thousands of
entities for a while, and `/ready` had said 200 throughout)."""

from __future__ import annotations

import asyncio
import threading
import time

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from flux.model.partitioning import partition_for
from tests.conftest import NodeFactory
from tests.flux_process import FluxProcess

T0 = 1_700_000_000_000


def _envelope(entity_id: str, i: int) -> dict:
    return {
        "stream": "s",
        "source": "catch-up",
        "timestamp": T0 + i,
        "eventId": f"ev-{i}",
        "payload": {"entity_id": entity_id, "properties": {"n": i}},
    }


async def _produce_singles(node: FluxProcess, entity_ids: list[str], first: int = 0) -> None:
    """One event per record (eventIds from ``first`` on), straight to the events topic, as a plain
    Kafka producer would."""
    producer = AIOKafkaProducer(bootstrap_servers=node.bootstrap, acks="all", enable_idempotence=True, linger_ms=5)
    await producer.start()
    try:
        sends = [
            await producer.send(
                node.events_topic,
                orjson.dumps(_envelope(entity_id, i)),
                key=entity_id.encode(),
                partition=partition_for(entity_id, node.partitions),
            )
            for i, entity_id in enumerate(entity_ids, start=first)
        ]
        await asyncio.gather(*sends)
    finally:
        await producer.stop()


async def _rewind_group(node: FluxProcess) -> None:
    """Set the node's consumer group back to offset 0 (the node is stopped: the group is empty), as if it
    had crashed long before committing: its table then holds state far past the committed offsets."""
    consumer = AIOKafkaConsumer(bootstrap_servers=node.bootstrap, group_id=node.app_id, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(node.events_topic, p) for p in range(node.partitions)]
        consumer.assign(tps)
        await consumer.commit(dict.fromkeys(tps, 0))
    finally:
        await consumer.stop()


async def _repeat_changelog_tails(node: FluxProcess) -> None:
    """Append each changelog partition's last record to it once more (a no-op for the table), as a
    crash between a changelog write and its local bookkeeping leaves it: Faust's own recovery then
    has records to read when the node starts, and runs its fetcher while it does."""
    topic = f"{node.app_id}-entities-changelog"
    consumer = AIOKafkaConsumer(bootstrap_servers=node.bootstrap, enable_auto_commit=False)
    producer = AIOKafkaProducer(bootstrap_servers=node.bootstrap, acks="all", enable_idempotence=True)
    await consumer.start()
    await producer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(node.partitions)]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        for tp in tps:
            if ends[tp] == 0:
                continue
            consumer.seek(tp, ends[tp] - 1)
            record = await consumer.getone(tp)
            await producer.send_and_wait(topic, record.value, key=record.key, partition=tp.partition)
    finally:
        await producer.stop()
        await consumer.stop()


def _count(node: FluxProcess, prefix: str) -> int | None:
    """How many entities a list of ``prefix`` gives (None when the node does not answer 200)."""
    found = 0
    after: str | None = None
    while True:
        params = {"prefix": prefix, "limit": 10000, **({"after": after} if after else {})}
        try:
            response = node.client.get("/api/state/entities", params=params, timeout=10)
        except Exception:
            return None
        if response.status_code != 200:
            return None
        page = response.json()
        found += len(page)
        if "link" not in response.headers:
            return found
        after = page[-1]["id"]


def _publish_batches(node: FluxProcess, tag: str, entities: int, total: int) -> None:
    for start in range(0, total, 1000):
        batch = [_envelope(f"{tag}-{i % entities}", i) for i in range(start, start + 1000)]
        response = node.client.post("/api/events/batch", json=batch, params={"wait": "true"})
        assert response.status_code == 200 and response.json()["failed"] == 0, response.text[:300]


def test_a_restarted_node_says_ready_only_once_it_folded_what_its_log_held_at_start(new_flux: NodeFactory) -> None:
    node = new_flux(partitions=2)
    node.stop()
    ids = [f"late-{i}" for i in range(30_000)]
    asyncio.run(_produce_singles(node, ids))  # while the node is down: ~5 s of folding when it starts
    node.launch()
    catching_up: list[str] = []
    deadline = time.monotonic() + 120
    while True:
        assert time.monotonic() < deadline, f"not ready in time:\n{node.log_tail()}"
        try:
            ready = node.client.get("/ready", timeout=2)
        except Exception:
            time.sleep(0.1)
            continue
        if ready.status_code == 200:
            break
        if ready.json()["catching_up"]:
            catching_up.append(ready.json()["detail"])
        time.sleep(0.1)
    assert _count(node, "late-") == len(ids), (
        f"ready, yet entities are missing (said while not ready: {catching_up[-3:]})"
    )


def test_a_replay_started_while_a_node_catches_up_after_a_restart_takes_back_nothing(new_flux: NodeFactory) -> None:
    node = new_flux(partitions=2)
    tag, entities, total = "bg", 5_000, 100_000
    _publish_batches(node, tag, entities, total)
    assert _count(node, f"{tag}-") == entities
    node.stop()
    asyncio.run(_rewind_group(node))  # the reducer reads all 100k again on start (and skips them)
    node.launch()

    seen: list[int | None] = []
    stop = threading.Event()

    def watch_lists() -> None:
        while not stop.is_set():
            seen.append(_count(node, f"{tag}-"))
            time.sleep(0.05)

    def start_replay() -> str | None:
        try:
            response = node.client.post("/api/admin/replay", json={"fromBeginning": True}, timeout=5)
        except Exception:
            return None
        return str(response.json()["jobId"]) if response.status_code == 202 else None

    job_id = node.wait_for(start_replay, timeout=120, what="a replay accepted as soon as the table recovered")
    watcher = threading.Thread(target=watch_lists)
    watcher.start()
    try:

        def finished() -> dict | None:
            job = node.client.get(f"/api/admin/replay/{job_id}").json()
            return job if job["status"] in ("done", "failed", "cancelled") else None

        job = node.wait_for(finished, timeout=180, what=f"replay {job_id}")
        node.wait_ready()
        time.sleep(1)
    finally:
        stop.set()
        watcher.join()
    assert job["status"] == "done", job
    assert job["report"]["entitiesChanged"] == 0 and job["report"]["entitiesRemoved"] == 0, job["report"]
    short = [count for count in seen if count is not None and count != entities]
    assert not short, f"lists gave {short[:10]} of {entities} entities while the node caught up and replayed"
    assert _count(node, f"{tag}-") == entities


def test_a_node_whose_group_has_no_offsets_folds_what_its_log_gained_while_it_was_down(new_flux: NodeFactory) -> None:
    # Faust drops the records it fetches while its recovery runs, then seeks back to the committed
    # offsets; aiokafka leaves a partition without one (or with 0) where it is: after a crash before
    # the group's first commit, or once its offsets expired, those records were not folded until the
    # stall watch read them again 10 s later (issue 18: the kill -9 flake).
    node = new_flux(partitions=2)
    asyncio.run(_produce_singles(node, [f"early-{i}" for i in range(2000)]))
    node.wait_for(lambda: _count(node, "early-") == 2000, timeout=60, what="the first events folded")
    node.stop()
    asyncio.run(_repeat_changelog_tails(node))  # Faust's recovery runs its fetcher when the node starts
    asyncio.run(_rewind_group(node))  # offset 0, which aiokafka takes for no offset at all
    asyncio.run(_produce_singles(node, [f"late-{i}" for i in range(2000)], first=2000))
    node.start()
    node.wait_for(lambda: _count(node, "late-") == 2000, timeout=60, what="the events sent while the node was down")
    assert _count(node, "early-") == 2000
    log = (node.workdir / "flux.log").read_text(errors="replace")
    assert "has not advanced" not in log, f"the stall watch had to read a partition again:\n{node.log_tail()}"
