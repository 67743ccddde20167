"""The source router: reads the source topics (``FLUX_SOURCE_TOPICS``) and republishes their records
to the events topic as envelopes, where the reducer folds them like any other event.

A source topic is partitioned by its producer (Kafka's murmur2 of the key over its own partition
count), the entity table by Flux's partitioner over ``FLUX_PARTITIONS``; a record of a source
partition may belong to any table partition, whichever node owns it. So the router does not fold:
it converts (:func:`flux.model.sources.convert_record`), packs the envelopes by events-topic
partition (:func:`flux.kafka.publisher.pack_by_partition`) and writes them with an idempotent
producer (``acks=all``); invalid records go to the dead-letter topic with the reason. Only once
the broker acknowledged all of a fetch's records does it commit the fetch's source offsets, in the
consumer group ``<FLUX_APP_ID>-sources`` (every node of an app runs a router; the group shares the
source partitions among them).

A crash between the write and the commit makes the router read those records again and write
them again, with the same eventIds (derived from topic, partition and offset): the reducer's
applied-once marks (:mod:`flux.model.history`) apply and store each event once. History, replays,
WebSocket updates and ``?wait``-less reads see these events as they see any other.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from flux.config import Settings
from flux.kafka.publisher import PRODUCER_MAX_REQUEST_BYTES, pack_by_partition
from flux.kafka.security import client_options
from flux.metrics import Metrics
from flux.model.events import Envelope, encode
from flux.model.records import Rejected, dead_letter
from flux.model.sources import SourceTopic, convert_record

log = logging.getLogger(__name__)

FETCH_MAX_RECORDS = 20_000  # source records read, converted and acknowledged as one unit
FETCH_TIMEOUT_MS = 100
RETRY_S = 1.0  # pause before writing a fetch again after the broker refused it
YIELD_EVERY_RECORDS = 1000  # let the reducer and HTTP in between slices of a large fetch


def group_id(settings: Settings) -> str:
    """The consumer group of the routers of an app: its committed offsets are the source positions."""
    return f"{settings.app_id}-sources"


@dataclass
class Routed:
    """A fetch, converted: records for the events topic, dead letters, and the source offsets to commit."""

    records: list[tuple[int, bytes]] = field(default_factory=list)  # (events-topic partition, packed value)
    dead: list[bytes] = field(default_factory=list)
    offsets: dict[TopicPartition, int] = field(default_factory=dict)  # next offset to read, per source partition
    events: int = 0


def route(
    fetched: Mapping[TopicPartition, Sequence[Any]], sources: Mapping[str, SourceTopic], settings: Settings
) -> Routed:
    """Convert a fetch (aiokafka records by source partition) into what the router writes and commits."""
    limits = settings.event_limits()
    envelopes: list[Envelope] = []
    out = Routed()
    for tp, records in fetched.items():
        source = sources[tp.topic]
        for record in records:
            converted = convert_record(
                source,
                key=record.key,
                value=record.value,
                headers=record.headers or (),
                partition=tp.partition,
                offset=record.offset,
                timestamp_ms=record.timestamp if record.timestamp is not None else -1,
                limits=limits,
            )
            rejected = converted.rejected
            events = converted.events
            if len(record.value or b"") > settings.max_event_bytes:  # rare: look at each event's size
                events, too_big = _within(events, settings.max_event_bytes)
                rejected = [*rejected, *too_big]
            envelopes += events
            out.dead += [dead_letter(r, topic=tp.topic, partition=tp.partition, offset=record.offset) for r in rejected]
        if records:
            out.offsets[tp] = records[-1].offset + 1
    out.events = len(envelopes)
    out.records = pack_by_partition(envelopes, settings.partitions)
    return out


def _within(events: list[Envelope], max_bytes: int) -> tuple[list[Envelope], list[Rejected]]:
    """The events whose wire form fits ``max_bytes`` (``FLUX_MAX_EVENT_BYTES``), and rejects for the others."""
    kept: list[Envelope] = []
    rejected: list[Rejected] = []
    for index, envelope in enumerate(events):
        size = len(encode(envelope))
        if size <= max_bytes:
            kept.append(envelope)
        else:
            reason = f"the event is {size} bytes; FLUX_MAX_EVENT_BYTES is {max_bytes}"
            rejected.append(Rejected(index, reason, {"entity_id": envelope["payload"]["entity_id"]}))
    return kept, rejected


class SourceRouter:
    """Reads the source topics and republishes their records to the events topic (see the module docstring)."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self._settings = settings
        self._metrics = metrics
        self._sources = {source.topic: source for source in settings.sources()}
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Connect the producer and the consumer (group ``<FLUX_APP_ID>-sources``), then route in the background."""
        if not self._sources:
            return
        settings = self._settings
        options = client_options(settings)
        self._producer = AIOKafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap_servers,
            client_id=f"{settings.app_id}-sources-{settings.node_id}",
            acks="all",
            enable_idempotence=True,
            linger_ms=2,
            max_request_size=PRODUCER_MAX_REQUEST_BYTES,
            **options,
        )
        self._consumer = AIOKafkaConsumer(
            *self._sources,
            bootstrap_servers=settings.kafka_bootstrap_servers,
            client_id=f"{settings.app_id}-sources-{settings.node_id}",
            group_id=group_id(settings),
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            max_partition_fetch_bytes=8 * 1024 * 1024,
            session_timeout_ms=round(settings.session_timeout_s * 1000),
            heartbeat_interval_ms=round(settings.heartbeat_interval_s * 1000),
            **options,
        )
        try:
            await self._producer.start()
            await self._consumer.start()
        except BaseException:
            await self.stop()
            raise
        self._task = asyncio.create_task(self._run(), name="flux-source-router")
        log.info("routing source topics %s to %s", sorted(self._sources), settings.events_topic)

    async def stop(self) -> None:
        """Stop routing (a fetch not yet committed is read again on the next start), then disconnect."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            except Exception:
                log.exception("the source router failed")
            self._task = None
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def _run(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        while True:
            try:
                fetched = await consumer.getmany(timeout_ms=FETCH_TIMEOUT_MS, max_records=FETCH_MAX_RECORDS)
            except KafkaError as exc:
                log.warning("could not read the source topics (%r); trying again", exc)
                await asyncio.sleep(RETRY_S)
                continue
            if not fetched:
                continue
            try:
                routed = await self._convert(fetched)
                await self._deliver(routed)
            except Exception:  # a bug: read the fetch again from the committed positions
                log.exception("the source router could not route a fetch; reading it again")
                await asyncio.sleep(RETRY_S)
                with contextlib.suppress(KafkaError):  # a partition moved away: its new owner reads it
                    await consumer.seek_to_committed(*fetched)
                continue
            await self._commit(routed.offsets)
            self._metrics.routed(sum(len(records) for records in fetched.values()))

    async def _convert(self, fetched: dict[TopicPartition, list[Any]]) -> Routed:
        """:func:`route` in slices of :data:`YIELD_EVERY_RECORDS` records, yielding to the loop in between."""
        total = Routed()
        for tp, records in fetched.items():
            for start in range(0, len(records), YIELD_EVERY_RECORDS):
                part = route({tp: records[start : start + YIELD_EVERY_RECORDS]}, self._sources, self._settings)
                total.records += part.records
                total.dead += part.dead
                total.events += part.events
                total.offsets.update(part.offsets)
                await asyncio.sleep(0)
        return total

    async def _deliver(self, routed: Routed) -> None:
        """Write the fetch's records and dead letters; on a refusal, write them all again until acknowledged
        (a record written twice carries the same events, applied once)."""
        producer = self._producer
        assert producer is not None
        settings = self._settings
        while True:
            try:
                futures = [
                    await producer.send(settings.events_topic, value, partition=partition)
                    for partition, value in routed.records
                ]
                futures += [await producer.send(settings.dead_letter_topic, value) for value in routed.dead]
                await asyncio.gather(*futures)
            except KafkaError as exc:
                log.warning("the broker did not acknowledge routed source records (%r); writing them again", exc)
                await asyncio.sleep(RETRY_S)
                continue
            if routed.dead:
                self._metrics.rejected(len(routed.dead))
                log.warning("sent %d invalid source records to %s", len(routed.dead), settings.dead_letter_topic)
            return

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        consumer = self._consumer
        assert consumer is not None
        try:
            await consumer.commit(offsets)
        except KafkaError as exc:  # a rebalance moved the partitions: their new owner reads these records again
            log.info("could not commit source offsets (%r); the records will be routed again, applied once", exc)
