"""The control channel between a node's reducer process and its HTTP processes, over a real Unix socket."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from api.http_server import HttpServer
from api.workers.control import (
    STALE_AFTER_S,
    ControlLink,
    ReducerPassThrough,
    StatusSource,
    WorkerRoster,
    install_control,
    status_from_json,
    status_to_json,
)
from flux.metrics import PUBLISH, RELAYED, Metrics, WorkerCounters
from flux.model.state import Readiness, TableStatus
from flux.prometheus import prometheus_text
from tests.api.memory import MemoryNode


def a_status() -> TableStatus:
    return TableStatus(
        recovered=True,
        active=[0, 2],
        owners={"http://a:3000": [0, 2], "http://b:3000": [1, 3]},
        paths={0: "/data/entities-0.db", 2: "/data/entities-2.db"},
        rebuilding={2: (10, 50)},
        readiness=Readiness(True, True, True, [0, 2], "", {1: 3}),
        entities=12,
        generation=4,
    )


def test_the_status_survives_its_wire_form() -> None:
    status = a_status()
    assert status_from_json(status_to_json(status)) == status


def test_worker_counters_read_only_integers() -> None:
    assert WorkerCounters.from_json({"published": 3, "websocket_connections": "7", "x": 1}) == WorkerCounters(3)
    assert WorkerCounters.from_json(None) == WorkerCounters()


def test_the_node_metrics_add_up_the_http_processes() -> None:
    metrics = Metrics()
    metrics.published(2, ["a"])
    roster = WorkerRoster(metrics)
    roster.report(0, True, WorkerCounters(published=5, publishers_active=1, websocket_connections=3))
    roster.report(1, True, WorkerCounters(published=7, websocket_connections=1, websocket_dropped=2))
    text = prometheus_text(metrics, 0)
    assert "flux_events_published_total 14.0\n" in text
    assert "flux_websocket_connections 4.0\n" in text
    assert "flux_websocket_dropped_total 2.0\n" in text
    assert "flux_publishers_active 2.0\n" in text
    roster.forget(0)
    text = prometheus_text(metrics, 0)
    assert "flux_events_published_total 14.0\n" in text and "flux_websocket_connections 1.0\n" in text
    assert roster.serving == {1}


@pytest.fixture
async def reducer(tmp_path: Path) -> AsyncIterator[tuple[MemoryNode, WorkerRoster, Path, list[TableStatus]]]:
    node = MemoryNode()
    roster = WorkerRoster(node.metrics)
    statuses = [a_status()]

    async def readiness() -> Readiness:
        return statuses[-1].readiness

    install_control(node.app, roster, StatusSource(lambda: statuses[-1], readiness))
    socket_path = tmp_path / "reducer.sock"
    server = HttpServer(node.settings, node.app, uds=str(socket_path))
    await server.start()
    try:
        yield node, roster, socket_path, statuses
    finally:
        await server.stop()


async def test_an_http_process_learns_the_table_status_and_reports_its_counters(reducer: tuple) -> None:
    node, roster, socket_path, _ = reducer
    counters = WorkerCounters(published=9, websocket_connections=2)
    link = ControlLink(str(socket_path), 1, lambda: counters)
    await link.start()
    try:
        assert link.status() == a_status()
        link.serving = True
        assert await link.sync()
        assert roster.serving == {1}
        assert "flux_events_published_total 9.0\n" in prometheus_text(node.metrics, 0)
    finally:
        await link.stop()


async def test_an_http_process_that_hears_nothing_serves_nothing(reducer: tuple) -> None:
    _, _, socket_path, _ = reducer
    link = ControlLink(str(socket_path), 0, WorkerCounters)
    await link.start()
    try:
        assert link.status().recovered
        await link.stop()  # no more syncs: the last word ages
        link._heard -= STALE_AFTER_S + 1
        stale = link.status()
        assert not stale.recovered and stale.active == [] and not stale.readiness.ready
        assert "does not answer" in stale.readiness.detail
    finally:
        await link.client.aclose()


async def test_metrics_and_replays_pass_through_to_the_reducer(reducer: tuple, tmp_path: Path) -> None:
    _, roster, socket_path, _ = reducer
    roster.report(0, True, WorkerCounters(published=4))
    link = ControlLink(str(socket_path), 1, WorkerCounters)
    await link.start()
    try:
        other = MemoryNode()  # the HTTP process's own app: it must not answer these itself
        app = ReducerPassThrough(other.app, link)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://flux") as client:
            metrics = await client.get("/metrics")
            assert metrics.status_code == 200 and "flux_events_published_total 4.0\n" in metrics.text
            assert (await client.get("/api/admin/replay")).json() == []
            assert (await client.get("/health")).json() == {"status": "ok"}
    finally:
        await link.stop()


async def test_a_reducer_that_does_not_answer_gives_a_json_503(tmp_path: Path) -> None:
    link = ControlLink(str(tmp_path / "nobody.sock"), 0, WorkerCounters)
    try:
        app = ReducerPassThrough(MemoryNode().app, link)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://flux") as client:
            answer = await client.get("/metrics")
        assert answer.status_code == 503 and "reducer process does not answer" in answer.json()["error"]
    finally:
        await link.client.aclose()


async def test_a_sync_carries_only_the_histogram_series_that_changed(reducer: tuple) -> None:
    node, _, socket_path, _ = reducer
    worker = Metrics()
    bodies: list[dict] = []
    link = ControlLink(str(socket_path), 2, worker.counters)
    send = link.client.post

    async def spy(url: str, json: dict) -> httpx.Response:
        bodies.append(json["counters"])
        return await send(url, json=json)

    link.client.post = spy  # type: ignore[method-assign]
    worker.observe(PUBLISH, 4)
    worker.observe(RELAYED, 9)
    await link.start()
    try:
        assert [key for key, _ in bodies[-1]["histograms"]] == [["publish"], ["relay"]]
        worker.observe(PUBLISH, 6)
        assert await link.sync()
        assert [key for key, _ in bodies[-1]["histograms"]] == [["publish"]]
        assert await link.sync()
        assert bodies[-1]["histograms"] == [] and bodies[-1]["rss_bytes"] > 0
        text = prometheus_text(node.metrics, 0)
        assert "flux_publish_latency_ms_count 2.0\n" in text and "flux_relay_latency_ms_count 1.0\n" in text
        assert 'flux_http_process_resident_memory_bytes{process="http-2"}' in text
    finally:
        await link.stop()


@contextlib.asynccontextmanager
async def through_the_reducer(socket_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """A client of an HTTP process's app whose pass-through reaches the reducer on ``socket_path``."""
    link = ControlLink(str(socket_path), 1, WorkerCounters)
    await link.start()
    try:
        app = ReducerPassThrough(MemoryNode().app, link)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://flux") as client:
            yield client
    finally:
        await link.stop()


async def test_a_path_is_passed_through_as_the_client_encoded_it(reducer: tuple) -> None:
    async with through_the_reducer(reducer[2]) as client:
        answer = await client.get("/api/admin/replay/tUAk%F3%A6%9B%B0%C2%AB%06eB")
    assert answer.status_code == 404 and "error" in answer.json()


async def test_header_values_with_surrounding_whitespace_are_passed_through(reducer: tuple) -> None:
    async with through_the_reducer(reducer[2]) as client:
        answer = await client.get("/api/admin/replay", headers={"Authorization": "Bearer ", "X-Any": " x "})
    assert answer.status_code == 200 and answer.json() == []
