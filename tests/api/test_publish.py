"""Publishing (POST /api/events, /api/events/batch): validation, sizes, per-item batch results, ?wait=true."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from flux.kafka.publisher import PublishFailed
from tests.api.helpers import assert_refused, event
from tests.api.memory import MemoryNode, node_settings

PATHS = ("/api/events", "/api/events/batch")


async def test_batch_accepts_an_events_object_and_reports_each_result_in_order(client: httpx.AsyncClient) -> None:
    events = [
        {"stream": "sensors", "source": "agent-01", "payload": {"entity_id": "b1", "properties": {"temp": 22}}},
        {"stream": "sensors", "payload": {"entity_id": "b2", "properties": {"temp": 23}}},
        {"stream": "sensors", "source": "agent-01", "payload": {"entity_id": "b3", "properties": {"temp": 24}}},
    ]
    response = await client.post("/api/events/batch", json={"events": events})
    assert response.status_code == 200
    body = response.json()
    assert body["successful"] == 2 and body["failed"] == 1
    assert [r["error"] is None for r in body["results"]] == [True, False, True]
    assert body["results"][1] == {"eventId": None, "stream": "sensors", "error": "events[1]: source is required"}
    assert (await client.get("/api/state/entities/b1")).json()["properties"] == {"temp": 22}
    assert (await client.get("/api/state/entities/b3")).json()["properties"] == {"temp": 24}
    assert (await client.get("/api/state/entities/b2")).status_code == 404


async def test_batch_accepts_a_bare_array(client: httpx.AsyncClient) -> None:
    events = [event(f"ns/d{i:02d}", 1708694400000 + i, i=i) for i in range(50)]
    response = await client.post("/api/events/batch", json=events)
    assert response.status_code == 200 and response.json()["successful"] == 50
    assert len((await client.get("/api/state/entities", params={"namespace": "ns"})).json()) == 50


def _body(**fields: Any) -> dict[str, Any]:
    return {"stream": "s", "source": "a", "payload": {"entity_id": "x", "properties": {}}, **fields}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"source": "a", "payload": {"entity_id": "x", "properties": {}}}, "stream is required"),
        ({"stream": "s", "payload": {"entity_id": "x", "properties": {}}}, "source is required"),
        (_body(stream=5), "stream must be a string"),
        ({"stream": "s", "source": "a"}, "payload is required"),
        (_body(payload=[]), "payload must be an object"),
        (_body(payload={"properties": {}}), "payload.entity_id is required"),
        (_body(payload={"entity_id": "", "properties": {}}), "payload.entity_id must not be empty"),
        (_body(payload={"entity_id": "x"}), "payload.properties is required"),
        (_body(payload={"entity_id": "x", "properties": [1]}), "payload.properties must be an object"),
        (_body(payload={"entity_id": "x", "properties": "v"}), "payload.properties must be an object"),
        (_body(timestamp=1.5), "timestamp must be an integer"),
        (_body(timestamp="2024"), "timestamp must be an integer"),
        (_body(timestamp=True), "timestamp must be an integer"),
        (_body(timestamp=-1), "timestamp must be between"),
        (_body(eventId=7), "eventId must be a non-empty string"),
        ([1, 2], "event must be a JSON object"),
        (_body(eventId="e" * 129), "eventId must be at most 128 characters"),
        (_body(payload={"entity_id": "a\0b", "properties": {}}), "must not contain the NUL character"),
        (_body(payload={"entity_id": "x" * 513, "properties": {}}), "payload.entity_id must be at most 512"),
        (_body(op="upsert"), 'op must be "delete" or absent'),
        (_body(op="delete"), "a delete event carries no payload.properties"),
    ],
)
async def test_invalid_event_gets_a_json_error_naming_the_field(
    client: httpx.AsyncClient, body: Any, message: str
) -> None:
    assert_refused(await client.post("/api/events", json=body), 400, message)


@pytest.mark.parametrize(
    ("raw", "message"),
    [(b"{bad", "malformed JSON"), (b"", "request body is empty"), (b"\xff\xfe", "malformed JSON")],
)
async def test_malformed_body_gets_400(client: httpx.AsyncClient, raw: bytes, message: str) -> None:
    for path in PATHS:
        response = await client.post(path, content=raw, headers={"content-type": "application/json"})
        assert_refused(response, 400, message)


async def test_batch_errors_name_the_index(client: httpx.AsyncClient) -> None:
    cases = [
        ({"nope": []}, 'batch must be {"events": [...]}'),
        ({"events": {}}, "events must be an array"),
        ([], "batch is empty"),
    ]
    for body, message in cases:
        assert_refused(await client.post("/api/events/batch", json=body), 400, message)
    response = await client.post("/api/events/batch", json=[{"stream": "s"}, 3])
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "no valid events in the batch"
    assert [r["error"] for r in body["results"]] == [
        "events[0]: source is required",
        "events[1]: event must be a JSON object, got number",
    ]


async def test_event_larger_than_the_limit_gets_413(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/events", json=event("big", blob="x" * 70_000))
    assert response.status_code == 413
    assert "limit of 65536 bytes" in response.json()["error"]


async def test_a_body_streamed_past_the_limit_without_a_length_is_413(
    node: MemoryNode, client: httpx.AsyncClient
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(70):
            yield b" " * 1024

    response = await client.post("/api/events", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413 and "limit of 65536 bytes" in response.json()["error"]
    assert node.publisher.published == []


async def test_a_stream_or_source_over_the_configured_length_is_refused() -> None:
    node = MemoryNode(node_settings(max_event_bytes=1_048_576))  # the default size: 100,000 characters fit
    async with node.client() as client:
        long_source = {**event("s/1", v=1), "source": "x" * 100_000}
        assert_refused(await client.post("/api/events", json=long_source), 400, "source must be at most 256 characters")
        batch = [{**event("s/2", v=1), "stream": "y" * 257}, {**event("s/3", v=1), "source": "z" * 256}]
        results = (await client.post("/api/events/batch", json=batch)).json()["results"]
        assert results[0]["error"] == "events[0]: stream must be at most 256 characters"
        assert results[1]["error"] is None
    narrow = MemoryNode(node_settings(max_stream_source_length=8))
    async with narrow.client() as client:
        assert_refused(
            await client.post("/api/events", json={**event("s/4", v=1), "stream": "nine-char"}),
            400,
            "stream must be at most 8 characters",
        )
    assert [e["payload"]["entity_id"] for e in node.publisher.published + narrow.publisher.published] == ["s/3"]


async def test_a_batch_over_the_configured_event_count_or_size_is_413() -> None:
    node = MemoryNode(node_settings(max_batch_events=3, max_batch_bytes=2_000))
    async with node.client() as client:
        too_many = await client.post("/api/events/batch", json=[event(f"e{i}", i=i) for i in range(4)])
        assert too_many.status_code == 413 and too_many.json()["error"] == "batch has 4 events; the limit is 3"
        too_big = await client.post("/api/events/batch", json=[event("e", blob="x" * 2_000)])
        assert too_big.status_code == 413 and "limit of 2000 bytes" in too_big.json()["error"]
    assert node.publisher.published == []


JSON_TYPES = ("application/json", "application/json; charset=utf-8", "Application/JSON", "application/vnd.x+json")
NOT_JSON_TYPES = ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "text/json")
BODY_ROUTES = (  # every route that reads a body
    "/api/events",
    "/api/events/batch",
    "/api/state/entities/delete",
    "/api/namespaces",
    "/api/admin/replay",
    "/api/internal/lookup",
    "/api/internal/namespace-counts",
)


async def test_a_body_is_read_only_when_declared_json(client: httpx.AsyncClient) -> None:
    raw = b'{"stream": "s", "source": "a", "payload": {"entity_id": "typed", "properties": {"v": 1}}}'
    for content_type in JSON_TYPES:
        response = await client.post("/api/events", content=raw, headers={"content-type": content_type})
        assert response.status_code == 200, (content_type, response.text)
    assert (await client.get("/api/state/entities/typed")).json()["properties"] == {"v": 1}


@pytest.mark.parametrize("path", BODY_ROUTES)
async def test_a_body_of_another_type_or_of_none_is_415_and_nothing_happens(
    node: MemoryNode, client: httpx.AsyncClient, path: str
) -> None:
    """What a web page can send cross-site without a preflight (text/plain, forms, no type) is refused."""
    raw = b'{"stream": "s", "source": "a", "payload": {"entity_id": "csrf", "properties": {"v": 1}}}'
    for content_type in (*NOT_JSON_TYPES, None):
        headers = {} if content_type is None else {"content-type": content_type}
        response = await client.post(path, content=raw, headers=headers)
        assert_refused(response, 415, "send 'Content-Type: application/json'")
        assert (repr(content_type) if content_type else "no Content-Type") in response.json()["error"]
    assert node.publisher.published == [] and node.replays.jobs == {}
    assert node.namespaces.registry.all() == []


async def test_a_publish_the_broker_does_not_acknowledge_is_503_with_retry_after(
    node: MemoryNode, client: httpx.AsyncClient
) -> None:
    node.publisher.failure = PublishFailed("the broker did not acknowledge the event: timeout")
    single = await client.post("/api/events", json=event("x", v=1))
    batch = await client.post("/api/events/batch", json=[event("x", v=1)])
    for response in (single, batch):
        assert response.status_code == 503 and response.headers["retry-after"] == "1"
        assert response.json() == {"error": "the broker did not acknowledge the event: timeout"}
    assert (await client.get("/api/state/entities/x")).status_code == 404


async def test_a_wait_that_times_out_is_504_naming_the_pending_events_which_still_apply(
    node: MemoryNode, client: httpx.AsyncClient
) -> None:
    node.publisher.hold()
    response = await client.post("/api/events?wait=true&wait_timeout_ms=1", json=event("late", late=True))
    assert response.status_code == 504
    body = response.json()
    assert "not applied within 1 ms" in body["error"]
    assert body["pending"] == [body["eventId"]] and body["stream"] == "test"
    assert (await client.get("/api/state/entities/late")).status_code == 404
    node.publisher.release()
    assert (await client.get("/api/state/entities/late")).json()["properties"] == {"late": True}


async def test_a_batch_wait_that_times_out_lists_the_pending_event_ids(
    node: MemoryNode, client: httpx.AsyncClient
) -> None:
    node.publisher.hold()
    events = [event(f"w/{i}", v=i) for i in range(10)]
    response = await client.post("/api/events/batch?wait=true&wait_timeout_ms=1", json=events)
    assert response.status_code == 504
    body = response.json()
    assert body["successful"] == 10
    assert sorted(body["pending"]) == sorted(r["eventId"] for r in body["results"])


async def test_a_wait_timeout_above_the_maximum_is_422_and_publishes_nothing(
    node: MemoryNode, client: httpx.AsyncClient
) -> None:
    response = await client.post("/api/events?wait=true&wait_timeout_ms=600000", json=event("x", x=1))
    assert response.status_code == 422
    assert "wait_timeout_ms" in response.json()["error"]
    zero = await client.post("/api/events/batch?wait=true&wait_timeout_ms=0", json=[event("x", x=1)])
    assert zero.status_code == 422 and "wait_timeout_ms" in zero.json()["error"]
    assert node.publisher.published == []
