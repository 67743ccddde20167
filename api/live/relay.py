"""The API process's reader of the change feed: every change the reducers commit, from Kafka.

Each API process reads every partition of the changes topic (no consumer group: it is a
broadcast, so several Flux processes each relay every update to their own subscribers), from
the end, and hands each record to its listeners: the WebSocket hub, the read-your-writes
offsets, the feed totals behind ``metrics_update``. On start it reads the last record of each
partition once, for the running totals.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, TopicPartition

from api.live.applied import AppliedOffsets
from flux.config import Settings
from flux.kafka.security import client_options
from flux.metrics import RateMeter, RecentSources
from flux.model.changes import ChangeRecord, InvalidChangeRecord, decode_record

log = logging.getLogger(__name__)

Listener = Callable[[ChangeRecord], None]


class FeedTotals:
    """Cluster-wide totals as the change feed reports them: entities, events, publishers, rate."""

    def __init__(self) -> None:
        self._events: dict[int, int] = {}
        self._entities: dict[int, int] = {}
        self._sources = RecentSources()
        self._rate = RateMeter()

    def update(self, record: ChangeRecord) -> None:
        """Take the running totals and sources of one record."""
        self._events[record.partition] = record.events
        self._entities[record.partition] = record.entities
        self._sources.saw(record.sources)

    def partitions_known(self) -> int:
        """How many partitions have reported totals."""
        return len(self._entities)

    def entities(self) -> int:
        """Existing entities over the partitions that reported."""
        return sum(self._entities.values())

    def events(self) -> int:
        """Events folded over the partitions that reported."""
        return sum(self._events.values())

    def events_rate(self) -> float:
        """Events folded per second over the last few seconds (call periodically)."""
        return self._rate.rate(self.events())

    def active_publishers(self) -> int:
        """Distinct event sources folded in the last minute."""
        return self._sources.active()


class ChangeRelay:
    """Consumes the changes topic and feeds each record to its listeners, in partition order."""

    def __init__(self, settings: Settings, applied: AppliedOffsets, totals: FeedTotals) -> None:
        self._settings = settings
        self._applied = applied
        self._totals = totals
        self._listeners: list[Listener] = []
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._next: dict[TopicPartition, int] = {}  # partition -> the offset after the last record relayed

    def listen(self, listener: Listener) -> None:
        """Call ``listener`` with every record from now on."""
        self._listeners.append(listener)

    async def start(self) -> None:
        """Assign every partition, read the last record of each for the totals, then follow the end."""
        topic = self._settings.changes_topic
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._settings.kafka_bootstrap_servers,
            client_id=f"{self._settings.app_id}-relay",
            group_id=None,
            enable_auto_commit=False,
            fetch_max_wait_ms=100,
            max_partition_fetch_bytes=8 * 1024 * 1024,
            fetch_max_bytes=64 * 1024 * 1024,
            **client_options(self._settings),
        )
        await consumer.start()
        self._consumer = consumer
        partitions = [TopicPartition(topic, p) for p in range(self._settings.partitions)]
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        starts = await consumer.beginning_offsets(partitions)
        for tp in partitions:
            consumer.seek(tp, max(starts[tp], ends[tp] - 1))
            self._next[tp] = ends[tp]
        self._task = asyncio.create_task(self._run(), name="flux-change-relay")

    def lag(self) -> int:
        """Change-feed records not relayed yet: the high watermarks (as of the last fetch) minus the
        offsets after the last records relayed, over all partitions (``flux_relay_lag_records``)."""
        consumer = self._consumer
        if consumer is None:
            return 0
        behind = 0
        for tp, after in self._next.items():
            highwater = consumer.highwater(tp)
            if highwater is not None:
                behind += max(0, highwater - after)
        return behind

    async def stop(self) -> None:
        """Stop reading."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._consumer is not None:
            with contextlib.suppress(Exception):
                await self._consumer.stop()

    async def _run(self) -> None:
        assert self._consumer is not None
        while True:
            try:
                fetched = await self._consumer.getmany(timeout_ms=1000, max_records=5000)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the broker is away: keep trying, subscribers just wait
                log.warning("change feed fetch failed: %r", exc)
                await asyncio.sleep(1)
                continue
            for tp, messages in fetched.items():
                for message in messages:
                    self._deliver(message.value)
                    self._next[tp] = message.offset + 1
                    await asyncio.sleep(0)  # let WebSocket writers drain between records

    def _deliver(self, value: bytes | None) -> None:
        if value is None:
            return
        try:
            record = decode_record(value)
        except InvalidChangeRecord as exc:
            log.warning("%s", exc)
            return
        self._applied.advance(record.partition, record.applied)
        self._totals.update(record)
        for listener in self._listeners:
            try:
                listener(record)
            except Exception:  # one listener's bug must not stop the feed for the others
                log.exception("change feed listener failed")
