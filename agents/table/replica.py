"""The entity table as an HTTP process reads it: RocksDB secondaries of the reducer's stores.

The reducer process owns each partition's RocksDB store. An HTTP process opens each store it
reads as a RocksDB *secondary* instance, which sees the primary's writes (its write-ahead log
included) once it catches up. A catch-up costs about half a millisecond whether anything
changed or not, so it is not done per read. Instead:

- the change relay hands every change record to :meth:`ReplicaTable.on_change`, which keeps the
  entities it changed (their state after the batch) in an overlay, per partition;
- a single-entity read answers from the overlay when the entity changed after the secondary's
  position, else from the secondary;
- every :data:`CATCH_UP_INTERVAL_S` the partitions the feed moved are caught up, and the overlay
  entries the secondary now holds are dropped: the overlay stays the size of a fraction of a
  second of changes.

A read must see whatever any process of the node has told a client: every change its relays
delivered (to WebSocket subscribers, or as a ``?wait=true`` answer) before the read arrived, and
every state its own reads showed. Each process records on the :class:`AppliedBoard` how far it
may have shown a partition, before it can show it: its relay's offset before any subscriber
hears of a record, and its secondary's offset after each catch-up (a secondary catches up to
whatever the primary holds, often past what the relays delivered). A read compares the largest
of those offsets with its own view.
:meth:`ReplicaTable.settle` waits (briefly) for this process's relay to get there; a synchronous
read whose view is still behind catches the secondary up first. Scans (lists, counts, history)
read a secondary caught up that far.

Which partitions this node serves, whether it has recovered, its readiness and the stores' paths
come from the reducer process as a :class:`TableStatus` (see :mod:`api.workers.control`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import rocksdict

from agents.history.rebuild import HistoryRebuilding
from agents.table.applied_board import AppliedBoard
from agents.table.store import (
    NAMESPACE_COUNT_PREFIX,
    STATS_KEY,
    decode_state,
    existing_entities,
    iter_entities,
    read_stats,
    stored_entity,
    stored_offset,
)
from flux.model.changes import ChangeRecord
from flux.model.partitioning import partition_for
from flux.model.reducer import exists
from flux.model.state import PartitionUnavailable, Readiness, StoredEntity, TableStatus

log = logging.getLogger(__name__)

CATCH_UP_INTERVAL_S = 0.1
SETTLE_WAIT_S = 0.05  # how long a read waits for the relay before it catches the secondary up itself
MAX_OVERLAY_ENTITIES = 200_000  # per partition; beyond, the partition is caught up at once


@dataclass
class _Partition:
    """One partition's secondary, its position, and the overlay of entities changed since."""

    db: rocksdict.Rdict
    base: int  # the applied offset the secondary holds
    fed: int = -1  # the newest applied offset the relay delivered for this partition
    fed_trusted: bool = False  # the secondary caught up after the relay's first record: no gap between them
    epoch: int = 0  # the board's rewrite count the secondary reflects
    overlay: dict[str, tuple[dict[str, Any] | None, int]] = field(default_factory=dict)


def _stored_from_feed(entity: dict[str, Any], applied: int) -> StoredEntity:
    """A :class:`StoredEntity` from a change record's entity view (``lastUpdated`` is the newest event time)."""
    last = int(datetime.fromisoformat(entity["lastUpdated"].replace("Z", "+00:00")).timestamp() * 1000)
    return StoredEntity(entity, last, applied)


