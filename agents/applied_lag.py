"""Applied lag: how far each partition this node serves is behind its events topic (``/metrics``).

Every :data:`MEASURE_EVERY_S` the watch asks the broker for the events topic's last stable offsets
(one read_committed ``ListOffsets`` for every served partition, as :mod:`agents.stall_watch` does)
and compares each with the partition's position, the first offset its table does not hold
(:meth:`agents.table.store.EntityStore.positions`). For a partition whose position reached that
end, the lag is 0 records and 0 ms. A partition behind it is probed: the first committed record
from its position is fetched (one small fetch for all such partitions together). Its Kafka record
timestamp (the producer's CreateTime; the Flux publisher sets it at send) gives the lag in
milliseconds, now minus that timestamp; the lag in records is the end minus the position. When no
record lies below the end (only transaction markers, or records of aborted transactions, are
left), the partition is caught up: 0 and 0; such a probe is not repeated while the position and
the end stay the same.

Each round also tells the store's :class:`agents.table.catch_up.CatchUp` where each partition stands,
so that a node is ready only once it caught up with the log end as of its assignment.

The figures are those of the last round: a partition no longer served is gone from
``/metrics`` within a round, and while the broker does not answer the last figures stay.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Protocol

from aiokafka import TopicPartition

from agents.log_reader import log_consumer
from agents.table.catch_up import CatchUp
from flux.background import cancel
from flux.config import Settings
from flux.metrics import AppliedLag, Metrics

log = logging.getLogger(__name__)

MEASURE_EVERY_S = 1.0
UNREAD_TARGET_CHECK_S = 0.1
PROBE_TIMEOUT_S = 1.0  # give up on a probe's answer after this long (the partition keeps its last lag in ms)
PROBE_SLICE_MS = 50
PROBE_FETCH_BYTES = 64 * 1024  # one record is enough: fetch little beyond the first record batch

FirstRecord = tuple[int, int]  # (offset, timestamp in ms) of the first committed record from a position


class ServedPositions(Protocol):
    """What the watch needs of the entity store (:class:`agents.table.store.EntityStore`)."""

    def active_partitions(self) -> list[int]:
        """The partitions this node serves."""
        ...

    async def positions(self, partitions: list[int]) -> dict[int, int]:
        """The first events-topic offset each partition's table does not hold."""
        ...

    @property
    def catch_up(self) -> CatchUp:
        """Whether each served partition caught up with the log end as of its assignment."""
        ...

    @property
    def standbys(self) -> dict[int, int]:
        """The standby partitions kept here, with the changelog records each copy is behind."""
        ...


def lag_of(position: int, end: int, first: FirstRecord | None, now_ms: float) -> AppliedLag:
    """The lag of a partition whose table holds the offsets below ``position``, whose log's last stable
    offset is ``end``, and whose first committed record from ``position`` is ``first`` (None: none).

    A first record at or past ``end`` came after the end was read: caught up as of then. A timestamp
    in the future (clock skew) counts as 0 ms, and so does a record without one.
    """
    if end <= position or first is None or first[0] >= end:
        return AppliedLag(0, 0.0)
    timestamp_ms = first[1]
    waited = float(max(0, round(now_ms - timestamp_ms))) if timestamp_ms > 0 else 0.0
    return AppliedLag(end - position, waited)


