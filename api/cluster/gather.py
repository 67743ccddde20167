"""Reads that span partitions, gathered from every node that serves some of them.

Each node serves the partitions the consumer group assigned it. A list, a prefix, a namespace
count or a prefix history needs all partitions: this module asks the group's assignment which
node serves which (waiting up to ``FLUX_REBALANCE_WAIT_S`` while partitions move), reads this
node's share from its own stores and asks each other node for its share through the internal
endpoints of :mod:`api.cluster.internal`, and merges the answers in key order.

Every source answers pages of ``(key, item)`` in key order with a *frontier*: the last key it
examined when more may follow, ``None`` when it has no more. The merge pops items in global key
order and fetches a source's next page (after its frontier) only when the merge reaches it, so a
page of the answer costs about a page from each node, and stopping anywhere leaves a cursor (the
last key popped) that resumes exactly there on every node: pages are stable however the
partitions are spread. On one node every partition is local and nothing goes over the network.
"""

from __future__ import annotations

import asyncio
import heapq
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import httpx

from api.cluster.node_calls import MAX_CALL_ITEMS, NodeCalls
from api.errors import ApiError
from flux.model.history import HistoryQuery, encode_cursor
from flux.model.partitioning import partition_for
from flux.model.state import HistoryReader, PartitionUnavailable, StateReader, StoredEntity

INTERNAL = "/api/internal"
REMOTE_PAGE = 5_000  # entities or events one internal request returns at most
AT_PAGE = 200  # entities as they were at a time: each costs a fold of its history
AT_BUDGET = 100_000  # history events a node folds at most for one list with ?at= (FLUX_LIST_AT_MAX_EVENTS)
WAIT_STEP_S = 0.05

Page = tuple[list[tuple[Any, Any]], Any]  # ([(key, item)], frontier or None)
Fetch = Callable[[Any], Awaitable[Page]]  # after -> the next page


class _Mark:
    """The frontier of a source's page in the merge: the source has more after this key."""


_MARK = _Mark()


class _Reversed:
    """Reverses the order of a key in the merge's heap (descending pages)."""

    __slots__ = ("key",)

    def __init__(self, key: Any) -> None:
        self.key = key

    def __lt__(self, other: _Reversed) -> bool:
        return bool(self.key > other.key)


async def merged(
    fetches: Sequence[Fetch], descending: bool = False, start: Any = None
) -> AsyncIterator[tuple[Any, Any]]:
    """(key, item) over every source in key order, from just after ``start``; ``item`` is None where
    the merge only passed a source's frontier (a key it examined without an item to give, a cursor
    may stop there)."""
    queues: list[deque[tuple[Any, Any]]] = [deque() for _ in fetches]

    async def refill(index: int, after: Any) -> None:
        items, frontier = await fetches[index](after)
        queues[index].extend(items)
        if frontier is not None:
            queues[index].append((frontier, _MARK))

    heap: list[tuple[Any, int, Any, Any]] = []

    def push(index: int) -> None:
        if queues[index]:
            key, item = queues[index].popleft()
            heapq.heappush(heap, (_Reversed(key) if descending else key, index, key, item))

    await asyncio.gather(*(refill(index, start) for index in range(len(fetches))))
    for index in range(len(fetches)):
        push(index)
    while heap:
        _, index, key, item = heapq.heappop(heap)
        if item is _MARK:
            yield key, None
            await refill(index, key)  # only once the caller wants more
        else:
            yield key, item
        push(index)


def _stored(row: list[Any]) -> StoredEntity:
    return StoredEntity(row[0], row[1], row[2])


