"""Reads of the history index the reducer writes next to the entity table (see :mod:`flux.model.history`).

A history query walks history keys in key order: one entity's events are one time-ordered range;
a prefix covers the ranges of every matching entity, in entity-id order, then time order. The
partitions this node serves are merged, so pages are stable, and a cursor (the last key of a
page) resumes exactly after it, in either direction. Time travel folds an entity's events up to
a time with the pure reducer, one event at a time as the iterator reads them (an entity's history
is never all in memory), and hands the event loop back every :data:`YIELD_EVERY` events or
entities, so a long fold or a long list shares the loop with other requests (and, with
``FLUX_HTTP_PROCESSES=0``, with the reducer) instead of stopping it. A RocksDB iterator is a
consistent view of its store, so pausing between reads is safe.
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import orjson
import rocksdict

from flux.model.history import (
    HISTORY_PREFIX,
    AtPage,
    HistoryQuery,
    entity_range,
    page_at,
    split_history_key,
    time_key,
)
from flux.model.partitioning import partition_for
from flux.model.reducer import apply_event, new_state, to_entity


def _walk(
    db: rocksdict.Rdict, low: bytes, high: bytes, descending: bool, after: bytes | None
) -> Iterator[tuple[bytes, bytes]]:
    """Keys in [low, high), ascending or descending, strictly past ``after`` in that order."""
    it = db.iter()
    if descending:
        upper = high if after is None else min(high, after)  # exclusive
        it.seek_for_prev(upper)
        if it.valid() and it.key() >= upper:
            it.prev()
        while it.valid() and it.key() >= low:
            yield it.key(), it.value()
            it.prev()
    else:
        it.seek(low if after is None else max(low, after))
        if it.valid() and it.key() == after:
            it.next()
        while it.valid() and it.key() < high:
            yield it.key(), it.value()
            it.next()


SCAN_BUDGET = 20_000
"""History keys one request examines at most: filters that skip many events (a prefix over long
histories with a recent ``since``, a rare stream) end a page early, with a cursor to go on."""


YIELD_EVERY = 1_000
"""Events folded (or entities examined) between two hand-backs of the event loop: about a millisecond."""


class Pacer:
    """Hands the event loop back (``asyncio.sleep(0)``) every ``every`` units of work."""

    def __init__(self, every: int = YIELD_EVERY) -> None:
        self._every = every
        self._done = 0

    async def tick(self) -> None:
        """One unit of work done; let the other tasks run if it completes a round."""
        self._done += 1
        if self._done >= self._every:
            self._done = 0
            await asyncio.sleep(0)


class _Descending:
    """Reverses the order of a key for :func:`heapq.merge` (``reverse=True`` needs sorted inputs too)."""

    __slots__ = ("key",)

    def __init__(self, key: bytes) -> None:
        self.key = key

    def __lt__(self, other: _Descending) -> bool:
        return self.key > other.key


class Stores(Protocol):
    """The partition stores history is read from: the reducer's own (:class:`agents.table.store.EntityStore`)
    or an HTTP process's secondaries (:class:`agents.table.replica.ReplicaTable`)."""

    def serving_db(self, partition: int) -> rocksdict.Rdict:
        """The store of a partition this node serves (else :class:`flux.model.state.PartitionUnavailable`)."""
        ...

    def active_partitions(self) -> list[int]:
        """The partitions this node serves."""
        ...

    def iter_partition(
        self, db: rocksdict.Rdict, prefix: bytes, after: bytes | None = None
    ) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) of one store's entities with ids starting with ``prefix`` (after ``after``)."""
        ...


class Rebuilds(Protocol):
    """Whether a partition's history is complete (:class:`agents.history.rebuild.HistoryRebuilder`)."""

    def check_readable(self, partition: int) -> None:
        """Raise :class:`agents.history.rebuild.HistoryRebuilding` while it is being rebuilt."""
        ...


