"""Deletion requests (DELETE /api/state/entities/{id}, POST /api/state/entities/delete): ids, filters, limits."""

from __future__ import annotations

import httpx
import pytest

from tests.api.helpers import assert_refused, event, ids
from tests.api.memory import MemoryNode


async def put_many(client: httpx.AsyncClient, entity_ids: list[str]) -> None:
    response = await client.post("/api/events/batch", json=[event(i, n=1) for i in entity_ids])
    assert response.status_code == 200 and response.json()["successful"] == len(entity_ids), response.text


async def listed(client: httpx.AsyncClient, prefix: str) -> list[str]:
    return ids(await client.get("/api/state/entities", params={"prefix": prefix}))


async def test_delete_accepts_a_percent_encoded_slash(client: httpx.AsyncClient) -> None:
    await put_many(client, ["d/b"])
    response = await client.delete("/api/state/entities/d%2Fb")
    assert response.status_code == 200 and response.json()["entity_id"] == "d/b"
    assert (await client.get("/api/state/entities/d/b")).status_code == 404


async def test_deleting_an_unknown_entity_is_404(node: MemoryNode, client: httpx.AsyncClient) -> None:
    response = await client.delete("/api/state/entities/d/never")
    assert response.status_code == 404
    assert response.json() == {"error": "Entity not found"}
    assert node.publisher.published == []


async def test_batch_delete_by_prefix_namespace_and_ids(client: httpx.AsyncClient) -> None:
    await put_many(
        client, [f"u-p-{i}" for i in range(5)] + [f"u/n-{i}" for i in range(4)] + [f"u.k{i}" for i in range(3)]
    )

    by_prefix = await client.post("/api/state/entities/delete", json={"prefix": "u-p-"})
    assert by_prefix.json() == {"deleted": 5, "failed": 0, "errors": []}
    assert await listed(client, "u-p-") == []

    by_namespace = await client.post("/api/state/entities/delete", json={"namespace": "u"})
    assert by_namespace.json() == {"deleted": 4, "failed": 0, "errors": []}
    assert await listed(client, "u/") == []

    by_ids = await client.post("/api/state/entities/delete", json={"entity_ids": ["u.k0", "u.k1", "u.missing"]})
    assert by_ids.json() == {
        "deleted": 2,
        "failed": 1,
        "errors": [{"entity_id": "u.missing", "error": "Entity not found"}],
    }
    assert await listed(client, "u") == ["u.k2"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "give exactly one of"),
        ({"prefix": "a", "namespace": "b"}, "give exactly one of"),
        ({"prefix": ""}, "prefix must be a non-empty string"),
        ({"entity_ids": []}, "entity_ids must be a non-empty array"),
        ({"entity_ids": [1]}, "entity_ids[0] must be a non-empty string"),
        ([], "body must be a JSON object"),
        ({"namespace": "a/b"}, "namespace must not contain '/'"),
    ],
)
async def test_batch_delete_needs_exactly_one_valid_filter(
    client: httpx.AsyncClient, body: object, message: str
) -> None:
    assert_refused(await client.post("/api/state/entities/delete", json=body), 400, message)


async def test_batch_delete_over_the_limit_is_refused_and_deletes_nothing(client: httpx.AsyncClient) -> None:
    entity_ids = [f"lim-{i:03d}" for i in range(51)]  # the test node has FLUX_DELETE_BATCH_LIMIT=50
    await put_many(client, entity_ids)
    response = await client.post("/api/state/entities/delete", json={"prefix": "lim-"})
    assert response.status_code == 400
    assert "50" in response.json()["error"] and "nothing was deleted" in response.json()["error"]
    by_ids = await client.post("/api/state/entities/delete", json={"entity_ids": entity_ids})
    assert by_ids.status_code == 400
    assert len(await listed(client, "lim-")) == 51


async def test_repeated_ids_count_once_against_the_limit_and_in_the_answer(client: httpx.AsyncClient) -> None:
    entity_ids = [f"rep-{i:03d}" for i in range(50)]
    await put_many(client, entity_ids)
    response = await client.post("/api/state/entities/delete", json={"entity_ids": entity_ids + entity_ids[:10]})
    assert response.status_code == 200, response.text
    assert response.json() == {"deleted": 50, "failed": 0, "errors": []}


async def test_a_filter_that_matches_nothing_publishes_nothing(node: MemoryNode, client: httpx.AsyncClient) -> None:
    response = await client.post("/api/state/entities/delete", json={"prefix": "nothing-"})
    assert response.json() == {"deleted": 0, "failed": 0, "errors": []}
    assert node.publisher.published == []
