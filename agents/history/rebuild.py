"""Re-deriving a partition's history index from the events topic, the system of record.

The history and the applied-once marks are written with the state but not to the changelog, so a
node that rebuilds a partition's table from the changelog (its data dir was lost, or the
partition moved to it) has the state without the earlier history. Each partition's store keeps
the events-topic offset its history reached (:data:`HISTORY_OFFSET_KEY`, local only); when the
consumer group's committed offset is beyond it, the events between are read again from the topic
and indexed, the first occurrence of an eventId winning as in the live reducer. Until that is
done, history reads of the partition answer 503 with the progress. A rebuild cut short (a stop,
a rebalance) resumes where it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import orjson
import rocksdict
from aiokafka import TopicPartition

from agents.log_reader import committed_offsets, decode_message, log_consumer
from agents.table.store import HISTORY_OFFSET_KEY, EntityStore
from flux.config import Settings
from flux.model.history import index_entry
from flux.model.state import PartitionUnavailable

log = logging.getLogger(__name__)

REBUILD_KEY = b"__flux\0history-rebuild__"  # local only: [next offset, end offset] of a rebuild in progress


class HistoryRebuilding(PartitionUnavailable):
    """History reads of a partition wait for its index to be re-derived from the events topic."""

    def __init__(self, partition: int, position: int, end: int) -> None:
        super().__init__(partition)
        self.args = (
            f"the history of partition {partition} is being rebuilt from the events topic "
            f"(offset {position:,} of {end:,}); retry shortly",
        )


class HistoryRebuilder:
    """Finds served partitions whose history is behind the table and re-derives it from the log."""

    def __init__(self, settings: Settings, store: EntityStore) -> None:
        self._settings = settings
        self._store = store
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self.progress: dict[int, tuple[int, int]] = {}  # partition -> (position, end) while rebuilding

    def check_readable(self, partition: int) -> None:
        """Raise :class:`HistoryRebuilding` while ``partition``'s history is incomplete."""
        if partition in self.progress:
            raise HistoryRebuilding(partition, *self.progress[partition])

    async def check(self, partitions: list[int]) -> None:
        """Start a rebuild for every partition in ``partitions`` whose history lags the group's commits."""
        for task in self._tasks.values():
            task.cancel()
        self._tasks.clear()
        self.progress.clear()
        if not partitions:
            return
        committed = await committed_offsets(self._settings, partitions)
        for partition in partitions:
            db = self._store.db(partition)
            pending = db.get(REBUILD_KEY)
            if pending is not None:  # resume, up to the newest commit (the partition may have moved meanwhile)
                start, end = orjson.loads(pending)
                end = max(end, committed.get(partition, 0))
            else:
                reached = db.get(HISTORY_OFFSET_KEY)
                start, end = (int(reached) if reached is not None else 0), committed.get(partition, 0)
                if start >= end:
                    continue
                db.put(REBUILD_KEY, orjson.dumps([start, end]))
            log.warning("rebuilding the history of partition %d from offset %d to %d", partition, start, end)
            self.progress[partition] = (start, end)
            self._tasks[partition] = asyncio.create_task(self._rebuild(partition, start, end))

    async def stop(self) -> None:
        """Stop every rebuild (each resumes on the next start)."""
        for task in self._tasks.values():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task

    async def _rebuild(self, partition: int, start: int, end: int) -> None:
        settings = self._settings
        topic = TopicPartition(settings.events_topic, partition)
        consumer = log_consumer(settings, "history-rebuild")
        await consumer.start()
        try:
            consumer.assign([topic])
            consumer.seek(topic, start)
            position = start
            while position < end:
                fetched = await consumer.getmany(topic, timeout_ms=1000, max_records=2000)
                messages = [m for m in fetched.get(topic, []) if m.offset < end]
                if not fetched.get(topic):
                    position = max(position, await consumer.position(topic))
                    continue
                db = self._store.db(partition)
                self._index(db, messages)
                position = max(position, fetched[topic][-1].offset + 1)
                db.put(REBUILD_KEY, orjson.dumps([min(position, end), end]))
                self.progress[partition] = (min(position, end), end)
                await asyncio.sleep(0)
            self._store.db(partition).delete(REBUILD_KEY)
            self.progress.pop(partition, None)
            log.warning("history of partition %d rebuilt up to offset %d", partition, end)
        except asyncio.CancelledError:
            raise
        except KeyError:  # Faust closed the partition's store (revoked, or the node stops)
            log.warning(
                "history rebuild of partition %d paused: its store was closed; resumed on the next check", partition
            )
        except Exception:
            log.exception("history rebuild of partition %d stopped; resumed on the next check", partition)
        finally:
            await consumer.stop()

    def _index(self, db: rocksdict.Rdict, messages: list[Any]) -> None:
        """Index the events of ``messages`` that the partition has not indexed yet, in one WriteBatch."""
        batch = rocksdict.WriteBatch(raw_mode=True)
        marks: set[bytes] = set()
        limits = self._settings.event_limits()
        for message in messages:
            decoded = decode_message(message, self._settings.partitions, limits)
            for envelope in decoded.events:
                mark, history_key, stored = index_entry(envelope)
                if mark in marks or db.get(mark) is not None:
                    continue
                marks.add(mark)
                batch.put(history_key, stored)
                batch.put(mark, str(message.offset + 1).encode())
        db.write(batch)