class ReplicaTable:
    """Implements :class:`flux.model.state.StateReader` over secondaries of the reducer's stores."""

    def __init__(
        self,
        partitions: int,
        status: Callable[[], TableStatus],
        board: AppliedBoard,
        secondary_dir: Path,
        index: int = 0,
    ) -> None:
        self._partitions = partitions
        self._index = index  # this HTTP process's relayed slots on the board
        self._status = status
        self._board = board
        self._secondary_dir = secondary_dir
        self._open: dict[int, _Partition] = {}
        self._generation = -1
        self._fed: dict[int, asyncio.Event] = {}
        self._task: asyncio.Task[None] | None = None
        self.catch_ups = 0

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        """Start catching up the partitions the feed moved, every :data:`CATCH_UP_INTERVAL_S`."""
        self._task = asyncio.create_task(self._catch_up_loop(), name="flux-replica-catch-up")

    async def stop(self) -> None:
        """Stop catching up and close the secondaries."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for partition in list(self._open):
            self._close(partition)

    async def _catch_up_loop(self) -> None:
        while True:
            await asyncio.sleep(CATCH_UP_INTERVAL_S)
            try:
                self._sync_partitions()
                for partition, state in list(self._open.items()):
                    if state.fed > state.base or (not state.fed_trusted and state.fed >= 0):
                        self._catch_up(partition, state)
            except Exception:  # a store closed under us by a rebalance: next round
                log.exception("could not catch up the table's secondaries")

    # -- partitions --------------------------------------------------------------------------
    def _sync_partitions(self) -> None:
        """Close the secondaries of partitions no longer served (all of them after a rebalance)."""
        status = self._status()
        if status.generation != self._generation:
            for partition in list(self._open):
                self._close(partition)
            self._generation = status.generation

    def _close(self, partition: int) -> None:
        state = self._open.pop(partition, None)
        if state is not None:
            with contextlib.suppress(Exception):
                state.db.close()

    def _partition(self, partition: int) -> _Partition:
        """The open secondary of a partition this node serves; raises :class:`PartitionUnavailable`."""
        self._sync_partitions()
        status = self._status()
        if not status.recovered or partition not in status.active:
            raise PartitionUnavailable(partition)
        state = self._open.get(partition)
        if state is None:
            path = status.paths.get(partition)
            if path is None:
                raise PartitionUnavailable(partition)
            options = rocksdict.Options(raw_mode=True)
            options.set_max_open_files(-1)  # required of a secondary instance
            secondary = self._secondary_dir / f"partition-{partition}"
            secondary.mkdir(parents=True, exist_ok=True)
            try:
                db = rocksdict.Rdict(path, options=options, access_type=rocksdict.AccessType.secondary(str(secondary)))
            except Exception as exc:
                log.warning("could not open partition %d's store %s as a secondary: %r", partition, path, exc)
                raise PartitionUnavailable(partition) from exc
            state = _Partition(db, stored_offset(db), epoch=self._board.epoch(partition))
            self._open[partition] = state
            self._board.relayed(partition, self._index, state.base)  # as after a catch-up
        return state

    def _catch_up(self, partition: int, state: _Partition) -> None:
        state.epoch = self._board.epoch(partition)  # read first: a rewrite after this is caught next time
        state.db.try_catch_up_with_primary()
        self.catch_ups += 1
        state.base = max(state.base, stored_offset(state.db))
        self._board.relayed(partition, self._index, state.base)  # this process may show that much now
        if state.fed >= 0:
            state.fed_trusted = True
        base = state.base
        state.overlay = {key: entry for key, entry in state.overlay.items() if entry[1] > base}

    def _view(self, state: _Partition) -> int:
        """The applied offset single-entity reads of the partition reflect (secondary and overlay)."""
        return max(state.base, state.fed) if state.fed_trusted else state.base

    def _fresh(self, partition: int, scan: bool = False) -> _Partition:
        """The partition, its view at least as far as any relay of the node had delivered when this
        was called, and past every rewrite (for a scan: the secondary itself)."""
        state = self._partition(partition)
        target = self._board.target(partition)
        if (state.base if scan else self._view(state)) < target or state.epoch != self._board.epoch(partition):
            self._catch_up(partition, state)
        return state

    # -- the relay's records -----------------------------------------------------------------
    def on_change(self, record: ChangeRecord) -> None:
        """Keep the entities a change record changed, for the partitions open here, and say on the
        board how far this process relayed (called before the record reaches any subscriber)."""
        self._board.relayed(record.partition, self._index, record.applied)
        state = self._open.get(record.partition)
        if state is None:
            return
        if record.applied > state.base:
            overlay = state.overlay
            for change in record.changes:
                overlay[change.id] = (change.entity, change.o)
            if len(overlay) > MAX_OVERLAY_ENTITIES:
                self._catch_up(record.partition, state)
        state.fed = max(state.fed, record.applied)
        event = self._fed.pop(record.partition, None)
        if event is not None:
            event.set()

    async def settle(self, partition: int) -> None:
        """Wait, at most :data:`SETTLE_WAIT_S`, until the relay brought ``partition``'s view to what
        the reducer had written when this was called (a read that follows then needs no catch-up)."""
        state = self._open.get(partition)
        target = self._board.target(partition)
        if state is None or not state.fed_trusted or self._view(state) >= target:
            return  # (a rewrite, see the board's epoch, is caught up by the read itself)
        deadline = time.monotonic() + SETTLE_WAIT_S
        while self._view(state) < target:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            event = self._fed.setdefault(partition, asyncio.Event())
            try:
                await asyncio.wait_for(event.wait(), left)
            except TimeoutError:
                return

    # -- StateReader ---------------------------------------------------------------------------
    def owner_url(self, partition: int) -> str | None:
        """The URL of the node serving ``partition`` in the group's current assignment (None: nobody)."""
        return next((url for url, served in self.owners().items() if partition in served), None)

    def owners(self) -> dict[str, list[int]]:
        """The nodes in the group's current assignment, by URL, with the partitions each serves."""
        return self._status().owners

    def active_partitions(self) -> list[int]:
        """Partitions this node serves (recovering ones included)."""
        return list(self._status().active)

    def recovered(self) -> bool:
        """Whether the reducer process recovered its table and folds on."""
        return self._status().recovered

    def lookup(self, entity_id: str) -> StoredEntity | None:
        """The entity with its versions, or None; raises :class:`PartitionUnavailable` if not served here."""
        if "\0" in entity_id:
            return None
        partition = partition_for(entity_id, self._partitions)
        state = self._fresh(partition)
        entry = state.overlay.get(entity_id)
        if entry is not None and entry[1] > state.base:
            entity, applied = entry
            return None if entity is None else _stored_from_feed(entity, applied)
        raw = state.db.get(entity_id.encode())
        if raw is None:
            return None
        stored = decode_state(raw)
        return stored_entity(entity_id, stored) if exists(stored) else None

    def get(self, entity_id: str) -> dict[str, Any] | None:
        """The entity, or None; raises :class:`PartitionUnavailable` if its partition is not served here."""
        found = self.lookup(entity_id)
        return None if found is None else found.entity

    def applied_offset(self, partition: int) -> int:
        """The events-topic offset the secondary of ``partition`` holds (-1: not open here)."""
        state = self._open.get(partition)
        return -1 if state is None else state.base

    def shown_offset(self, partition: int) -> int:
        """The newest offset of ``partition`` any HTTP process of the node may have shown (the board's target)."""
        return self._board.target(partition)

    def serving_db(self, partition: int) -> rocksdict.Rdict:
        """The caught-up secondary of ``partition``; raises :class:`PartitionUnavailable` unless served here."""
        return self._fresh(partition, scan=True).db

    def iter_partition(
        self, db: rocksdict.Rdict, prefix: bytes, after: bytes | None = None
    ) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) of one store's entities with ids starting with ``prefix`` (after ``after``)."""
        return iter_entities(db, prefix, after)

    def _served(self, partitions: Sequence[int] | None) -> list[int]:
        if partitions is None:
            if not self.recovered():
                raise PartitionUnavailable(-1)
            return self.active_partitions()
        return list(partitions)

    def iter_prefix(
        self, prefix: str, partitions: Sequence[int] | None = None, after: str | None = None
    ) -> Iterator[StoredEntity]:
        """Existing entities whose id starts with ``prefix`` (after ``after``), in id order."""
        return existing_entities([self.serving_db(p) for p in self._served(partitions)], prefix, after)

    def count_namespace(self, namespace: str, partitions: Sequence[int] | None = None) -> int:
        """Existing entities ``namespace/...`` over ``partitions`` (default: served here)."""
        total = 0
        for partition in self._served(partitions):
            db = self.serving_db(partition)
            stats = read_stats(db.get(STATS_KEY))
            if stats is None or stats.namespaces_counted:
                raw = db.get(NAMESPACE_COUNT_PREFIX + namespace.encode())
                total += 0 if raw is None else int(raw)
            else:  # a store from before the counts were kept, not yet written since: count it
                prefix = f"{namespace}/".encode()
                total += sum(1 for _, value in iter_entities(db, prefix) if exists(decode_state(value)))
        return total

    def count(self) -> int:
        """Existing entities in the served partitions (the reducer's running totals)."""
        return self._status().entities

    async def readiness(self) -> Readiness:
        """The reducer process's readiness, as it last said."""
        return self._status().readiness


class RebuildStatus:
    """The reducer's history rebuilds as :class:`agents.history.store.HistoryStore` asks about them."""

    def __init__(self, status: Callable[[], TableStatus]) -> None:
        self._status = status

    def check_readable(self, partition: int) -> None:
        """Raise :class:`HistoryRebuilding` while ``partition``'s history is being rebuilt."""
        progress = self._status().rebuilding.get(partition)
        if progress is not None:
            raise HistoryRebuilding(partition, *progress)
