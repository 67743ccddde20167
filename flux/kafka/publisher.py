"""Publishing events to the events topic, acknowledged by the broker before we answer.

Single events go through an idempotent producer (acks=all) and are coalesced: while one send is
in flight, the events that arrive meanwhile (from any number of requests) wait, then go out
together, packed by partition into one record each (a JSON array; a partition's lone event is a
record of its own, keyed by entity id: the record format any Kafka producer can use too). Each
request is answered once the record holding its event is acknowledged. With no load nothing
waits; under load the reducer pays Faust's per-record cost once per many events, not per event.

A batch is packed the same way, and all records of a batch are written in one Kafka transaction
(the agents read ``read_committed``), so no reader sees half a batch. Concurrent batches share a
transaction (group commit): one commit round-trip serves them all.

With ``FLUX_OTEL_ENABLED`` each call is a ``flux.publish`` span, and every record names the spans
of the events it holds on a header (:mod:`flux.tracing`); off, none of that runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from aiokafka import AIOKafkaProducer
from aiokafka.structs import RecordMetadata

from flux.config import Settings
from flux.kafka.security import client_options
from flux.model.events import Envelope, encode, encode_many, entity_of
from flux.model.partitioning import partition_for
from flux.tracing import Tracing, tracing_for

log = logging.getLogger(__name__)
T = TypeVar("T")

PACKED_RECORD_MAX_BYTES = 512 * 1024
PACKED_RECORD_MAX_EVENTS = 2000
PRODUCER_MAX_REQUEST_BYTES = 16 * 1024 * 1024
GROUP_COMMIT_MAX_BATCHES = 64
COALESCE_MAX_EVENTS = 5000  # single events sent together at most (the rest go out in the next round)


class PublishFailed(RuntimeError):
    """The broker did not acknowledge the events; nothing can be promised about them."""


def _by_partition(items: list[T], envelope_of: Callable[[T], Envelope], partitions: int) -> dict[int, list[T]]:
    """``items`` grouped by the partition of their envelope's entity, in order."""
    by_partition: dict[int, list[T]] = defaultdict(list)
    for item in items:
        by_partition[partition_for(entity_of(envelope_of(item)), partitions)].append(item)
    return by_partition


def _bounded(group: list[T], envelope_of: Callable[[T], Envelope]) -> list[tuple[bytes, list[T]]]:
    """One JSON array for the group, halved until each part fits a packed record; with its items."""
    value = encode_many([envelope_of(item) for item in group])
    if len(group) == 1 or (len(value) <= PACKED_RECORD_MAX_BYTES and len(group) <= PACKED_RECORD_MAX_EVENTS):
        return [(value, group)]
    middle = len(group) // 2
    return _bounded(group[:middle], envelope_of) + _bounded(group[middle:], envelope_of)


def _itself(envelope: Envelope) -> Envelope:
    return envelope


def pack_by_partition(envelopes: list[Envelope], partitions: int) -> list[tuple[int, bytes]]:
    """Group envelopes by partition into JSON-array records of bounded size, keeping their order."""
    return [
        (partition, value)
        for partition, group in _by_partition(envelopes, _itself, partitions).items()
        for value, _ in _bounded(group, _itself)
    ]


Offsets = dict[int, int]
"""Where published events landed: the greatest events-topic offset written, per partition."""


@dataclass
class _PendingEvent:
    envelope: Envelope
    trace: str | None = None  # the traceparent of its flux.publish span (with tracing on)
    done: asyncio.Future[Offsets] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


def _envelope_of(event: _PendingEvent) -> Envelope:
    return event.envelope


def pack_pending(
    pending: list[_PendingEvent], partitions: int
) -> list[tuple[int, bytes, bytes | None, list[_PendingEvent]]]:
    """Single events grouped by partition into records: (partition, value, key, the events in it).

    A partition's lone event is encoded alone and keyed by its entity id, as one event per record;
    several are packed into bounded JSON arrays, in arrival order.
    """
    records: list[tuple[int, bytes, bytes | None, list[_PendingEvent]]] = []
    for partition, group in _by_partition(pending, _envelope_of, partitions).items():
        if len(group) == 1:
            envelope = group[0].envelope
            records.append((partition, encode(envelope), entity_of(envelope).encode(), group))
        else:
            records.extend((partition, value, None, events) for value, events in _bounded(group, _envelope_of))
    return records


def _settle(events: list[_PendingEvent], outcome: Offsets | PublishFailed) -> None:
    """Answer each waiting event with ``outcome`` (a failure is raised to its caller)."""
    for event in events:
        if event.done.done():
            continue
        if isinstance(outcome, PublishFailed):
            event.done.set_exception(outcome)
        else:
            event.done.set_result(outcome)


