"""The entity table's storage, read and written in batches.

Faust owns the table: its RocksDB database per partition, its compacted changelog topic, recovery
from that changelog on start, and partition assignment. Per-key ``table[k] = v`` costs ~250 us
(one changelog send, one RocksDB put and one offset put per key), so writes here go one flush at
a time instead: the entity states a batch changed are sent to the changelog (acknowledged before
the batch's source offsets can be committed), written to the partition's RocksDB in one
``WriteBatch``, and the partition's persisted changelog offset is recorded once. Recovery and
standby replicas read the same changelog records Faust would have written itself.

This module is the only place that touches the Faust store's internals (``_dbs``,
``_db_for_partition``); the HTTP API sees it through :class:`flux.state.StateReader`.
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Iterator
from typing import Any

import orjson
import rocksdict

from flux.partitioning import partition_for
from flux.reducer import State, exists, to_entity
from flux.state import PartitionUnavailable, Readiness

OFFSET_KEY = b"__faust\0offset__"


def decode_state(raw: bytes) -> State:
    """A stored entity state."""
    return orjson.loads(raw)  # type: ignore[no-any-return]


class EntityStore:
    """Reads and batched writes of the entity table; implements :class:`flux.state.StateReader`."""

    def __init__(self, app: Any, table: Any, partitions: int, broker_check: Any = None) -> None:
        self._app = app
        self._table = table
        self._partitions = partitions
        self._changelog = table.changelog_topic.get_topic_name()
        self._broker_check = broker_check
        self._counts: dict[int, int] = {}

    # -- partitions -------------------------------------------------------------------------
    def active_partitions(self) -> list[int]:
        """Partitions whose table this node serves (active, not standby), recovery included."""
        actives = self._app.assignor.assigned_actives()
        return sorted(tp.partition for tp in actives if tp.topic == self._changelog)

    def recovered(self) -> bool:
        """Whether Faust finished replaying the changelog into the local stores."""
        recovery = self._app.tables.recovery
        return bool(recovery.completed.is_set() and not recovery.in_recovery and not self._app.rebalancing)

    def _db(self, partition: int) -> rocksdict.Rdict:
        return self._table.data._db_for_partition(partition)

    def _serving_db(self, partition: int) -> rocksdict.Rdict:
        if not self.recovered() or partition not in self.active_partitions():
            raise PartitionUnavailable(partition)
        return self._db(partition)

    # -- writes (called by the reducer agent) ---------------------------------------------
    def load(self, partition: int, key: bytes) -> bytes | None:
        """The stored state bytes of ``key`` on ``partition`` (for the reducer)."""
        return self._db(partition).get(key)  # type: ignore[no-any-return]

    async def write(self, partition: int, states: dict[bytes, tuple[bytes, int]]) -> None:
        """Persist changed states ``{key: (value, existence delta)}`` of one partition.

        Changelog first, acknowledged (acks=all), then one RocksDB WriteBatch and the persisted
        changelog offset, so that a crash at any point leaves a store that recovery completes.
        """
        if not states:
            return
        producer = self._app.producer
        sends = [
            await producer.send(self._changelog, key, value, partition, None, None)
            for key, (value, _) in states.items()
        ]
        metadata = await asyncio.gather(*sends)
        batch = rocksdict.WriteBatch(raw_mode=True)
        delta = 0
        for key, (value, change) in states.items():
            batch.put(key, value)
            delta += change
        batch.put(OFFSET_KEY, str(max(m.offset for m in metadata)).encode())
        self._db(partition).write(batch)
        if partition in self._counts:
            self._counts[partition] += delta

    # -- reads (the StateReader interface) ----------------------------------------------
    def get(self, entity_id: str) -> dict[str, Any] | None:
        """The entity, or None; raises :class:`PartitionUnavailable` if its partition is not served here."""
        raw = self._serving_db(partition_for(entity_id, self._partitions)).get(entity_id.encode())
        return None if raw is None else to_entity(entity_id, decode_state(raw))

    def _iter_partition(self, db: rocksdict.Rdict, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        it = db.iter()
        it.seek(prefix)
        while it.valid():
            key = it.key()
            if not key.startswith(prefix):
                break
            if key != OFFSET_KEY:
                yield key, it.value()
            it.next()

    def scan(self, prefix: str, offset: int, limit: int) -> tuple[list[dict[str, Any]], bool]:
        """Entities with ids starting with ``prefix`` in id order, merged over served partitions."""
        if not self.recovered():
            raise PartitionUnavailable(-1)
        encoded = prefix.encode()
        streams = [self._iter_partition(self._db(p), encoded) for p in self.active_partitions()]
        page: list[dict[str, Any]] = []
        skipped = 0
        for key, raw in heapq.merge(*streams):
            state = decode_state(raw)
            if not exists(state):
                continue
            if skipped < offset:
                skipped += 1
                continue
            if len(page) == limit:
                return page, True
            entity = to_entity(key.decode(), state)
            assert entity is not None
            page.append(entity)
        return page, False

    def count(self) -> int:
        """Existing entities in the served partitions (counted once per partition, then kept up to date)."""
        if not self.recovered():
            return sum(self._counts.values())
        total = 0
        for partition in self.active_partitions():
            if partition not in self._counts:
                db = self._db(partition)
                self._counts[partition] = sum(
                    1 for _, raw in self._iter_partition(db, b"") if exists(decode_state(raw))
                )
            total += self._counts[partition]
        return total

    def forget_counts(self) -> None:
        """Drop cached counts (after a rebalance moved partitions)."""
        self._counts.clear()

    async def readiness(self) -> Readiness:
        """Ready when the broker answers and recovery is done."""
        broker = True
        if self._broker_check is not None:
            broker = await self._broker_check()
        recovered = self.recovered()
        partitions = self.active_partitions() if recovered else []
        detail = "" if recovered else "table recovery or rebalance in progress"
        if not broker:
            detail = "Kafka broker not reachable"
        return Readiness(broker and recovered, broker, recovered, partitions, detail)
