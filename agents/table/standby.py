"""Standby replicas: warm copies of other nodes' table partitions, kept by tailing their changelogs.

With ``FLUX_STANDBY_REPLICAS=k``, each partition's table is copied on the ``k`` nodes that follow
its owner in the group (nodes ordered by URL, wrapping around). A node tails the changelog
partitions it is a standby for with a plain aiokafka consumer and writes each fetch into the
partition's local RocksDB store in one ``WriteBatch``, with the changelog offset it reached
(``__faust\\0offset__``, the offset Faust's recovery and :mod:`agents.table.restore` resume
from). When the partition's owner dies and the group moves the partition here, only the last
records remain to restore.

Faust has standby replicas of its own, but they apply the changelog through its per-record
machinery: on the 2-core machine Flux is built on they cost half of a cluster's fold rate (two
nodes folded 7,700 events/s with them and 16,600 without) and still lagged ~100k records behind
after a burst. Faust's are therefore off (``table_standby_replicas=0``) and these take their place.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiokafka import TopicPartition

from agents.log_reader import log_consumer
from agents.table.restore import persisted_offset, write_changelog
from agents.table.store import EntityStore
from flux.background import cancel
from flux.config import Settings

log = logging.getLogger(__name__)


def standby_partitions(owners: dict[str, list[int]], node_url: str, replicas: int) -> list[int]:
    """The partitions ``node_url`` keeps a copy of: those whose owner it follows within ``replicas``
    places in the URL-ordered ring of nodes (``owners``: URL to the partitions it serves)."""
    ring = sorted(set(owners) | {node_url})
    if replicas <= 0 or len(ring) < 2:
        return []
    mine = ring.index(node_url)
    found = []
    for owner, partitions in owners.items():
        distance = (mine - ring.index(owner)) % len(ring)
        if 0 < distance <= replicas:
            found.extend(partitions)
    return sorted(found)


class StandbyTailer:
    """Tails the changelog partitions this node is a standby for (see the module docstring)."""

    def __init__(self, settings: Settings, store: EntityStore, changelog: str) -> None:
        self._settings = settings
        self._store = store
        self._changelog = changelog
        self._wanted: list[int] = []
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        self.partitions: list[int] = []  # tailed now

    def on_rebalance(self) -> None:
        """Work out this node's standby partitions again from the group's new assignment."""
        owners = self._store.owners()
        local = set(self._store.active_partitions())
        wanted = standby_partitions(owners, self._settings.node_url(), self._settings.standby_replicas)
        self._wanted = [p for p in wanted if p not in local]
        self._store.standbys = {p: behind for p, behind in self._store.standbys.items() if p in self._wanted}
        self._changed.set()

    async def start(self) -> None:
        """Start tailing (on the running loop)."""
        if self._settings.standby_replicas > 0:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="flux-standby")

    async def stop(self) -> None:
        """Stop tailing."""
        await cancel(self._task)

    async def _run(self) -> None:
        while True:
            try:
                await self._tail()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("standby tailing failed; starting again in 2 s")
                await asyncio.sleep(2)

    async def _tail(self) -> None:
        consumer = log_consumer(self._settings, "standby")
        await consumer.start()
        try:
            while True:
                self._changed.clear()
                self.partitions = list(self._wanted)
                tps = [TopicPartition(self._changelog, p) for p in self.partitions]
                consumer.assign(tps)
                for tp in tps:
                    consumer.seek(tp, persisted_offset(self._store.db(tp.partition)) + 1)
                while not self._changed.is_set():
                    if not tps:
                        await self._changed.wait()
                        break
                    fetched = await consumer.getmany(timeout_ms=500, max_records=20_000)
                    for tp, messages in fetched.items():
                        self._apply(tp.partition, messages)
                    for tp in tps:  # how far behind each copy is, as of the last fetch
                        highwater = consumer.highwater(tp)
                        if highwater is not None:
                            self._store.standbys[tp.partition] = max(0, highwater - await consumer.position(tp))
        finally:
            await consumer.stop()

    def _apply(self, partition: int, messages: list[Any]) -> None:
        """Write one fetch of ``partition``'s changelog into its store (unless it is served here now)."""
        if partition in self._store.active_partitions():
            return  # the group made this node its owner: its writes and restore take over
        write_changelog(self._store.db(partition), messages)