@dataclass
class _PendingBatch:
    records: list[tuple[int, bytes]]
    headers: list[tuple[str, bytes]] | None = None  # its flux.publish span's (with tracing on)
    done: asyncio.Future[Offsets] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class EventPublisher:
    """Writes envelopes to the events topic; every call returns after the broker acknowledged."""

    def __init__(self, settings: Settings, transactional_id: str, tracing: Tracing | None = None) -> None:
        self._settings = settings
        self._tracing = tracing if tracing is not None else tracing_for(settings)
        self._topic = settings.events_topic
        self._transactional_id = transactional_id
        self._producer: AIOKafkaProducer | None = None
        self._txn_producer: AIOKafkaProducer | None = None
        self._queue: asyncio.Queue[_PendingBatch] = asyncio.Queue()
        self._committer: asyncio.Task[None] | None = None
        self._singles: list[_PendingEvent] = []
        self._singles_waiting = asyncio.Event()
        self._sender: asyncio.Task[None] | None = None
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
        self._sender = asyncio.create_task(self._send_loop(), name="flux-coalesce-singles")

    async def stop(self) -> None:
        """Flush and close; batches still queued fail with :class:`PublishFailed`."""
        for task in (self._committer, self._sender):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for single in self._singles:
            if not single.done.done():
                single.done.set_exception(PublishFailed("Flux is shutting down"))
        self._singles = []
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
        """Write one event (coalesced with concurrent ones, see the module docstring) and wait for acks=all."""
        assert self._producer is not None, "publisher not started"
        if self._tracing is not None:
            return await self._publish_traced(envelope, self._tracing)
        pending = _PendingEvent(envelope)
        self._singles.append(pending)
        self._singles_waiting.set()
        return await self._acknowledged(pending.done, "event")

    async def _publish_traced(self, envelope: Envelope, tracing: Tracing) -> Offsets:
        """:meth:`publish` in a ``flux.publish`` span, whose traceparent goes with the event."""
        with tracing.publishing([envelope], self._topic) as span:
            pending = _PendingEvent(envelope, span.traceparent)
            self._singles.append(pending)
            self._singles_waiting.set()
            return span.landed(await self._acknowledged(pending.done, "event"))

    async def _send_loop(self) -> None:
        while True:
            await self._singles_waiting.wait()
            group, self._singles = self._singles[:COALESCE_MAX_EVENTS], self._singles[COALESCE_MAX_EVENTS:]
            if not self._singles:
                self._singles_waiting.clear()
            try:
                await self._send_singles(group)
            except asyncio.CancelledError:
                _settle(group, PublishFailed("Flux is shutting down"))
                raise

    async def _send_singles(self, group: list[_PendingEvent]) -> None:
        """Send ``group`` as packed records and settle each event with its record's fate."""
        producer = self._producer
        assert producer is not None
        tracing = self._tracing
        waiting: list[tuple[asyncio.Future[RecordMetadata], list[_PendingEvent]]] = []
        for partition, value, key, events in pack_pending(group, self.partitions):
            try:
                if tracing is None:
                    sent = await producer.send(self._topic, value, key=key, partition=partition)
                else:  # the record names the publish spans of its events
                    headers = tracing.headers(event.trace for event in events)
                    sent = await producer.send(self._topic, value, key=key, partition=partition, headers=headers)
                waiting.append((sent, events))
            except Exception as exc:  # e.g. the record is too large, or the producer is closing
                _settle(events, PublishFailed(f"the broker did not acknowledge the event: {exc!r}"))
        for future, events in waiting:
            try:
                metadata = await future
            except Exception as exc:
                _settle(events, PublishFailed(f"the broker did not acknowledge the event: {exc!r}"))
            else:
                _settle(events, {metadata.partition: metadata.offset})

    async def publish_batch(self, envelopes: list[Envelope]) -> Offsets:
        """Write a batch atomically (one transaction, packed records) and wait for the commit."""
        if not envelopes:
            return {}
        if self._tracing is not None:
            return await self._publish_batch_traced(envelopes, self._tracing)
        pending = _PendingBatch(pack_by_partition(envelopes, self.partitions))
        await self._queue.put(pending)
        return await self._acknowledged(pending.done, "batch")

    async def _publish_batch_traced(self, envelopes: list[Envelope], tracing: Tracing) -> Offsets:
        """:meth:`publish_batch` in a ``flux.publish`` span, named on each of the batch's records."""
        with tracing.publishing(envelopes, self._topic) as span:
            pending = _PendingBatch(pack_by_partition(envelopes, self.partitions), tracing.headers([span.traceparent]))
            await self._queue.put(pending)
            return span.landed(await self._acknowledged(pending.done, "batch"))

    async def _acknowledged(self, done: asyncio.Future[Offsets], what: str) -> Offsets:
        """``done``'s offsets, or :class:`PublishFailed` if they do not come within FLUX_PUBLISH_TIMEOUT_MS."""
        try:
            return await asyncio.wait_for(asyncio.shield(done), timeout=self._settings.publish_timeout_ms / 1000)
        except TimeoutError as exc:
            raise PublishFailed(f"the broker did not acknowledge the {what} in time") from exc

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
                        await producer.send(self._topic, value, partition=partition, headers=pending.headers)
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
