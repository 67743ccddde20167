"""Noticing a reducer that stopped folding while its partitions have committed records to fold.

Every few seconds, for each partition this node serves, the watch compares the events-topic
offset the table holds the events up to with the partition's last stable offset. A partition
behind it whose position has not moved for :data:`READ_AGAIN_S`, with committed records (not just
a transaction marker) ahead of it, is stalled, unless Faust already handed its records to the
stream while the reducer keeps folding (they wait in the stream's queue behind other
partitions'): the watch logs what
Faust's consumer holds about it (active, paused and buffer-full partitions, flow control, the
fetch position) and has it read again from that position (harmless if it was only slow: what is
read twice is skipped). Reading again never resumes Faust's flow control: that clears the
stream's channel queue, which every partition shares, and so lost records of other partitions
already marked read (a new node folding a log lost ~13 % of its events so, BENCHMARKS.md).
Takeovers still leave some partitions in that state (FAULTS.md, "Soak"), so the first read-again
comes soon. If it still does not move after :data:`STALL_S`, the node
reports itself not ready with the reason; if it still has not moved one more :data:`STALL_S`
later, the watch crashes the worker: the process exits with code 1
(see :class:`api.server._Worker`) and leaves its partitions to the group, for a supervisor to
restart it, rather than hold partitions it does not fold. No acknowledged event is at risk
meanwhile: its offset is not committed.

This module and :mod:`agents.table.store` are the places that touch Faust's internals.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiokafka import TopicPartition

from agents.log_reader import log_consumer
from agents.reducer_agent import WritesPaused
from agents.table.store import EntityStore
from flux.background import cancel
from flux.config import Settings
from flux.metrics import Metrics

log = logging.getLogger(__name__)

CHECK_EVERY_S = 2.0
READ_AGAIN_S = 4.0  # a partition still that long, with records ahead, is read again
STALL_S = 10.0  # still not moving that long after, it is reported; as long again, the worker stops


class Stalled(RuntimeError):
    """Served partitions that do not advance although the log has records for them."""


class StallWatch:
    """Watches the served partitions' progress; see the module docstring."""

    def __init__(
        self, app: Any, settings: Settings, store: EntityStore, metrics: Metrics, paused: WritesPaused
    ) -> None:
        self._app = app
        self._paused = paused  # held while a replay switches: the reducer waits on purpose
        self._settings = settings
        self._store = store
        self._metrics = metrics
        self._since: dict[int, tuple[int, float]] = {}  # partition -> (position, when it was first seen)
        self._nudged: dict[int, float] = {}  # partition -> when it was read again
        self._folded = -1  # events the served partitions had folded at the last round
        self._rebalances = -1
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start watching in the background."""
        self._task = asyncio.create_task(self._run(), name="flux-stall-watch")

    async def stop(self) -> None:
        """Stop watching."""
        await cancel(self._task)

    async def _run(self) -> None:
        consumer = log_consumer(self._settings, "stall-watch")
        await consumer.start()
        try:
            while True:
                await asyncio.sleep(CHECK_EVERY_S)
                try:
                    await self.check(consumer)
                except Exception as exc:  # the broker may be away; the next round tries again
                    log.info("progress check skipped: %r", exc)
        finally:
            await consumer.stop()

    async def check(self, consumer: Any) -> None:
        """One round: find partitions behind the log that do not move, and act on them."""
        if not self._store.recovered() or self._paused.locked() or self._rebalances != self._store.rebalances:
            self._rebalances = self._store.rebalances
            self._since.clear()
            self._nudged.clear()
            self._store.stalled_partitions = []
            return
        partitions = self._store.active_partitions()
        topic = self._settings.events_topic
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in partitions])
        positions = await self._store.positions(partitions)
        now = time.monotonic()
        folded = sum(self._store.partition_events(p) for p in partitions)
        folding, self._folded = folded != self._folded, folded
        stalled = []
        for p in partitions:
            position = positions[p]
            seen = self._since.get(p)
            if seen is None or seen[0] != position or ends[TopicPartition(topic, p)] <= position:
                self._since[p] = (position, now)
                self._nudged.pop(p, None)
                continue
            if now - seen[1] < READ_AGAIN_S:
                continue
            if folding and self._queued(p, position):
                # Its records wait in the stream's queue behind other partitions' while the reducer
                # folds those (a new node folding a long log): slow, not stalled.
                self._since[p] = (position, now)
                continue
            if not await self._has_records(consumer, p, position, ends[TopicPartition(topic, p)]):
                self._since[p] = (position, now)  # only transaction markers lie ahead: caught up
                continue
            nudged = self._nudged.get(p)
            if nudged is None:
                await self._nudge(p, position, ends[TopicPartition(topic, p)], now - seen[1])
                self._nudged[p] = now
            elif now - nudged >= STALL_S:
                stalled.append(p)
        if stalled and stalled != self._store.stalled_partitions:
            log.error("partitions %s still do not advance; this node reports itself not ready", stalled)
        self._store.stalled_partitions = stalled
        given_up = [p for p in stalled if now - self._nudged[p] >= 2 * STALL_S]
        if given_up:
            still = READ_AGAIN_S + 2 * STALL_S
            await self._app.crash(Stalled(f"partitions {given_up} did not advance for {still:.0f} s"))

    def _queued(self, partition: int, position: int) -> bool:
        """Whether Faust's consumer already handed the stream records of ``partition`` from ``position`` on."""
        consumer = self._app.consumer
        topic = self._settings.events_topic
        read = next(
            (offset for tp, offset in consumer._read_offset.items() if tp.topic == topic and tp.partition == partition),
            None,
        )
        return read is not None and read >= position

    async def _has_records(self, consumer: Any, partition: int, position: int, end: int) -> bool:
        """Whether committed records (not just transaction markers) lie between ``position`` and ``end``."""
        tp = TopicPartition(self._settings.events_topic, partition)
        consumer.assign([tp])
        consumer.seek(tp, position)
        fetched = await consumer.getmany(tp, timeout_ms=1000, max_records=1)
        return any(record.offset < end for record in fetched.get(tp, []))

    async def _nudge(self, partition: int, position: int, end: int, still_s: float) -> None:
        """Log what Faust holds about a stalled partition, then read it again from ``position``."""
        consumer = self._app.consumer
        topic = self._settings.events_topic
        tp = next((tp for tp in consumer.assignment() if tp.topic == topic and tp.partition == partition), None)
        fetcher = _fetch_state(consumer, tp)
        log.warning(
            "partition %d has not advanced from offset %d for %.0f s while the log reaches %d "
            "(assigned: %s, active: %s, paused: %s, buffer full: %s, flow active: %s, fetch position: %s); "
            "reading it again from offset %d",
            partition,
            position,
            still_s,
            end,
            tp is not None,
            tp in (consumer._active_partitions or set()),
            tp in consumer._paused_partitions,
            tp in consumer._buffered_partitions,
            consumer.flow_active,
            fetcher,
            position,
        )
        self._metrics.stalled(1)
        if tp is None:
            return
        if not self._app.flow_control.is_active():
            # Resuming Faust's flow control would clear the stream's channel queue, shared by every
            # partition: records of other partitions, already marked read, would never be folded while
            # their later records are (lost). A suspended flow control is Faust's own rebalance state;
            # if it stays so, the watch reports the partition and then stops the worker, and a restart
            # reads from the committed offsets, losing nothing.
            log.warning("partition %d: Faust's flow control is suspended; not reading it again", partition)
            return
        await consumer.seek(tp, position)  # the first offset the table does not hold yet, before resuming
        consumer._buffered_partitions.discard(tp)
        consumer.resume_partitions([tp])
        consumer.resume_flow()  # only the consumer's own flag: clears no queue


def _fetch_state(consumer: Any, tp: Any) -> str:
    """The aiokafka consumer's fetch position of ``tp``, for the log (best effort)."""
    try:
        state = consumer._thread._ensure_consumer()._subscription.subscription.assignment.state_value(tp)
        return f"{state.position} (paused: {state.paused})"
    except Exception as exc:
        return f"unknown ({type(exc).__name__})"
