"""The endpoints nodes ask each other (/api/internal/...): checked like the public ones, in shapes of their own."""

from __future__ import annotations

import httpx
import pytest

from api.cluster.node_calls import MAX_CALL_ITEMS
from tests.api.helpers import assert_refused, bearer, event, register
from tests.api.memory import MemoryNode, node_settings


async def test_a_node_answers_its_share_of_entities_lookups_counts_and_history(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/events/batch", json=[event(f"in/{i}", 1_700_000_000_000 + i, n=i) for i in range(3)]
    )
    assert response.status_code == 200
    entities = (await client.get("/api/internal/entities", params={"partitions": "0,1,2,3", "prefix": "in/"})).json()
    assert [row[0]["id"] for row in entities["items"]] == ["in/0", "in/1", "in/2"] and entities["frontier"] is None
    found = (await client.post("/api/internal/lookup", json={"ids": ["in/1", "in/9"]})).json()
    assert [row[0]["id"] for row in found["items"]] == ["in/1"]
    counts = await client.post(
        "/api/internal/namespace-counts", json={"namespaces": ["in"], "partitions": [0, 1, 2, 3]}
    )
    assert counts.json() == {"in": 3}
    params: dict[str, str | int] = {
        "partitions": "0,1,2,3",
        "prefix": "in/",
        "since": 0,
        "until": 2 * 10**12,
        "limit": 2,
    }
    page = (await client.get("/api/internal/history", params=params)).json()
    assert [event["payload"]["properties"]["n"] for _, event in page["items"]] == [0, 1]
    assert page["frontier"] == page["items"][-1][0]


@pytest.mark.parametrize(
    ("method", "path", "body", "message"),
    [
        ("GET", "/api/internal/entities?partitions=a,b", None, "partitions must be a comma-separated list"),
        ("GET", "/api/internal/entities?partitions=4", None, "partitions must lie in 0..3"),
        ("POST", "/api/internal/lookup", {"ids": "x"}, 'body must be {"ids": [entity ids]}'),
        ("POST", "/api/internal/namespace-counts", {"namespaces": ["x"]}, 'body must be {"namespaces"'),
        ("GET", "/api/internal/entities?partitions=0&at=-2", None, "at must be between 0 and"),
        ("GET", "/api/internal/entities?partitions=0&at=253402300800000", None, "at must be between 0 and"),
        ("GET", "/api/internal/history?partitions=0&since=-5&until=10", None, "since must be between 0 and"),
        ("GET", "/api/internal/history?partitions=0&since=0&until=-1", None, "until must be between 0 and"),
        ("GET", "/api/internal/history?partitions=0&since=0&until=253402300800000", None, "until must be between"),
    ],
)
async def test_internal_requests_are_checked(
    client: httpx.AsyncClient, method: str, path: str, body: object, message: str
) -> None:
    assert_refused(await client.request(method, path, json=body), 400, message)


async def test_internal_reads_follow_the_rules_of_private_reads(private: httpx.AsyncClient) -> None:
    mine, token = await register(private)
    theirs, _ = await register(private)
    anonymous = await private.get("/api/internal/entities", params={"partitions": "0", "prefix": f"{mine}/"})
    assert anonymous.status_code == 401
    for prefix in (f"{theirs}/", ""):
        foreign = await private.get(
            "/api/internal/entities", params={"partitions": "0", "prefix": prefix}, headers=bearer(token)
        )
        assert foreign.status_code == 403, prefix
    lookup = await private.post("/api/internal/lookup", json={"ids": [f"{theirs}/a"]}, headers=bearer(token))
    assert lookup.status_code == 403


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        ("/api/internal/lookup", {"ids": [f"x/{i}" for i in range(MAX_CALL_ITEMS + 1)]}, "ids has 1001 items"),
        (
            "/api/internal/namespace-counts",
            {"namespaces": [f"n{i}" for i in range(MAX_CALL_ITEMS + 1)], "partitions": [0]},
            "namespaces has 1001 items",
        ),
    ],
)
async def test_a_call_with_more_items_than_one_call_carries_is_413(
    client: httpx.AsyncClient, path: str, body: object, message: str
) -> None:
    assert MAX_CALL_ITEMS == 1_000
    assert_refused(await client.post(path, json=body), 413, f"{message}; one call carries at most 1000")


async def test_entities_at_a_time_fold_at_most_the_budget_asked_or_configured() -> None:
    node = MemoryNode(node_settings(list_at_max_events=10))
    async with node.client() as client:
        batch = [event(f"b/{n}", 1_700_000_000_000 + i) for n in range(5) for i in range(3)]
        assert (await client.post("/api/events/batch", json=batch)).status_code == 200
        params = {"partitions": "0,1,2,3", "prefix": "b/", "at": 1_700_000_000_002}
        asked = (await client.get("/api/internal/entities", params={**params, "budget": 4})).json()
        assert [row[0]["id"] for row in asked["items"]] == ["b/0", "b/1"] and asked["frontier"] == "b/1"
        assert asked["scanned"] == 6
        capped = (await client.get("/api/internal/entities", params={**params, "budget": 1_000})).json()
        assert len(capped["items"]) == 4 and capped["frontier"] == "b/3" and capped["scanned"] == 12, "at most 10"
