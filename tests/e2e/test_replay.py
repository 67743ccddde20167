"""Replays (POST /api/admin/replay, ``flux replay``): state re-derived from the log, on a real broker.

What a replay request may say and who may make it are proven in process: tests/api/test_replay_requests.py.
"""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import threading
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from flux.model.partitioning import partition_for
from tests.conftest import NodeFactory
from tests.flux_process import FluxProcess
from tests.ws_client import Subscriber

T0 = 1_700_000_000_000


def event(entity_id: str, ts: int, event_id: str | None = None, op: str | None = None, **props: Any) -> dict:
    body: dict[str, Any] = {
        "stream": "s",
        "source": "replay-test",
        "timestamp": ts,
        "payload": {"entity_id": entity_id, "properties": props},
    }
    if event_id is not None:
        body["eventId"] = event_id
    if op is not None:
        body["op"] = op
        del body["payload"]["properties"]
    return body


def publish_all(flux: FluxProcess, events: list[dict], wait: bool = True) -> None:
    params = {"wait": str(wait).lower(), "wait_timeout_ms": "60000"}
    response = flux.client.post("/api/events/batch", json=events, params=params)
    assert response.status_code == 200, response.text[:500]
    assert response.json()["failed"] == 0, [r for r in response.json()["results"] if r["error"]][:3]


