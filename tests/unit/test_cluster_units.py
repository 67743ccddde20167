"""The gather of cross-partition reads (api/cluster/gather.py) and the URL a read is forwarded to
(api/cluster/forward.py), without Kafka or other nodes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Sequence
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.requests import Request

from api.cluster.forward import forward_url
from api.cluster.gather import Cluster, merged
from api.cluster.node_calls import NodeCalls
from flux.model.history import HistoryQuery
from flux.model.state import PartitionUnavailable, StoredEntity


def pages_of(keys: list[int], size: int, calls: list[Any]) -> Any:
    """A source that answers ``size`` keys per page after the cursor, with a frontier while more follow."""

    async def fetch(after: int | None) -> tuple[list[tuple[int, str]], int | None]:
        calls.append(after)
        rest = [k for k in keys if after is None or k > after]
        page = rest[:size]
        return [(k, f"item-{k}") for k in page], page[-1] if len(rest) > size else None

    return fetch


async def collect(fetches: list[Any], descending: bool = False, start: Any = None) -> list[tuple[Any, Any]]:
    return [pair async for pair in merged(fetches, descending, start)]


@given(st.lists(st.sets(st.integers(0, 500)), min_size=1, max_size=4), st.integers(1, 7))
def test_merged_gives_every_item_once_in_key_order_whatever_the_page_sizes(sources: list[set[int]], size: int) -> None:
    taken: set[int] = set()
    disjoint = []
    for keys in sources:  # partitions hold distinct keys
        disjoint.append(sorted(keys - taken))
        taken |= keys
    calls: list[Any] = []
    got = asyncio.run(collect([pages_of(keys, size, calls) for keys in disjoint]))
    items = [k for k, item in got if item is not None]
    assert items == sorted(taken)
    frontiers = [k for k, item in got if item is None]
    assert len(frontiers) == len(calls) - len(disjoint), "one frontier passed per page fetched after the first"


def test_merged_fetches_a_next_page_only_when_the_merge_reaches_it() -> None:
    calls: list[Any] = []
    fetches = [pages_of(list(range(0, 100, 2)), 5, calls), pages_of(list(range(1, 100, 2)), 5, calls)]

    async def first_three() -> list[Any]:
        found = []
        async for key, item in merged(fetches):
            if item is not None:
                found.append(key)
            if len(found) == 3:
                break
        return found

    assert asyncio.run(first_three()) == [0, 1, 2]
    assert calls == [None, None], "only the first page of each source"


def test_merged_descending_and_from_a_cursor() -> None:
    calls: list[Any] = []

    def down(keys: list[int]) -> Any:
        async def fetch(after: int | None) -> tuple[list[tuple[int, str]], int | None]:
            calls.append(after)
            rest = [k for k in sorted(keys, reverse=True) if after is None or k < after]
            return [(k, "x") for k in rest[:3]], rest[2] if len(rest) > 3 else None

        return fetch

    got = asyncio.run(collect([down([1, 4, 7, 9]), down([2, 3, 8])], descending=True, start=8))
    assert [k for k, item in got if item is not None] == [7, 4, 3, 2, 1]
    assert calls[:2] == [8, 8], "every source starts after the cursor"


class FakeReader:
    """A node serving some partitions, with entities ``e-<n>`` in partition ``n % partitions``."""

    def __init__(self, local: list[int], owners: dict[int, str | None], ids: list[str], partitions: int = 4) -> None:
        self.local = local
        self.assignment = owners
        self.ids = sorted(ids)
        self.partitions = partitions
        self.ready = True

    def active_partitions(self) -> list[int]:
        return self.local

    def recovered(self) -> bool:
        return self.ready

    def owner_url(self, partition: int) -> str | None:
        return self.assignment.get(partition)

    def owners(self) -> dict[str, list[int]]:
        found: dict[str, list[int]] = {}
        for partition, url in self.assignment.items():
            if url is not None:
                found.setdefault(url, []).append(partition)
        return found

    def iter_prefix(
        self, prefix: str, partitions: Sequence[int] | None = None, after: str | None = None
    ) -> Iterator[StoredEntity]:
        for entity_id in self.ids:
            if entity_id.startswith(prefix) and (after is None or entity_id > after):
                yield StoredEntity({"id": entity_id, "properties": {}}, 0, 1)

    def lookup(self, entity_id: str) -> StoredEntity | None:
        return StoredEntity({"id": entity_id}, 0, 1) if entity_id in self.ids else None

    def count_namespace(self, namespace: str, partitions: Sequence[int] | None = None) -> int:
        return sum(1 for i in self.ids if i.startswith(f"{namespace}/"))


def cluster(reader: FakeReader, wait_s: float = 0.3) -> Cluster:
    return Cluster(reader, None, NodeCalls("http://me", 1.0), reader.partitions, wait_s)  # type: ignore[arg-type]


def test_owners_name_this_node_for_its_partitions_and_the_assignment_for_the_rest() -> None:
    reader = FakeReader([0, 2], {0: "http://me", 1: "http://b", 2: "http://me", 3: "http://b"}, [])
    assert asyncio.run(cluster(reader).owners()) == {"http://me": [0, 2], "http://b": [1, 3]}


def test_a_partition_nobody_serves_is_waited_for_then_503() -> None:
    reader = FakeReader([0, 1, 2], {0: "http://me", 1: "http://me", 2: "http://me", 3: None}, [])
    started = time.monotonic()
    with pytest.raises(PartitionUnavailable) as raised:
        asyncio.run(cluster(reader, wait_s=0.3).owners())
    assert raised.value.partition == 3
    assert time.monotonic() - started >= 0.3


def test_a_partition_that_comes_back_within_the_bound_is_served() -> None:
    reader = FakeReader([0, 1, 2], {3: None}, [])

    async def later() -> dict[str, list[int]]:
        async def arrive() -> None:
            await asyncio.sleep(0.1)
            reader.local = [0, 1, 2, 3]

        task = asyncio.create_task(arrive())
        found = await cluster(reader, wait_s=2).owners()
        await task
        return found

    assert asyncio.run(later()) == {"http://me": [0, 1, 2, 3]}


def test_a_recovering_local_partition_is_not_served_from_its_incomplete_store() -> None:
    reader = FakeReader([0, 1, 2, 3], {p: "http://me" for p in range(4)}, [])
    reader.ready = False
    with pytest.raises(PartitionUnavailable):
        asyncio.run(cluster(reader, wait_s=0.1).owners())


def test_pages_by_offset_on_one_node() -> None:
    ids = [f"ns/e-{n:02d}" for n in range(25)]
    reader = FakeReader([0, 1, 2, 3], {p: "http://me" for p in range(4)}, ids)
    page = asyncio.run(cluster(reader).page("ns/", 10, 10, None))
    assert [e["id"] for e in page.entities] == ids[10:20] and page.after == ids[19] and page.skip == 0
    page = asyncio.run(cluster(reader).page("ns/", 20, 10, None))
    assert [e["id"] for e in page.entities] == ids[20:] and page.after is None


def test_history_pages_end_early_with_a_cursor_when_sources_only_pass_frontiers() -> None:
    class EmptyPages:
        def __init__(self) -> None:
            self.calls = 0

        def page(self, query: HistoryQuery, partitions: Sequence[int] | None = None) -> Any:
            self.calls += 1
            after = query.after or b"\x00"
            return [], after + b"\x01"  # examined keys, none matched the filters

    history = EmptyPages()
    reader = FakeReader([0, 1, 2, 3], {p: "http://me" for p in range(4)}, [])
    gather = Cluster(reader, history, NodeCalls("http://me", 1.0), 4, 0.1)  # type: ignore[arg-type]
    query = HistoryQuery(entity=None, prefix="ns/", since=0, until=10, descending=False, limit=5)
    page, cursor = asyncio.run(gather.history(query, None))
    assert page == [] and cursor is not None
    assert history.calls == 2, "a bounded request: about two pages from each source"


def test_standbys_follow_each_owner_in_the_ring_of_nodes() -> None:
    from agents.table.standby import standby_partitions

    owners = {"http://a": [0, 3], "http://b": [1, 4], "http://c": [2, 5]}
    assert standby_partitions(owners, "http://b", 1) == [0, 3]
    assert standby_partitions(owners, "http://a", 1) == [2, 5]
    assert standby_partitions(owners, "http://a", 2) == [1, 2, 4, 5]
    assert standby_partitions(owners, "http://a", 0) == []
    assert standby_partitions({"http://a": [0, 1]}, "http://a", 1) == [], "one node: nobody to copy"
    every = [p for url in owners for p in standby_partitions(owners, url, 1)]
    assert sorted(every) == list(range(6)), "each partition has exactly one standby"


@pytest.mark.parametrize("entity_id", ["x%41", "q?x=1", "h#frag", "with space", "a/b%2Fc", "ü\u00a0%", "plain/id"])
def test_a_forwarded_read_reaches_the_owner_with_the_id_this_node_decoded(entity_id: str) -> None:
    """The owner decodes the forwarded path once, as this node did: it must find the same id."""
    path = f"/api/state/entities/{entity_id}"  # the path as this node's server decoded it
    scope = {
        "type": "http",
        "method": "GET",
        "path": path,
        "query_string": b"at=2024-01-01T00%3A00%3A00Z",
        "headers": [],
    }
    url = httpx.URL(forward_url("http://owner:3001", Request(scope)))
    assert (url.host, url.port, url.path) == ("owner", 3001, path)  # httpx.URL.path: decoded, as the owner reads it
    assert url.query == b"at=2024-01-01T00%3A00%3A00Z"
