"""Reading state (GET /api/state/entities[/{id}]): ids, filters, pages, ``at``, and the 5xx shapes of reads."""

from __future__ import annotations

from urllib.parse import quote

import httpx
import pytest

from flux.model.partitioning import partition_for
from flux.model.reducer import fold, to_entity
from tests.api.helpers import assert_refused, event, ids, next_link
from tests.api.memory import MemoryNode, node_settings

T0 = 1_700_000_000_000  # 2023-11-14T22:13:20Z


async def publish_all(client: httpx.AsyncClient, events: list[dict]) -> None:
    response = await client.post("/api/events/batch", json=events)
    assert response.status_code == 200 and response.json()["failed"] == 0, response.text


async def test_entity_ids_with_slashes_are_served_raw_and_percent_encoded(client: httpx.AsyncClient) -> None:
    await publish_all(client, [event("acme/sensor-01", t=1)])
    raw = await client.get("/api/state/entities/acme/sensor-01")
    encoded = await client.get("/api/state/entities/acme%2Fsensor-01")
    assert raw.status_code == 200 and raw.json() == encoded.json() and raw.json()["id"] == "acme/sensor-01"


ODD_IDS = ["x%41", "xA", "pct%2Fnot-a-slash", "q?x=1", "h#frag", "with space", "a/b c%", "ü%C3%BC"]


async def test_an_id_is_percent_decoded_once_whatever_characters_it_has(client: httpx.AsyncClient) -> None:
    """``x%2541`` is the id ``x%41``, not ``xA``: the path is decoded once, by the server."""
    await publish_all(client, [event(entity_id, n=n) for n, entity_id in enumerate(ODD_IDS)])
    for n, entity_id in enumerate(ODD_IDS):
        found = await client.get("/api/state/entities/" + quote(entity_id, safe="/"))
        assert found.status_code == 200, (entity_id, found.text)
        assert (found.json()["id"], found.json()["properties"]) == (entity_id, {"n": n})
        at = await client.get("/api/state/entities/" + quote(entity_id, safe="/"), params={"at": str(2 * T0)})
        assert at.json()["id"] == entity_id
    deleted = await client.delete("/api/state/entities/x%2541")
    assert deleted.status_code == 200 and deleted.json()["entity_id"] == "x%41"
    assert (await client.get("/api/state/entities/x%2541")).status_code == 404
    assert (await client.get("/api/state/entities/xA")).json()["properties"] == {"n": 1}