class Cluster:
    """Cross-partition reads over the nodes of one Flux app (see the module docstring)."""

    def __init__(
        self,
        reader: StateReader,
        history: HistoryReader,
        calls: NodeCalls,
        partitions: int,
        wait_s: float,
        at_budget: int = AT_BUDGET,
    ) -> None:
        self._reader = reader
        self._at_budget = at_budget
        self._history = history
        self._calls = calls
        self.node_url = calls.node_url
        self._partitions = partitions
        self._wait_s = wait_s

    # -- who serves what ----------------------------------------------------------------
    def _owners_now(self, partitions: Sequence[int]) -> dict[str, list[int]] | int:
        """Partitions per serving node URL, or the first partition nobody serves now."""
        local = set(self._reader.active_partitions()) if self._reader.recovered() else set()
        assigned = {p: url for url, served in self._reader.owners().items() for p in served}
        owners: dict[str, list[int]] = {}
        for partition in partitions:
            owner = self.node_url if partition in local else assigned.get(partition)
            if owner is None or (owner == self.node_url and partition not in local):
                return partition
            owners.setdefault(owner, []).append(partition)
        return owners

    async def owners(self, partitions: Sequence[int] | None = None) -> dict[str, list[int]]:
        """Which node serves each of ``partitions`` (default: all), waiting up to FLUX_REBALANCE_WAIT_S
        while some are on the move; raises :class:`PartitionUnavailable` after that."""
        wanted = list(range(self._partitions)) if partitions is None else list(partitions)
        deadline = time.monotonic() + self._wait_s
        while True:
            found = self._owners_now(wanted)
            if isinstance(found, dict):
                return found
            if time.monotonic() >= deadline:
                raise PartitionUnavailable(found)
            await asyncio.sleep(WAIT_STEP_S)

    async def settle(self, entity_id: str) -> None:
        """Wait (up to the bound) until somebody serves the partition of ``entity_id``, and, when
        this node does, until its reads reflect what the reducer folded (:meth:`StateReader.settle`)."""
        partition = partition_for(entity_id, self._partitions)
        await self.owners([partition])
        await self._reader.settle(partition)

    # -- the internal endpoints of the other nodes ---------------------------------------
    async def _call(self, owner: str, path: str, auth: str | None, params: Any = None, body: Any = None) -> Any:
        """The JSON answer of another node's internal endpoint. A node that does not serve the
        partitions (yet: it is still recovering) or does not answer is asked again until the
        FLUX_REBALANCE_WAIT_S bound; its 401 or 403 is passed on as it is. The caller travels as
        :mod:`api.cluster.node_calls` says (with FLUX_CLUSTER_SECRET, never the admin token)."""
        client = self._calls.client
        headers = self._calls.headers(auth)  # forwarded-by: a node that no longer serves a partition answers 503
        deadline = time.monotonic() + self._wait_s
        while True:
            try:
                if body is None:
                    answer = await client.get(owner + INTERNAL + path, params=params, headers=headers)
                else:
                    answer = await client.post(owner + INTERNAL + path, json=body, headers=headers)
            except httpx.HTTPError as exc:
                problem = f"{owner} serves part of this answer but did not answer: {exc!r}"
            else:
                if answer.status_code == 200:
                    return answer.json()
                if answer.status_code in (401, 403):
                    raise ApiError(answer.status_code, _message(answer), headers=_challenge(answer))
                problem = f"{owner} serves part of this answer but answered {answer.status_code}: {_message(answer)}"
                if answer.status_code != 503:
                    raise NodeUnavailable(problem)  # not a state that passes: asking again would not help
            if time.monotonic() >= deadline:
                raise NodeUnavailable(problem)
            await asyncio.sleep(WAIT_STEP_S * 4)

    # -- entities -------------------------------------------------------------------------
    async def entities(
        self, prefix: str, auth: str | None, chunk: int = REMOTE_PAGE, after: str | None = None
    ) -> AsyncIterator[StoredEntity]:
        """Existing entities whose id starts with ``prefix`` (and sorts after ``after``), in id order, over
        the whole cluster."""
        fetches = [
            self._entity_pages(owner, partitions, prefix, auth, chunk)
            for owner, partitions in (await self.owners()).items()
        ]
        async for _, stored in merged(fetches, start=after):
            if stored is not None:
                yield stored

    def _entity_pages(self, owner: str, partitions: list[int], prefix: str, auth: str | None, chunk: int) -> Fetch:
        size = max(1, min(chunk, REMOTE_PAGE))

        async def local(after: str | None) -> Page:
            found = self._reader.iter_prefix(prefix, partitions, after)
            items = [(s.entity["id"], s) for s in _take(found, size)]
            return items, items[-1][0] if len(items) == size else None

        async def remote(after: str | None) -> Page:
            params: dict[str, Any] = {"prefix": prefix, "partitions": _csv(partitions), "limit": size}
            if after is not None:
                params["after"] = after
            answer = await self._call(owner, "/entities", auth, params)
            return [(row[0]["id"], _stored(row)) for row in answer["items"]], answer["frontier"]

        return local if owner == self.node_url else remote

    def _pages_at(
        self, owner: str, partitions: list[int], prefix: str, auth: str | None, chunk: int, at: int, budget: AtBudget
    ) -> Fetch:
        """A source of entities as they were at ``at``, folding at most ``budget.per_source`` history
        events over the request (then its last page ends early and ``budget.exhausted`` is set)."""
        size = max(1, min(chunk, AT_PAGE))
        left = budget.per_source

        def spent(scanned: int) -> None:
            nonlocal left
            left -= scanned
            if left <= 0:
                budget.exhausted = True

        async def local(after: str | None) -> Page:
            found = await self._history.page_at(prefix, at, size, max(1, left), partitions, after)
            spent(found.scanned)
            return [(i, StoredEntity(e, 0, -1)) for i, e in found.items], found.frontier

        async def remote(after: str | None) -> Page:
            params: dict[str, Any] = {
                "prefix": prefix,
                "partitions": _csv(partitions),
                "limit": size,
                "at": at,
                "budget": max(1, left),
            }
            if after is not None:
                params["after"] = after
            answer = await self._call(owner, "/entities", auth, params)
            spent(int(answer.get("scanned", 0)))
            return [(row[0]["id"], _stored(row)) for row in answer["items"]], answer["frontier"]

        return local if owner == self.node_url else remote

    async def page(
        self,
        prefix: str,
        offset: int,
        limit: int,
        auth: str | None,
        at: int | None = None,
        after: str | None = None,
    ) -> ListPage:
        """Up to ``limit`` entities after skipping ``offset``, in id order, starting after the id ``after``
        (a cursor: the cost of a page does not grow with the pages before it), and where the next page starts.

        With ``at``, each node serving part of the list folds about FLUX_LIST_AT_MAX_EVENTS history events
        at most for it: past that, the page ends early (fewer entities, or none) at a frontier that the
        next page goes on from.
        """
        chunk = offset + limit + 1
        budget = AtBudget(self._at_budget)
        fetches = [
            self._entity_pages(owner, partitions, prefix, auth, chunk)
            if at is None
            else self._pages_at(owner, partitions, prefix, auth, chunk, at, budget)
            for owner, partitions in (await self.owners()).items()
        ]
        page: list[dict[str, Any]] = []
        skip = offset
        async for key, stored in merged(fetches, start=after):
            if stored is None:
                if budget.exhausted:  # everything up to key was examined on every node
                    return ListPage(page, key, skip)
            elif skip:
                skip -= 1
            elif len(page) == limit:
                return ListPage(page, page[-1]["id"], 0)
            else:
                page.append(stored.entity)
        return ListPage(page, None, 0)

    async def lookup(self, entity_ids: Sequence[str], auth: str | None) -> dict[str, StoredEntity]:
        """The existing entities among ``entity_ids``, by id, wherever they are served: another node's
        share goes in calls of at most MAX_CALL_ITEMS ids, this node's is read as many at a time
        between hand-backs of the event loop."""
        by_partition: dict[int, list[str]] = {}
        for entity_id in entity_ids:
            by_partition.setdefault(partition_for(entity_id, self._partitions), []).append(entity_id)
        found: dict[str, StoredEntity] = {}
        for owner, partitions in (await self.owners(sorted(by_partition))).items():
            ids = [entity_id for p in partitions for entity_id in by_partition[p]]
            for part in _chunks(ids, MAX_CALL_ITEMS):
                if owner == self.node_url:
                    found.update({i: stored for i in part if (stored := self._reader.lookup(i)) is not None})
                    await asyncio.sleep(0)
                else:
                    answer = await self._call(owner, "/lookup", auth, body={"ids": part})
                    found.update({row[0]["id"]: _stored(row) for row in answer["items"]})
        return found

    async def count_namespaces(self, names: Sequence[str], auth: str | None) -> dict[str, int]:
        """Existing entities ``name/...`` per namespace name, over the whole cluster (another node is
        asked for at most MAX_CALL_ITEMS names a call)."""
        totals = dict.fromkeys(names, 0)
        if not totals:
            return totals
        for owner, partitions in (await self.owners()).items():
            for part in _chunks(list(totals), MAX_CALL_ITEMS):
                if owner == self.node_url:
                    counts = {name: self._reader.count_namespace(name, partitions) for name in part}
                    await asyncio.sleep(0)
                else:
                    body = {"namespaces": part, "partitions": partitions}
                    counts = await self._call(owner, "/namespace-counts", auth, body=body)
                for name in part:
                    totals[name] += int(counts.get(name, 0))
        return totals

    # -- history --------------------------------------------------------------------------
    async def history(self, query: HistoryQuery, auth: str | None) -> tuple[list[dict[str, Any]], bytes | None]:
        """A page of a prefix's history over the whole cluster and the cursor of the next (None: no more).

        Like one node's page, it may end early (a cursor, fewer events) when the filters skip many
        events: after each source was asked for about two pages.
        """
        owners = await self.owners()
        fetches = [self._history_pages(owner, partitions, query, auth) for owner, partitions in owners.items()]
        budget = 2 * len(fetches)
        page: list[dict[str, Any]] = []
        last: bytes | None = None
        async for key, event in merged(fetches, query.descending, query.after):
            if len(page) == query.limit:
                return page, last  # something follows
            last = key
            if event is None:
                budget -= 1
                if budget == 0:
                    return page, last
                continue
            page.append(event)
        return page, None

    def _history_pages(self, owner: str, partitions: list[int], query: HistoryQuery, auth: str | None) -> Fetch:
        async def local(after: bytes | None) -> Page:
            return self._history.page(replace(query, after=after), partitions)

        async def remote(after: bytes | None) -> Page:
            params: dict[str, Any] = {**_history_params(query), "partitions": _csv(partitions)}
            if after is not None:
                params["cursor"] = encode_cursor(after)
            answer = await self._call(owner, "/history", auth, params)
            frontier = answer["frontier"]
            return [(bytes.fromhex(k), e) for k, e in answer["items"]], None if frontier is None else bytes.fromhex(
                frontier
            )

        return local if owner == self.node_url else remote


