"""X-Idempotency-Key on the publish endpoints: replayed answers, reused keys, and what a key is scoped to."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from flux.kafka.publisher import PublishFailed
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


async def test_a_large_keyed_batch_is_answered_and_replayed_without_publishing_again(node: MemoryNode) -> None:
    # Its whole answer (about 2 MB of results) would not fit a broker's record; what is kept does.
    batch = [event(f"i/big{n % 50}", T0, event_id=f"{uuid.uuid4()}-{n:08d}", n=n) for n in range(20_000)]
    key = new_key()
    async with node.client() as client:
        first = await client.post("/api/events/batch", json=batch, headers=keyed(key))
        again = await client.post("/api/events/batch", json=batch, headers=keyed(key))
    assert first.status_code == 200 and first.json()["successful"] == 20_000, first.text[:300]
    assert len(first.content) > 1_048_576
    assert again.status_code == 200 and again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert len(node.publisher.published) == 20_000
    assert node.idempotency.kept()[1] < 2_000


async def test_a_batch_answer_too_large_for_one_record_is_kept_in_parts(node: MemoryNode) -> None:
    # 20,000 failed events, each with its own error: what is kept is megabytes, stored in parts.
    batch = [
        {"stream": "test", "source": "pytest", "payload": {"entity_id": "i/p", "properties": {uuid.uuid4().hex * 9: 1}}}
        for _ in range(20_000)
    ]
    batch.append(event("i/p", T0, ok=True))
    key = new_key()
    written: list[int] = []
    write_many = node.idempotency.write_many

    async def counted(records: list[tuple[bytes, bytes | None]]) -> None:
        written.extend(len(value or b"") for _, value in records)
        await write_many(records)

    node.idempotency.write_many = counted  # type: ignore[method-assign]
    async with node.client() as client:
        first = await client.post("/api/events/batch", json=batch, headers=keyed(key))
        again = await client.post("/api/events/batch", json=batch, headers=keyed(key))
    assert first.status_code == 200 and first.json()["failed"] == 20_000, first.text[:300]
    assert len(written) > 2 and max(written) <= 1_048_576, written
    assert again.headers["idempotent-replayed"] == "true" and again.json() == first.json()
    assert len(node.publisher.published) == 1


async def test_a_key_used_again_after_its_ttl_is_a_new_request_whose_events_are_applied(node: MemoryNode) -> None:
    now = [1_800_000_000.0]
    node.idempotency.clock = lambda: now[0]
    key = new_key()
    body = event("i/ttl", T0, v=1)  # no eventId: derived from the request
    async with node.client() as client:
        first = await client.post("/api/events", json=body, headers=keyed(key))
        now[0] += node.settings.idempotency_ttl_s / 2
        retried = await client.post("/api/events", json=body, headers=keyed(key))
        now[0] += node.settings.idempotency_ttl_s + 1
        later = await client.post("/api/events", json=body, headers=keyed(key))
        events = await history(client, "i/ttl")
    assert retried.headers["idempotent-replayed"] == "true" and retried.json() == first.json()
    assert later.status_code == 200 and "idempotent-replayed" not in later.headers
    assert later.json()["eventId"] != first.json()["eventId"]
    assert sorted(e["eventId"] for e in events) == sorted([first.json()["eventId"], later.json()["eventId"]])


async def test_one_key_on_both_endpoints_derives_different_event_ids(client: httpx.AsyncClient) -> None:
    key = new_key()
    body = event("i/both", T0, v=1)
    single = await client.post("/api/events", json=body, headers=keyed(key))
    batch = await client.post("/api/events/batch", json=[body], headers=keyed(key))
    assert single.status_code == batch.status_code == 200
    assert single.json()["eventId"] != batch.json()["results"][0]["eventId"]
    assert len(await history(client, "i/both")) == 2, "the batch's event is not dropped as a duplicate"


async def test_an_answer_the_broker_does_not_take_still_answers_and_a_retry_applies_once(node: MemoryNode) -> None:
    async def refuse(where: bytes, digest: str, status: int, answer: Any) -> None:
        raise PublishFailed("the broker is away")

    key = new_key()
    body = event("i/lost", T0, v=1)
    async with node.client() as client:
        remember = node.idempotency.remember
        node.idempotency.remember = refuse  # type: ignore[method-assign]
        first = await client.post("/api/events", json=body, headers=keyed(key))
        node.idempotency.remember = remember  # type: ignore[method-assign]
        again = await client.post("/api/events", json=body, headers=keyed(key))
        events = await history(client, "i/lost")
    assert first.status_code == again.status_code == 200 and again.json() == first.json()
    assert "idempotent-replayed" not in again.headers, "nothing was kept: processed again"
    assert len(events) == 1, "with the same derived eventId"
