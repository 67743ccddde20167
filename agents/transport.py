"""A Faust Kafka transport whose worker consumer reads ``read_committed`` and guards its commits.

The batch endpoint writes each batch in one Kafka transaction. Faust reads committed records
only under ``processing_guarantee="exactly_once"`` (which swaps in per-partition transactional
producers we do not want), so this transport sets the isolation level on the consumer it
builds, before the consumer starts. Without it the reducer would see half-written batches and,
worse, records of aborted transactions whose publisher was told they failed.

Before committing source offsets Faust flushes its producer, but aiokafka's ``flush()`` returns
normally when a send failed: the commit would pass records whose changelog writes were lost. The
consumer therefore asks the app's ``commit_guard`` (the entity store's
:meth:`agents.table.store.EntityStore.changelog_written`) before every commit, and commits nothing
when a changelog write failed (the store has then already stopped the worker).

Faust drops records it fetched while their partitions were not active yet (during recovery, say)
and relies on seeking back to the committed offsets before the stream starts. aiokafka's
``seek_to_committed`` does not move a partition without a committed offset (or with offset 0),
so after a crash before the group's first commit, or once the group's offsets expired, those
records were never delivered: the reducer sat behind the log until the stall watch noticed. The
consumer thread therefore seeks such a stream partition to the start of its log, which is where
the group's reset policy (``earliest``) says a group without offsets reads from.

Faust "pauses" a partition only in its own bookkeeping: aiokafka still fetches every assigned
partition and keeps what it fetched for the partitions Faust no longer asks for. The worker's
consumer is assigned the table's changelog partitions, which Faust reads only during recovery; after
it, every changelog write of the reducer came back to its own consumer, and aiokafka sends no new
fetch to a broker while records it fetched from it wait unconsumed, for up to 100 ms
(``prefetch_backoff``). An event published meanwhile waited for that: the publish -> WebSocket
tail (p99 40-90 ms idle against a p50 of 12 ms). The consumer therefore pauses changelog
partitions in aiokafka too while Faust does not read them, and resumes them as soon as Faust does.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from faust.transport.drivers import aiokafka as faust_aiokafka

log = logging.getLogger(__name__)


class ReadCommittedConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """Faust's aiokafka consumer thread, reading only committed records, whose seek back to the
    committed offsets also rewinds the partitions that have none (see the module docstring)."""

    def resume_changelogs(self, tps: Any) -> None:
        """Resume fetching the changelog partitions among ``tps`` (Faust resumed them); any thread."""
        changelogs = self.app.tables.changelog_topics
        wanted = [tp for tp in tps if tp.topic in changelogs]
        if wanted and self._consumer is not None:
            self.thread_loop.call_soon_threadsafe(self._resume_assigned, wanted)

    def _resume_assigned(self, tps: list[Any]) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        assigned = consumer.assignment()
        consumer.resume(*[tp for tp in tps if tp in assigned])

    def _mirror_changelog_pauses(self, consumer: Any, active_partitions: Any) -> None:
        """Pause in aiokafka the changelog partitions Faust does not read now, dropping what was
        fetched of them (their position stays: nothing is skipped); resume those Faust reads."""
        changelogs = self.app.tables.changelog_topics
        paused = consumer.paused()
        for tp in consumer.assignment():
            if tp.topic not in changelogs:
                continue
            if tp in active_partitions:
                if tp in paused:
                    consumer.resume(tp)
            elif tp not in paused:
                state = consumer._subscription.subscription.assignment.state_value(tp)
                if tp in consumer._fetcher._records and state.has_valid_position:
                    consumer.seek(tp, state.position)  # drops the fetched records, which hold up every fetch
                consumer.pause(tp)

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._isolation_level = "read_committed"  # read by AIOKafkaConsumer.start()
        return consumer

    async def _fetch_records(
        self, consumer: Any, active_partitions: Any, timeout: float | None = None, max_records: int | None = None
    ) -> Any:
        if active_partitions is not None:
            self._mirror_changelog_pauses(consumer, active_partitions)
        fetched = await super()._fetch_records(consumer, active_partitions, timeout=timeout, max_records=max_records)
        if active_partitions is None or not fetched:
            return fetched
        kept = self.consumer._buffered_partitions
        dropped = [tp for tp in fetched if tp not in active_partitions and tp not in kept]
        if not dropped:
            return fetched  # the usual case: no copy on the fetch path
        records = dict(fetched)
        for tp in dropped:
            first = records.pop(tp)[0].offset
            if tp in consumer.assignment():
                consumer.seek(tp, first)  # fetched again once the partition is active
                log.info("partition %s was not active when its records came: reading them again from %d", tp, first)
        return records

    async def seek_to_committed(self) -> Mapping[Any, int]:
        """Seek the assigned partitions to their committed offsets; stream partitions without one
        to the start of their log."""
        committed: Mapping[Any, int] = await self.call_thread(self._seek_to_committed_or_start)
        return committed

    async def _seek_to_committed_or_start(self) -> Mapping[Any, int]:
        consumer = self._ensure_consumer()
        committed: Mapping[Any, int] = await consumer.seek_to_committed()
        changelogs = self.app.tables.changelog_topics  # restored by Faust's recovery, which seeks them itself
        rewind = [tp for tp, offset in committed.items() if not offset and tp.topic not in changelogs]
        if rewind:
            await consumer.seek_to_beginning(*rewind)
        return committed


class ReadCommittedConsumer(faust_aiokafka.Consumer):
    """Faust's aiokafka consumer using :class:`ReadCommittedConsumerThread`, whose commits wait for
    the changelog (see the module docstring)."""

    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return ReadCommittedConsumerThread(self, loop=self.loop, beacon=self.beacon)

    def resume_partitions(self, tps: Any) -> None:
        """Faust's resume, and aiokafka's for the changelog partitions among ``tps`` (see the module
        docstring)."""
        tps = list(tps)
        super().resume_partitions(tps)
        thread = getattr(self, "_thread", None)
        if isinstance(thread, ReadCommittedConsumerThread):
            thread.resume_changelogs(tps)

    async def _commit(self, offsets: Mapping[Any, int]) -> bool:
        guard = getattr(self.app, "commit_guard", None)
        if guard is not None and not await guard():
            log.error("not committing source offsets %s: a changelog write was not acknowledged", dict(offsets))
            return False
        committed: bool = await super()._commit(offsets)
        return committed


class ReadCommittedTransport(faust_aiokafka.Transport):
    """Faust's aiokafka transport with a read-committed consumer."""

    Consumer = ReadCommittedConsumer
