"""X-Idempotency-Key on the publish endpoints: replayed answers, reused keys, and what a key is scoped to."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from tests.api.helpers import bearer, event, register
from tests.api.memory import MemoryNode

T0 = 1_700_000_000_000  # a fixed time: the same body on every retry


def keyed(key: str) -> dict[str, str]:
    return {"X-Idempotency-Key": key}


def new_key() -> str:
    return f"k-{uuid.uuid4()}"


async def history(client: httpx.AsyncClient, entity: str) -> list[dict[str, Any]]:
    response = await client.get("/api/events", params={"entity": entity, "since": "0"})
    return response.json()  # type: ignore[no-any-return]


async def test_a_retried_publish_gets_the_first_answer_and_is_applied_once(client: httpx.AsyncClient) -> None:
    key = new_key()
    body = event("i/a", T0, v=1)  # no eventId: one is derived from the key
    first = await client.post("/api/events", json=body, headers=keyed(key), params={"wait": "true"})
    again = await client.post("/api/events", json=body, headers=keyed(key))
    assert first.status_code == again.status_code == 200
    assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert [e["eventId"] for e in await history(client, "i/a")] == [first.json()["eventId"]]


async def test_the_same_key_with_another_body_is_422(client: httpx.AsyncClient) -> None:
    key = new_key()
    assert (await client.post("/api/events", json=event("i/b", T0, v=1), headers=keyed(key))).status_code == 200
    reused = await client.post("/api/events", json=event("i/b", T0, v=2), headers=keyed(key))
    assert reused.status_code == 422 and "different body" in reused.json()["error"]
    spaced = await client.post(  # the same JSON written differently is the same body
        "/api/events",
        content=b'{ "payload": {"properties": {"v": 1}, "entity_id": "i/b"},'
        b' "timestamp": 1700000000000, "source": "pytest", "stream": "test" }',
        headers={**keyed(key), "content-type": "application/json"},
    )
    assert spaced.status_code == 200 and spaced.headers["idempotent-replayed"] == "true"


async def test_a_retried_batch_is_replayed_and_its_events_applied_once(client: httpx.AsyncClient) -> None:
    key = new_key()
    batch = [event("i/c", T0, n=n) for n in range(5)] + [{"stream": "test"}]
    first = await client.post("/api/events/batch", json=batch, headers=keyed(key), params={"wait": "true"})
    again = await client.post("/api/events/batch", json=batch, headers=keyed(key))
    assert first.status_code == 200 and again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert len(await history(client, "i/c")) == 5
    assert (await client.post("/api/events", json=event("i/c", T0), headers=keyed(""))).status_code == 422


async def test_a_key_longer_than_255_characters_is_422(node: MemoryNode, client: httpx.AsyncClient) -> None:
    response = await client.post("/api/events", json=event("i/d", T0, v=1), headers=keyed("k" * 256))
    assert response.status_code == 422 and "X-Idempotency-Key" in response.json()["error"]
    assert node.publisher.published == []


async def test_a_refused_request_is_not_remembered_under_its_key(client: httpx.AsyncClient) -> None:
    key = new_key()
    refused = await client.post("/api/events", json={"stream": "s"}, headers=keyed(key))
    assert refused.status_code == 400
    fixed = await client.post("/api/events", json=event("i/e", T0, v=1), headers=keyed(key))
    assert fixed.status_code == 200 and "idempotent-replayed" not in fixed.headers


async def test_a_key_is_kept_per_endpoint_and_per_namespace(secured: httpx.AsyncClient) -> None:
    key = new_key()
    mine, my_token = await register(secured)
    theirs, their_token = await register(secured)
    single = await secured.post(
        "/api/events", json=event(f"{mine}/a", T0, v=1), headers={**keyed(key), **bearer(my_token)}
    )
    batch = await secured.post(
        "/api/events/batch", json=[event(f"{mine}/a", T0, v=2)], headers={**keyed(key), **bearer(my_token)}
    )
    other = await secured.post(
        "/api/events", json=event(f"{theirs}/a", T0, v=3), headers={**keyed(key), **bearer(their_token)}
    )
    for response in (single, batch, other):
        assert response.status_code == 200, response.text
        assert "idempotent-replayed" not in response.headers
    assert single.json()["eventId"] != other.json()["eventId"], "eventIds derived from the key differ per namespace"