def snapshot(flux: FluxProcess) -> dict[str, dict]:
    """Every entity the node serves, by id."""
    found: dict[str, dict] = {}
    params = {"limit": "10000"}
    while True:
        response = flux.client.get("/api/state/entities", params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        found.update({entity["id"]: entity for entity in page})
        if "link" not in response.headers:
            return found
        params["after"] = page[-1]["id"]


def start_replay(flux: FluxProcess, **body: Any) -> dict:
    response = flux.client.post("/api/admin/replay", json=body)
    assert response.status_code == 202, response.text
    assert response.headers["location"] == f"/api/admin/replay/{response.json()['jobId']}"
    return response.json()  # type: ignore[no-any-return]


def finished(flux: FluxProcess, job_id: str, timeout: float = 120.0) -> dict:
    def probe() -> dict | None:
        job = flux.client.get(f"/api/admin/replay/{job_id}").json()
        return job if job["status"] in ("done", "failed", "cancelled") else None

    job = flux.wait_for(probe, timeout, f"replay {job_id}")
    return job  # type: ignore[no-any-return]


def replay(flux: FluxProcess, **body: Any) -> dict:
    job = finished(flux, start_replay(flux, **body)["jobId"])
    assert job["status"] == "done", job
    return job


def end_offsets(flux: FluxProcess) -> dict[int, int]:
    async def read() -> dict[int, int]:
        consumer = AIOKafkaConsumer(bootstrap_servers=flux.bootstrap)
        await consumer.start()
        try:
            tps = [TopicPartition(flux.events_topic, p) for p in range(flux.partitions)]
            return {tp.partition: offset for tp, offset in (await consumer.end_offsets(tps)).items()}
        finally:
            await consumer.stop()

    return asyncio.run(read())


def test_a_replay_of_an_unchanged_log_changes_nothing_and_reports_what_it_did(new_flux: NodeFactory) -> None:
    flux = new_flux(partitions=2)
    events = [event(f"e-{i % 30}", T0 + i, f"ev-{i}", n=i, parity=i % 2) for i in range(3000)]
    events += [event("e-7", T0 + 5000, op="delete"), event("e-8", T0 + 10, op="delete")]
    publish_all(flux, events)
    before = snapshot(flux)
    assert len(before) == 29 and "e-7" not in before

    job = replay(flux, fromBeginning=True)

    assert snapshot(flux) == before
    assert job["events"] == 3002
    assert job["report"]["entitiesChanged"] == 0
    assert job["report"]["entities"] == 29
    assert job["percent"] == 100.0 and job["etaSeconds"] is None
    assert [p["partition"] for p in job["partitions"]] == [0, 1]
    assert all(p["position"] == p["end"] and p["start"] == 0 for p in job["partitions"])
    listed = flux.client.get("/api/admin/replay").json()
    assert [j["jobId"] for j in listed] == [job["jobId"]]
    # up to now: the end of every partition lies past its last record (a transaction marker)
    until_now = replay(flux, fromBeginning=True, toTimestamp=int(time.time() * 1000))
    assert until_now["report"]["entitiesChanged"] == 0 and snapshot(flux) == before


def test_a_replay_to_a_time_rolls_state_back_and_tells_subscribers(new_flux: NodeFactory) -> None:
    flux = new_flux(partitions=2)
    publish_all(flux, [event("x", T0, a=1), event("y", T0, a=1)])
    time.sleep(0.05)
    cut = int(time.time() * 1000)
    time.sleep(0.05)
    publish_all(flux, [event("x", T0 + 1, a=2, b=2), event("z", T0 + 1, "z1", a=2), event("y", T0 + 2, op="delete")])

    async def watch() -> tuple[dict, list[dict]]:
        async with Subscriber(flux.url) as subscriber:
            await subscriber.subscribe("*")
            job = await asyncio.to_thread(replay, flux, fromBeginning=True, toTimestamp=cut)
            messages = await subscriber.collect(lambda got: len(got) >= 4, timeout=10)
            messages += await subscriber.quiet_for(0.5)
            return job, messages

    job, messages = asyncio.run(watch())

    assert snapshot(flux) == {
        "x": {"id": "x", "properties": {"a": 1}, "lastUpdated": "2023-11-14T22:13:20.000Z"},
        "y": {"id": "y", "properties": {"a": 1}, "lastUpdated": "2023-11-14T22:13:20.000Z"},
    }
    assert job["report"] | {"seconds": 0, "foldSeconds": 0, "writesPausedMs": 0} == {
        "seconds": 0,
        "foldSeconds": 0,
        "writesPausedMs": 0,
        "entities": 2,
        "entitiesChanged": 3,
        "entitiesRemoved": 1,
    }
    seen = {(m["type"], m["entity_id"], m.get("property"), m.get("value")) for m in messages}
    assert seen == {
        ("property_removed", "x", "b", None),
        ("state_update", "x", "a", 1),
        ("state_update", "y", "a", 1),
        ("entity_deleted", "z", None, None),
    }
    assert len(messages) == 4
    # the rolled-back events stay in history, and new events apply on top of the rolled-back state
    history = flux.client.get("/api/events", params={"entity": "x", "since": "0"}).json()
    assert [e["payload"]["properties"] for e in history] == [{"a": 1}, {"a": 2, "b": 2}]
    publish_all(flux, [event("x", T0 + 3, c=3), event("z", T0 + 1, "z1", a=2)])
    assert flux.entity("x").json()["properties"] == {"a": 1, "c": 3}
    assert flux.entity("z").status_code == 404, "a rolled-back event re-sent with its eventId stays applied once"


def test_a_replay_from_offsets_rebuilds_those_partitions_from_there_only(new_flux: NodeFactory) -> None:
    flux = new_flux(partitions=2)
    ids = [f"k-{i}" for i in range(20)]
    publish_all(flux, [event(entity_id, T0, v=1) for entity_id in ids])
    middle = end_offsets(flux)
    publish_all(flux, [event(entity_id, T0 + 1, w=2) for entity_id in ids[::2]])
    before = snapshot(flux)

    job = replay(flux, fromOffsets=f"0:{middle[0]}")

    after = snapshot(flux)
    on_0 = {entity_id for entity_id in ids if partition_for(entity_id, 2) == 0}
    assert on_0 and len(on_0) < len(ids)
    for entity_id in ids:
        if entity_id not in on_0:
            assert after[entity_id] == before[entity_id]
        elif entity_id in ids[::2]:
            assert after[entity_id]["properties"] == {"w": 2}
        else:
            assert entity_id not in after
    assert [p["partition"] for p in job["partitions"]] == [0]
    assert job["partitions"][0]["start"] == middle[0]
    assert job["report"]["entitiesChanged"] == len(on_0)
    assert job["report"]["entitiesRemoved"] == len(on_0 - set(ids[::2]))


def test_a_replay_while_events_arrive_loses_none_of_them(new_flux: NodeFactory) -> None:
    flux = new_flux(partitions=4)
    publish_all(flux, [event(f"live-{i % 40}", T0 + i, base=i) for i in range(20000)], wait=False)
    sent: list[int] = []
    stop = threading.Event()

    def traffic() -> None:
        n = 0
        while not stop.is_set():
            batch = [event(f"live-{(n + j) % 40}", T0 + 100_000 + n + j, **{f"p{n + j}": n + j}) for j in range(50)]
            publish_all(flux, batch, wait=False)
            sent.extend(range(n, n + 50))
            n += 50

    writer = threading.Thread(target=traffic)
    writer.start()
    try:
        time.sleep(0.5)
        job = replay(flux, fromBeginning=True)
        time.sleep(0.5)
    finally:
        stop.set()
        writer.join()
    publish_everywhere(flux, "after")  # every partition applied what was published before

    properties: dict[str, Any] = {}
    for entity in snapshot(flux).values():
        properties.update(entity["properties"])
    missing = [n for n in sent if properties.get(f"p{n}") != n]
    assert not missing, f"{len(missing)} of {len(sent)} events lost, e.g. {missing[:5]}"
    assert job["status"] == "done" and job["events"] >= 20000
    assert len(sent) > 500, "live traffic flowed during the replay"
    # and the live state is exactly the fold of the log
    again = replay(flux, fromBeginning=True)
    assert again["report"]["entitiesChanged"] == 0


def test_a_replay_from_offsets_of_a_partition_this_node_does_not_serve_is_400(new_flux: NodeFactory) -> None:
    flux = new_flux(partitions=2)
    response = flux.client.post("/api/admin/replay", json={"fromOffsets": {"7": 0}})
    assert response.status_code == 400, response.text
    assert "partition(s) 7 not served by this node (it serves 0, 1" in response.json()["error"]


def publish_everywhere(flux: FluxProcess, tag: str) -> None:
    """One event on every partition, waited for: the node has applied everything published before."""
    ids = {partition_for(f"{tag}-{i}", flux.partitions): f"{tag}-{i}" for i in range(200)}
    publish_all(flux, [event(entity_id, T0, done=True) for entity_id in ids.values()])


def test_a_replay_of_200k_events_equals_the_live_state_and_can_be_cancelled_first(new_flux: NodeFactory) -> None:
    flux = new_flux(partitions=4)
    rng = random.Random(7)
    for _ in range(40):
        batch = [
            event(f"big-{rng.randrange(5000)}", T0 + rng.randrange(10**6), **{f"p{rng.randrange(20)}": rng.random()})
            if rng.random() > 0.01
            else event(f"big-{rng.randrange(5000)}", T0 + rng.randrange(10**6), op="delete")
            for _ in range(5000)
        ]
        publish_all(flux, batch, wait=False)
    publish_everywhere(flux, "settled")
    before = snapshot(flux)
    assert len(before) > 4000

    job = start_replay(flux, fromBeginning=True)
    busy = flux.client.post("/api/admin/replay", json={"fromBeginning": True})
    cancelled = flux.client.delete(f"/api/admin/replay/{job['jobId']}")

    assert busy.status_code == 409 and "already running" in busy.json()["error"]
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled" and cancelled.json()["report"] is None
    assert snapshot(flux) == before
    assert not any((flux.workdir / "data" / "replay").glob("*")), "the new generation's files are removed"
    again = flux.client.delete(f"/api/admin/replay/{job['jobId']}")
    assert again.status_code == 200 and again.json()["status"] == "cancelled"

    done = replay(flux, fromBeginning=True)

    assert snapshot(flux) == before
    assert done["events"] == 200_000 + flux.partitions
    assert done["report"]["entitiesChanged"] == 0
    assert done["report"]["entities"] == len(before)


def test_the_replay_command_shows_progress_and_a_report(new_flux: NodeFactory) -> None:
    flux = new_flux(partitions=2)
    publish_all(flux, [event(f"cli-{i % 10}", T0 + i, v=i) for i in range(2000)])

    run = subprocess.run(
        [sys.executable, "-m", "api.cli", "replay", "--from-beginning", "--url", flux.url],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "FLUX_URL": "http://127.0.0.1:1"},
    )

    assert run.returncode == 0, run.stderr
    assert "replay: 100.0%" in run.stderr and "[done]" in run.stderr
    assert "2,000 events" in run.stdout and "0 entities changed" in run.stdout