class AppliedLagWatch:
    """Measures the served partitions' applied lag into :attr:`Metrics.applied_lag`; see the module docstring."""

    def __init__(self, settings: Settings, store: ServedPositions, metrics: Metrics) -> None:
        self._settings = settings
        self._store = store
        self._metrics = metrics
        self._nothing: dict[int, tuple[int, int]] = {}  # partition -> (position, end) a probe found no record in
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start measuring in the background."""
        self._task = asyncio.create_task(self._run(), name="flux-applied-lag")

    async def stop(self) -> None:
        """Stop measuring."""
        await cancel(self._task)

    async def _run(self) -> None:
        consumer = log_consumer(self._settings, "applied-lag", fetch_bytes=PROBE_FETCH_BYTES)
        marks = log_consumer(self._settings, "catch-up-targets", committed_only=False)
        await consumer.start()
        await marks.start()
        try:
            while True:
                try:
                    await self.aim(marks)
                    await self.measure(consumer)
                except Exception as exc:  # the broker may be away, a rebalance under way: try again next round
                    log.info("applied lag not measured: %r", exc)
                await self._until_next_round()
        finally:
            await consumer.stop()
            await marks.stop()

    async def aim(self, marks: Any) -> None:
        """Read the catch-up targets of the served partitions that have none yet: their high
        watermarks, from ``marks`` (a consumer of every record, committed or not)."""
        unread = self._store.catch_up.unread(self._store.active_partitions())
        if unread:
            topic = self._settings.events_topic
            ends = await marks.end_offsets([TopicPartition(topic, p) for p in unread])
            for tp, end in ends.items():
                self._store.catch_up.aim(tp.partition, end)

    async def _until_next_round(self) -> None:
        """Wait :data:`MEASURE_EVERY_S`, less when a served partition's catch-up target is still to be
        read: a node that just recovered should not wait a whole round to be ready."""
        deadline = time.monotonic() + MEASURE_EVERY_S
        while time.monotonic() < deadline:
            await asyncio.sleep(UNREAD_TARGET_CHECK_S)
            if self._store.catch_up.unread(self._store.active_partitions()):
                return

    async def measure(self, consumer: Any) -> dict[int, AppliedLag]:
        """One round: the lag of every served partition, also set on the metrics; returns it. The standby
        copies' lag (``flux_standby_lag_records``, measured by :mod:`agents.table.standby`) is copied too."""
        self._metrics.standby_lag = dict(self._store.standbys)
        partitions = self._store.active_partitions()
        topic = self._settings.events_topic
        ends = {
            tp.partition: end
            for tp, end in (await consumer.end_offsets([TopicPartition(topic, p) for p in partitions])).items()
        }
        positions = await self._store.positions(partitions)
        behind = {
            p: (positions[p], ends[p])
            for p in partitions
            if ends[p] > positions[p] and self._nothing.get(p) != (positions[p], ends[p])
        }
        firsts = await self._first_records(consumer, behind) if behind else {}
        now_ms = time.time() * 1000
        previous = self._metrics.applied_lag
        lags = {}
        for p in partitions:
            position, end = positions[p], ends[p]
            if p in behind and p not in firsts:  # the probe got no answer in time: the records are known
                lags[p] = AppliedLag(end - position, previous[p].ms if p in previous else 0.0)
                continue
            first = firsts.get(p)
            if p in behind and (first is None or first[0] >= end):
                self._nothing[p] = (position, end)
            lags[p] = lag_of(position, end, first, now_ms)
        self._metrics.lag(lags)
        for p in partitions:
            self._store.catch_up.observe(p, positions[p], ends[p], lags[p].records)
        return lags

    async def _first_records(self, consumer: Any, behind: dict[int, tuple[int, int]]) -> dict[int, FirstRecord | None]:
        """For each partition of ``behind`` (partition -> (position, end)), the first committed record from
        its position, or None once the consumer passed the end without one; a partition without an answer
        within :data:`PROBE_TIMEOUT_S` is left out."""
        topic = self._settings.events_topic
        tps = {TopicPartition(topic, p): span for p, span in behind.items()}
        consumer.assign(list(tps))
        try:
            for tp, (position, _) in tps.items():
                consumer.seek(tp, position)
            found: dict[int, FirstRecord | None] = {}
            deadline = time.monotonic() + PROBE_TIMEOUT_S
            while len(found) < len(tps) and time.monotonic() < deadline:
                waiting = [tp for tp in tps if tp.partition not in found]
                fetched = await consumer.getmany(*waiting, timeout_ms=PROBE_SLICE_MS)
                for tp, records in fetched.items():
                    if records and tp.partition not in found:
                        found[tp.partition] = (records[0].offset, records[0].timestamp)
                for tp in waiting:
                    if tp.partition not in found and await consumer.position(tp) >= tps[tp][1]:
                        found[tp.partition] = None  # read up to the end: only markers or aborted records
            return found
        finally:
            consumer.unsubscribe()  # no prefetching between rounds
