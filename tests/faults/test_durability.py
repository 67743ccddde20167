"""Durability: no acknowledged event is lost when Flux or the broker restarts or crashes."""

from __future__ import annotations

import shutil
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest

from flux.localkafka import LocalKafka, free_port
from tests.flux_process import FluxProcess

ENTITIES = 40


def _batch(start: int, size: int, tag: str) -> list[dict]:
    """Events ``start..start+size``: event i sets property p<i> = i on entity <tag>-<i % ENTITIES>."""
    return [
        {
            "stream": "load",
            "source": "dur",
            "timestamp": 1_000_000 + i,
            "payload": {"entity_id": f"{tag}-{i % ENTITIES}", "properties": {f"p{i}": i}},
        }
        for i in range(start, start + size)
    ]


def _assert_contains_all(node: FluxProcess, tag: str, acked: list[int]) -> None:
    """Every acknowledged event's property is in the state, with its value."""
    expected: dict[str, dict[str, int]] = {}
    for i in acked:
        expected.setdefault(f"{tag}-{i % ENTITIES}", {})[f"p{i}"] = i

    missing: list[str] = []

    def all_there() -> bool:
        missing.clear()
        for entity_id, props in expected.items():
            response = node.entity(entity_id)
            if response.status_code != 200:
                missing.append(f"{entity_id}: {response.status_code}")
                continue
            got = response.json()["properties"]
            missing.extend(f"{entity_id}.{k}" for k, v in props.items() if got.get(k) != v)
        return not missing

    try:
        node.wait_for(all_there, timeout=60, what=f"{len(acked)} acknowledged events in state")
    except AssertionError as exc:
        ready = node.client.get("/ready").text
        raise AssertionError(
            f"{exc}; {len(missing)} missing, e.g. {missing[:8]}; /ready: {ready}; log:\n{node.log_tail(80)}"
        ) from None


def test_a_graceful_restart_keeps_every_acknowledged_event(new_flux, uid):
    node = new_flux()
    acked: list[int] = []
    for start in range(0, 2000, 250):
        assert node.client.post("/api/events/batch", json=_batch(start, 250, uid)).status_code == 200
        acked += range(start, start + 250)
    for i in range(2000, 2020):
        assert node.client.post("/api/events", json=_batch(i, 1, uid)[0]).status_code == 200
        acked.append(i)
    _assert_contains_all(node, uid, acked)
    node.stop()
    node.start()
    _assert_contains_all(node, uid, acked)
    assert node.client.post("/api/events", json=_batch(5000, 1, uid)[0]).status_code == 200
    _assert_contains_all(node, uid, [*acked, 5000])


def _load(node: FluxProcess, tag: str, acked: list[int], stop: threading.Event) -> None:
    client = httpx.Client(base_url=node.url, timeout=10)
    start = 0
    while not stop.is_set():
        try:
            if client.post("/api/events/batch", json=_batch(start, 200, tag)).status_code == 200:
                acked.extend(range(start, start + 200))
        except httpx.HTTPError:
            pass  # the node is down: nothing acknowledged
        start += 200


def test_kill_9_during_load_loses_no_acknowledged_event(new_flux, uid):
    node = new_flux()
    acked: list[int] = []
    stop = threading.Event()
    loader = threading.Thread(target=_load, args=(node, uid, acked, stop))
    loader.start()
    node.wait_for(lambda: len(acked) >= 4000, timeout=60, what="load under way")
    node.kill()
    stop.set()
    loader.join()
    assert len(acked) >= 4000
    node.start()
    _assert_contains_all(node, uid, acked)


def test_state_is_rebuilt_from_the_changelog_after_losing_local_rocksdb(new_flux, uid):
    node = new_flux()
    acked = list(range(0, 1500))
    for start in range(0, 1500, 500):
        assert node.client.post("/api/events/batch", json=_batch(start, 500, uid)).status_code == 200
    _assert_contains_all(node, uid, acked)
    node.kill()
    shutil.rmtree(node.workdir / "data")
    node.start()
    _assert_contains_all(node, uid, acked)


@pytest.fixture
def own_broker(tmp_path: Path):
    """A broker of this test alone, so that stopping it disturbs no other test."""
    broker = LocalKafka(tmp_path / "kafka", port=free_port(), controller_port=free_port())
    broker.start()
    yield broker
    broker.stop()


def test_broker_crash_and_restart_loses_no_acknowledged_event_and_flux_recovers(own_broker, tmp_path, uid):
    name = f"b{uuid.uuid4().hex[:8]}"
    node = FluxProcess(own_broker.bootstrap, tmp_path / name, free_port(), name, 4, {"FLUX_PUBLISH_TIMEOUT_MS": "3000"})
    node.start()
    try:
        acked = list(range(0, 1000))
        assert node.client.post("/api/events/batch", json=_batch(0, 1000, uid)).status_code == 200
        _assert_contains_all(node, uid, acked)
        own_broker.kill()
        response = node.client.post("/api/events", json=_batch(2000, 1, uid)[0])
        assert response.status_code == 503 and "error" in response.json()
        own_broker.start()
        if not node.wait_ready_or_exit(90):
            # The node could not go on while the broker was away (a Faust service crashed on it) and
            # left with code 1, as docs/operations.md promises: its supervisor starts it again.
            assert node.proc is not None and node.proc.returncode == 1, node.log_tail()
            print(f"\nFAULT broker restart: the node exited with code 1 and was restarted\n{node.log_tail(5)}")
            node.start()
        deadline = time.monotonic() + 60
        while node.client.post("/api/events/batch", json=_batch(1000, 500, uid)).status_code != 200:
            assert time.monotonic() < deadline, "Flux did not accept events after the broker came back"
            time.sleep(0.5)
        acked += range(1000, 1500)
        _assert_contains_all(node, uid, acked)
        node.stop()
        node.start()
        _assert_contains_all(node, uid, acked)
    finally:
        node.stop()
