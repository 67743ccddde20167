"""Publishing events to the events topic, acknowledged by the broker before we answer.

Single events go through an idempotent producer (acks=all), one record each, keyed by entity id:
the record format any Kafka producer can use too. A batch is packed: its events are grouped by
partition into records holding a JSON array each, so that the reducer pays Faust's per-record
cost once per few hundred events, and all records of a batch are written in one Kafka
transaction (the agents read ``read_committed``), so no reader sees half a batch. Concurrent
batches share a transaction (group commit): one commit round-trip serves them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from dataclasses import dataclass, field

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from flux.config import Settings
from flux.kafka.security import client_options
from flux.model.events import Envelope, encode, encode_many, entity_of
from flux.model.partitioning import partition_for

log = logging.getLogger(__name__)

PACKED_RECORD_MAX_BYTES = 512 * 1024
PACKED_RECORD_MAX_EVENTS = 2000
PRODUCER_MAX_REQUEST_BYTES = 16 * 1024 * 1024
GROUP_COMMIT_MAX_BATCHES = 64


class PublishFailed(RuntimeError):
    """The broker did not acknowledge the events; nothing can be promised about them."""


def pack_by_partition(envelopes: list[Envelope], partitions: int) -> list[tuple[int, bytes]]:
    """Group envelopes by partition into JSON-array records of bounded size, keeping their order."""
    by_partition: dict[int, list[Envelope]] = defaultdict(list)
    for envelope in envelopes:
        by_partition[partition_for(entity_of(envelope), partitions)].append(envelope)
    records: list[tuple[int, bytes]] = []
    for partition, group in by_partition.items():
        records.extend((partition, value) for value in _encode_bounded(group))
    return records


def _encode_bounded(group: list[Envelope]) -> list[bytes]:
    """One JSON array for the group, halved until each part fits a packed record."""
    value = encode_many(group)
    if len(group) == 1 or (len(value) <= PACKED_RECORD_MAX_BYTES and len(group) <= PACKED_RECORD_MAX_EVENTS):
        return [value]
    middle = len(group) // 2
    return _encode_bounded(group[:middle]) + _encode_bounded(group[middle:])


Offsets = dict[int, int]
"""Where published events landed: the greatest events-topic offset written, per partition."""


@dataclass
class _PendingBatch:
    records: list[tuple[int, bytes]]
    done: asyncio.Future[Offsets] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class EventPublisher:
    """Writes envelopes to the events topic; every call returns after the broker acknowledged."""

    def __init__(self, settings: Settings, transactional_id: str) -> None:
        self._settings = settings
        self._topic = settings.events_topic
        self._transactional_id = transactional_id
        self._producer: AIOKafkaProducer | None = None
        self._txn_producer: AIOKafkaProducer | None = None
        self._queue: asyncio.Queue[_PendingBatch] = asyncio.Queue()
        self._committer: asyncio.Task[None] | None = None
        self.partitions = settings.partitions

    def _new_producer(self, transactional_id: str | None = None) -> AIOKafkaProducer:
        return AIOKafkaProducer(
            bootstrap_servers=self._settings.kafka_bootstrap_servers,
            client_id=f"{self._settings.app_id}-publisher",
            acks="all",
            enable_idempotence=True,
            transactional_id=transactional_id,
            linger_ms=1,
            max_batch_size=1024 * 1024,
            max_request_size=PRODUCER_MAX_REQUEST_BYTES,
            request_timeout_ms=self._settings.publish_timeout_ms,
            **client_options(self._settings),
        )

    async def start(self) -> None:
        """Connect both producers and learn the events topic's partition count."""
        self._producer = self._new_producer()
        await self._producer.start()
        self._txn_producer = self._new_producer(self._transactional_id)
        await self._txn_producer.start()
        partitions = await self._producer.partitions_for(self._topic)
        if partitions:
            self.partitions = len(partitions)
        self._committer = asyncio.create_task(self._commit_loop(), name="flux-group-commit")

    async def stop(self) -> None:
        """Flush and close; batches still queued fail with :class:`PublishFailed`."""
        if self._committer is not None:
            self._committer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._committer
        while not self._queue.empty():
            pending = self._queue.get_nowait()
            if not pending.done.done():
                pending.done.set_exception(PublishFailed("Flux is shutting down"))
        for producer in (self._producer, self._txn_producer):
            if producer is not None:
                with contextlib.suppress(Exception):
                    await producer.stop()

    async def broker_reachable(self, timeout_s: float = 2.0) -> bool:
        """Whether a metadata request to the cluster succeeds within ``timeout_s``."""
        if self._producer is None:
            return False
        try:
            await asyncio.wait_for(self._producer.client.fetch_all_metadata(), timeout=timeout_s)
        except Exception:
            return False
        return True

    async def publish(self, envelope: Envelope) -> Offsets:
        """Write one event as one record (key = entity id) and wait for acks=all."""
        assert self._producer is not None, "publisher not started"
        try:
            sent = await asyncio.wait_for(
                self._producer.send_and_wait(self._topic, encode(envelope), key=entity_of(envelope).encode()),
                timeout=self._settings.publish_timeout_ms / 1000,
            )
        except (KafkaError, TimeoutError) as exc:
            raise PublishFailed(f"the broker did not acknowledge the event: {exc!r}") from exc
        return {sent.partition: sent.offset}

    async def publish_batch(self, envelopes: list[Envelope]) -> Offsets:
        """Write a batch atomically (one transaction, packed records) and wait for the commit."""
        if not envelopes:
            return {}
        pending = _PendingBatch(pack_by_partition(envelopes, self.partitions))
        await self._queue.put(pending)
        try:
            return await asyncio.wait_for(
                asyncio.shield(pending.done), timeout=self._settings.publish_timeout_ms / 1000
            )
        except TimeoutError as exc:
            raise PublishFailed("the broker did not acknowledge the batch in time") from exc

    async def _commit_loop(self) -> None:
        while True:
            group = [await self._queue.get()]
            while not self._queue.empty() and len(group) < GROUP_COMMIT_MAX_BATCHES:
                group.append(self._queue.get_nowait())
            outcome = await self._commit(group)
            for index, pending in enumerate(group):
                if pending.done.done():
                    continue
                if isinstance(outcome, PublishFailed):
                    pending.done.set_exception(outcome)
                else:
                    pending.done.set_result(outcome[index])

    async def _commit(self, group: list[_PendingBatch]) -> list[Offsets] | PublishFailed:
        producer = self._txn_producer
        assert producer is not None
        try:
            async with producer.transaction():
                sends = [
                    [
                        await producer.send(self._topic, value, partition=partition)
                        for partition, value in pending.records
                    ]
                    for pending in group
                ]
                written = [await asyncio.gather(*futures) for futures in sends]
            outcome: list[Offsets] = []
            for metadata in written:
                offsets: Offsets = {}
                for sent in metadata:
                    offsets[sent.partition] = max(sent.offset, offsets.get(sent.partition, -1))
                outcome.append(offsets)
            return outcome
        except Exception as exc:  # any failure fails the whole group; producers may need renewing
            log.warning("batch transaction failed: %r", exc)
            await self._renew_txn_producer()
            return PublishFailed(f"the broker did not commit the batch: {exc!r}")

    async def _renew_txn_producer(self) -> None:
        old = self._txn_producer
        with contextlib.suppress(Exception):
            if old is not None:
                await old.stop()
        fresh = self._new_producer(self._transactional_id)
        try:
            await fresh.start()
        except Exception as exc:
            log.warning("could not restart the transactional producer yet: %r", exc)
        self._txn_producer = fresh