async def test_unknown_entity_is_404_with_json_error(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/state/entities/no-such-entity")
    assert response.status_code == 404
    assert response.json() == {"error": "Entity not found"}


async def test_list_is_in_id_order_with_prefix_and_namespace_filters(client: httpx.AsyncClient) -> None:
    entity_ids = [f"u/host-{i:02d}" for i in range(12)] + ["u/db-1", "ux/host-99"]
    await publish_all(client, [event(i, n=i) for i in reversed(entity_ids)])
    everything = await client.get("/api/state/entities", params={"prefix": "u"})
    assert ids(everything) == sorted(entity_ids)
    in_namespace = await client.get("/api/state/entities", params={"namespace": "u"})
    assert ids(in_namespace) == sorted(i for i in entity_ids if i.startswith("u/"))
    combined = await client.get("/api/state/entities", params={"namespace": "u", "prefix": "host-"})
    assert ids(combined) == [f"u/host-{i:02d}" for i in range(12)]
    full_prefix = await client.get("/api/state/entities", params={"namespace": "u", "prefix": "u/db"})
    assert ids(full_prefix) == ["u/db-1"]


async def test_pagination_walks_every_entity_once_following_link_headers(client: httpx.AsyncClient) -> None:
    entity_ids = [f"page-{i:03d}" for i in range(25)]
    await publish_all(client, [event(i) for i in entity_ids])
    seen: list[str] = []
    url: str | None = "/api/state/entities?prefix=page-&limit=10"
    pages = 0
    while url:
        response = await client.get(url)
        seen += ids(response)
        pages += 1
        url = next_link(response)
    assert seen == entity_ids and pages == 3
    from_20 = await client.get("/api/state/entities", params={"prefix": "page-", "limit": 10, "offset": 20})
    assert ids(from_20) == entity_ids[20:] and "link" not in from_20.headers


@pytest.mark.parametrize("query", ["limit=0", "limit=abc", "offset=-1", "limit=100000", "namespace="])
async def test_bad_list_parameters_get_422(client: httpx.AsyncClient, query: str) -> None:
    response = await client.get(f"/api/state/entities?{query}")
    assert response.status_code == 422
    assert response.json()["error"]


async def test_the_page_size_defaults_and_is_bounded_as_configured_and_links_keep_the_filters() -> None:
    node = MemoryNode(node_settings(list_default_limit=3, list_max_limit=5))
    async with node.client() as client:
        await publish_all(client, [event(f"cfg/{i}") for i in range(7)])
        first = await client.get("/api/state/entities", params={"namespace": "cfg"})
        assert ids(first) == ["cfg/0", "cfg/1", "cfg/2"]
        assert next_link(first) == "/api/state/entities?namespace=cfg&after=cfg%2F2&limit=3"
        second = await client.get(next_link(first))
        assert ids(second) == ["cfg/3", "cfg/4", "cfg/5"]
        last = await client.get(next_link(second))
        assert ids(last) == ["cfg/6"] and "link" not in last.headers
        skipped = await client.get("/api/state/entities", params={"namespace": "cfg", "after": "cfg/1", "offset": 2})
        assert ids(skipped) == ["cfg/4", "cfg/5", "cfg/6"]  # offset counts from the cursor
        too_many = await client.get("/api/state/entities", params={"limit": 6})
        assert too_many.status_code == 422 and too_many.json() == {"error": "limit must be at most 5"}


async def test_state_at_a_past_time_is_the_fold_of_the_events_up_to_it(client: httpx.AsyncClient) -> None:
    events = [
        event("tt", T0 + 100, "e1", temp=20, unit="c"),
        event("tt", T0 + 200, "e2", temp=21),
    ]
    await publish_all(client, events)
    at = await client.get("/api/state/entities/tt", params={"at": str(T0 + 150)})
    assert at.status_code == 200 and at.json() == to_entity("tt", fold(events[:1]))
    assert at.json()["lastUpdated"] == "2023-11-14T22:13:20.100Z"
    assert (await client.get("/api/state/entities/tt", params={"at": str(T0 + 99)})).status_code == 404
    rfc = await client.get("/api/state/entities/tt", params={"at": "2023-11-14T22:13:20.250Z"})
    assert rfc.json() == to_entity("tt", fold(events))
    offset = await client.get("/api/state/entities/tt", params={"at": "2023-11-14T23:13:20.150+01:00"})
    assert offset.json() == at.json()


@pytest.mark.parametrize(
    ("at", "status", "message"),
    [
        ("yesterday", 422, "Unix epoch milliseconds or an RFC 3339 time"),
        ("0.5", 422, "Unix epoch milliseconds or an RFC 3339 time"),
        ("2023-11-14T22:13:20", 400, "at needs a time zone"),
        ("253402300800000", 400, "at must be between 0 and 253402300799999"),
    ],
)
async def test_an_at_that_is_not_a_time_is_refused_saying_why(
    client: httpx.AsyncClient, at: str, status: int, message: str
) -> None:
    for path in ("/api/state/entities/x", "/api/state/entities"):
        assert_refused(await client.get(path, params={"at": at}), status, message)


async def test_an_at_before_1970_means_the_beginning(client: httpx.AsyncClient) -> None:
    await publish_all(client, [event("first", 0, v=0), event("first", 5, v=1)])
    early = await client.get("/api/state/entities/first", params={"at": "1969-12-31T23:00:00Z"})
    assert early.json()["properties"] == {"v": 0}


async def test_a_read_of_a_partition_nobody_serves_is_503_with_retry_after(
    node: MemoryNode, client: httpx.AsyncClient
) -> None:
    await publish_all(client, [event("away", v=1)])
    node.table.served.discard(partition_for("away", node.settings.partitions))
    for path in ("/api/state/entities/away", "/api/state/entities", "/api/events?entity=away"):
        response = await client.get(path)
        assert response.status_code == 503, path
        assert response.headers["retry-after"] == "1"
        assert "is not being served by this node right now" in response.json()["error"]


async def test_an_unexpected_error_is_a_json_500_naming_only_its_kind(
    node: MemoryNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(entity_id: str) -> None:
        raise RuntimeError("secret detail")

    monkeypatch.setattr(node.table, "get", broken)
    async with node.client(raise_app_exceptions=False) as client:
        response = await client.get("/api/state/entities/x")
    assert response.status_code == 500
    assert response.json() == {"error": "internal error: RuntimeError"}


async def test_an_offset_past_the_configured_bound_is_refused_pointing_at_after() -> None:
    node = MemoryNode(node_settings(list_max_offset=5))
    async with node.client() as client:
        await publish_all(client, [event(f"deep/{i}") for i in range(8)])
        at_bound = await client.get("/api/state/entities", params={"prefix": "deep/", "offset": 5})
        assert ids(at_bound) == ["deep/5", "deep/6", "deep/7"]
        past = await client.get("/api/state/entities", params={"prefix": "deep/", "offset": 6})
        assert_refused(past, 422, "offset must be at most 5 (FLUX_LIST_MAX_OFFSET)")
        assert "after=" in past.json()["error"]
        deeper = await client.get("/api/state/entities", params={"prefix": "deep/", "after": "deep/5"})
        assert ids(deeper) == ["deep/6", "deep/7"], "after= reaches any depth"


async def walk(client: httpx.AsyncClient, url: str | None) -> list[list[str]]:
    """The ids of every page from ``url`` on, following the Link headers."""
    pages = []
    while url:
        response = await client.get(url)
        assert response.status_code == 200, response.text
        pages.append(ids(response))
        url = next_link(response)
    return pages


async def test_a_list_at_a_time_folds_a_bounded_number_of_events_per_page_and_its_links_miss_nothing() -> None:
    node = MemoryNode(node_settings(list_at_max_events=10))
    async with node.client() as client:
        await publish_all(client, [event(f"at/{n}", T0 + i, v=i) for n in range(6) for i in range(4)])
        await publish_all(client, [event(f"at/z{n:02d}", T0 + 50) for n in range(25)])  # not yet there at T0 + 9
        url = f"/api/state/entities?prefix=at/&at={T0 + 9}&limit=100"
        pages = await walk(client, url)
        assert [n for page in pages for n in page] == [f"at/{n}" for n in range(6)]
        assert max(len(page) for page in pages) == 3, "4 events an entity: the third reaches the budget of 10"
        assert [] in pages, "25 entities that did not exist cost one each: pages without entities, still linked"
        first = await client.get(url)
        assert first.json()[0] == {
            "id": "at/0",
            "properties": {"v": 3},
            "lastUpdated": "2023-11-14T22:13:20.003Z",
        }
        skipped = await walk(client, f"{url}&offset=4")
        assert [n for page in skipped for n in page] == ["at/4", "at/5"], "an offset a budget cut goes on in the link"
        assert skipped[0] == []
