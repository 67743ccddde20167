"""History (GET /api/events): its parameters, time forms, filters, and pages through Link headers."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.api.helpers import assert_refused, event, next_link

T0 = 1_700_000_000_000  # 2023-11-14T22:13:20Z


async def publish_all(client: httpx.AsyncClient, events: list[dict[str, Any]]) -> None:
    response = await client.post("/api/events/batch", json=events)
    assert response.status_code == 200 and response.json()["failed"] == 0, response.text


async def history(client: httpx.AsyncClient, **params: Any) -> list[dict[str, Any]]:
    response = await client.get("/api/events", params={"since": "0", **params})
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def numbers(events: list[dict[str, Any]], name: str = "n") -> list[Any]:
    return [e["payload"]["properties"][name] for e in events]


async def all_pages(client: httpx.AsyncClient, **params: Any) -> tuple[list[dict[str, Any]], int]:
    """Every page, following the Link headers; returns the events and the number of pages."""
    response = await client.get("/api/events", params={"since": "0", **params})
    events: list[dict[str, Any]] = []
    pages = 0
    while True:
        assert response.status_code == 200, response.text
        events += response.json()
        pages += 1
        link = next_link(response)
        if link is None:
            return events, pages
        response = await client.get(link)


async def test_since_and_until_take_rfc3339_or_unix_ms_and_bound_the_window(client: httpx.AsyncClient) -> None:
    await publish_all(client, [event("w", T0 + i * 1000, n=i) for i in range(5)])
    window = await history(client, entity="w", since="2023-11-14T22:13:21Z", until=str(T0 + 3000))
    assert numbers(window) == [1, 2, 3]
    assert await history(client, entity="w", since=str(T0 + 3000), until=str(T0 + 1000)) == []
    default = (await client.get("/api/events", params={"entity": "w"})).json()
    assert default == []  # the default window is the last 24 h; these events are from 2023


async def test_pages_follow_link_headers_without_skipping_or_repeating(client: httpx.AsyncClient) -> None:
    await publish_all(client, [event("paged", T0 + i, f"id{i:04d}", n=i) for i in range(250)])
    for order in ("asc", "desc"):
        found, pages = await all_pages(client, entity="paged", limit=40, order=order)
        expected = list(range(250)) if order == "asc" else list(range(249, -1, -1))
        assert numbers(found) == expected
        assert pages == 7


async def test_a_next_link_pins_the_default_window_and_keeps_the_other_parameters(client: httpx.AsyncClient) -> None:
    now = int(time.time() * 1000)
    await publish_all(client, [event("recent", now - 1000 + i, n=i) for i in range(3)])
    day = 24 * 3600 * 1000
    before = int(time.time() * 1000)
    first = await client.get("/api/events", params={"entity": "recent", "limit": 2, "stream": "test"})
    after = int(time.time() * 1000)
    assert numbers(first.json()) == [0, 1]
    link = next_link(first)
    assert link is not None
    target = urlsplit(link)
    params = parse_qs(target.query)
    assert target.path == "/api/events"
    assert params["entity"] == ["recent"] and params["limit"] == ["2"] and params["stream"] == ["test"]
    assert before - day <= int(params["since"][0]) <= after - day  # "24 h ago" as of the first page
    assert numbers((await client.get(link)).json()) == [2]


async def test_prefix_and_namespace_histories_with_stream_and_source_filters(client: httpx.AsyncClient) -> None:
    await publish_all(
        client,
        [
            {**event("h/a", T0 + 1, n=1), "stream": "x", "source": "gw1"},
            {**event("h/b", T0 + 2, n=2), "stream": "y", "source": "gw1"},
            {**event("h/a", T0 + 3, n=3), "stream": "x", "source": "gw2"},
            event("hx/c", T0 + 4, n=4),
        ],
    )
    assert numbers(await history(client, namespace="h")) == [1, 3, 2]  # entity id order, then time
    assert numbers(await history(client, prefix="h")) == [1, 3, 2, 4]
    assert numbers(await history(client, namespace="h", stream="x")) == [1, 3]
    assert numbers(await history(client, namespace="h", source="gw1")) == [1, 2]


@pytest.mark.parametrize(
    ("params", "status", "message"),
    [
        ({"entity": "a/b", "cursor": "garbage"}, 400, "cursor"),
        ({"entity": "a/b", "since": "2025-02-11T16:10:00"}, 400, "time zone"),
        ({"entity": "a/b", "since": "yesterday"}, 422, "since"),
        ({"entity": "a/b", "limit": "1001"}, 422, "limit"),
        ({"entity": "a/b", "order": "sideways"}, 422, "order"),
        ({"entity": "a/b", "limit": "0"}, 422, "limit"),
        ({"entity": "a/b", "until": "-5"}, 422, "until"),
        ({"entity": ""}, 422, "entity"),
        ({"namespace": "a/b"}, 422, "namespace"),
    ],
)
async def test_bad_history_parameters_are_refused_saying_why(
    client: httpx.AsyncClient, params: dict[str, str], status: int, message: str
) -> None:
    assert_refused(await client.get("/api/events", params=params), status, message)


async def test_history_filters_combine(client: httpx.AsyncClient) -> None:
    await publish_all(client, [event("c/a", T0, n=1), event("c/b", T0, n=2), event("other/z", T0, n=3)])
    assert numbers(await history(client, entity="c/a", namespace="c")) == [1]
    assert await history(client, entity="c/a", prefix="c/b") == []
    assert numbers(await history(client, namespace="c", prefix="b")) == [2]
    everything, _ = await all_pages(client, limit=1000)
    assert numbers(everything) == [1, 2, 3]