class HistoryStore:
    """History and time-travel reads over the partitions this node serves."""

    def __init__(self, store: Stores, partitions: int, rebuilder: Rebuilds) -> None:
        self._store = store
        self._partitions = partitions
        self._rebuilder = rebuilder

    def _db(self, partition: int) -> rocksdict.Rdict:
        """The partition's store, if this node serves it and its history is complete (else 503)."""
        db = self._store.serving_db(partition)
        self._rebuilder.check_readable(partition)
        return db

    def _range(self, query: HistoryQuery, partitions: Sequence[int] | None) -> tuple[bytes, bytes, list[int]]:
        if query.entity is not None:
            partitions = [partition_for(query.entity, self._partitions)]
            return time_key(query.entity, query.since), time_key(query.entity, query.until + 1), partitions
        low = HISTORY_PREFIX + (query.prefix or "").encode()
        return low, low + b"\xff", list(self._store.active_partitions() if partitions is None else partitions)

    def events(self, query: HistoryQuery) -> tuple[list[dict[str, Any]], bytes | None]:
        """Up to ``query.limit`` events and the cursor of the next page (None: no more)."""
        page, last = self.page(query)
        return [event for _, event in page], last

    def page(
        self, query: HistoryQuery, partitions: Sequence[int] | None = None
    ) -> tuple[list[tuple[bytes, dict[str, Any]]], bytes | None]:
        """Up to ``query.limit`` (history key, event) pairs of ``partitions`` (default: every one
        served here), and the last key examined when more may follow (None: no more)."""
        if "\0" in (query.entity or "") or "\0" in (query.prefix or ""):
            return [], None  # ids never contain NUL (validation refuses it)
        low, high, served = self._range(query, partitions)
        streams = [_walk(self._db(p), low, high, query.descending, query.after) for p in served]
        if query.descending:
            merged: Iterator[tuple[bytes, bytes]] = heapq.merge(*streams, key=lambda kv: _Descending(kv[0]))
        else:
            merged = heapq.merge(*streams)
        page: list[tuple[bytes, dict[str, Any]]] = []
        last: bytes | None = None
        for examined, (key, value) in enumerate(merged):
            if examined == SCAN_BUDGET:  # a bounded request: the next page goes on from here
                return page, last
            last = key
            if query.entity is None:
                _, timestamp, _ = split_history_key(key)
                if not query.since <= timestamp <= query.until:
                    continue
            event = orjson.loads(value)
            if query.streams is not None and event.get("stream") not in query.streams:
                continue
            if query.sources is not None and event.get("source") not in query.sources:
                continue
            page.append((key, event))
            if len(page) == query.limit:
                return page, key if self._more(merged) else None
        return page, None

    @staticmethod
    def _more(merged: Iterator[tuple[bytes, bytes]]) -> bool:
        """Whether anything follows in ``merged`` (a next page may still turn out empty after filters)."""
        return next(merged, None) is not None

    async def entity_at(self, entity_id: str, at: int) -> dict[str, Any] | None:
        """The entity as it was at ``at`` (its events with timestamp <= at, folded); None if absent then."""
        entity, _ = await self._fold_at(entity_id, at, Pacer())
        return entity

    async def _fold_at(self, entity_id: str, at: int, pacer: Pacer) -> tuple[dict[str, Any] | None, int]:
        """(the entity as it was at ``at`` or None, events folded): one event in memory at a time."""
        await pacer.tick()  # an entity examined is work too, with no event folded
        if "\0" in entity_id:
            return None, 0  # ids never contain NUL (validation refuses it)
        db = self._db(partition_for(entity_id, self._partitions))
        state = new_state()
        folded = 0
        for _, value in _walk(db, entity_range(entity_id), time_key(entity_id, at + 1), False, None):
            apply_event(state, orjson.loads(value))
            folded += 1
            await pacer.tick()
        return to_entity(entity_id, state), folded

    async def page_at(
        self,
        prefix: str,
        at: int,
        limit: int,
        budget: int,
        partitions: Sequence[int] | None = None,
        after: str | None = None,
    ) -> AtPage:
        """Up to ``limit`` entities whose id starts with ``prefix`` (and sorts after ``after``) as they
        were at ``at``, in id order, over ``partitions`` (default: served here), folding about ``budget``
        events at most (:func:`flux.model.history.page_at`)."""
        encoded = prefix.encode()
        start = None if after is None else after.encode()
        served = self._store.active_partitions() if partitions is None else partitions
        streams = [(key for key, _ in self._store.iter_partition(self._db(p), encoded, start)) for p in served]
        ids = (key.decode() for key in heapq.merge(*streams))
        pacer = Pacer()
        return await page_at(ids, lambda entity_id: self._fold_at(entity_id, at, pacer), limit, budget)