@dataclass
class AtBudget:
    """History events each source of one ``?at=`` list may fold, and whether one has run out."""

    per_source: int
    exhausted: bool = False


@dataclass(frozen=True)
class ListPage:
    """A page of a list: its entities, the id the next page starts after (None: no more follow),
    and how many entities the next page still skips (an ``offset`` a budget interrupted)."""

    entities: list[dict[str, Any]]
    after: str | None
    skip: int


class NodeUnavailable(PartitionUnavailable):
    """A node serving part of an answer did not give it (unreachable, or its partitions moved)."""

    def __init__(self, message: str) -> None:
        RuntimeError.__init__(self, message)
        self.partition = -1


def _message(answer: httpx.Response) -> str:
    try:
        return str(answer.json()["error"])
    except (ValueError, KeyError, TypeError):
        return answer.text[:200]


def _challenge(answer: httpx.Response) -> dict[str, str] | None:
    challenge = answer.headers.get("www-authenticate")
    return None if challenge is None else {"WWW-Authenticate": challenge}


def _take(items: Any, count: int) -> list[Any]:
    return [item for _, item in zip(range(count), items, strict=False)]


def _chunks(items: list[str], size: int) -> list[list[str]]:
    """``items`` cut into lists of at most ``size``, in order."""
    return [items[start : start + size] for start in range(0, len(items), size)]


def _csv(partitions: Sequence[int]) -> str:
    return ",".join(str(p) for p in partitions)


def _history_params(query: HistoryQuery) -> dict[str, Any]:
    params: dict[str, Any] = {
        "prefix": query.prefix or "",
        "since": query.since,
        "until": query.until,
        "order": "desc" if query.descending else "asc",
        "limit": query.limit,
    }
    if query.streams:
        params["stream"] = next(iter(query.streams))
    if query.sources:
        params["source"] = next(iter(query.sources))
    return params
