"""Reading the events topic directly, outside the Faust worker (history rebuilds, replays, checks)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from flux.config import Settings
from flux.kafka.security import client_options
from flux.model.events import EventLimits
from flux.model.records import DecodedRecord, decode_record

FETCH_BYTES = 8 * 1024 * 1024


def log_consumer(
    settings: Settings,
    purpose: str,
    group_id: str | None = None,
    fetch_bytes: int = FETCH_BYTES,
    committed_only: bool = True,
) -> AIOKafkaConsumer:
    """An unstarted consumer of committed records (of every record, and end offsets at the high
    watermark, with ``committed_only=False``), in no group unless ``group_id`` is given, fetching
    up to ``fetch_bytes`` per partition (at least one record batch, however large)."""
    return AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",  # an offset below the log start (retention) means the oldest record
        isolation_level="read_committed" if committed_only else "read_uncommitted",
        client_id=f"{settings.app_id}-{purpose}",
        max_partition_fetch_bytes=fetch_bytes,
        fetch_max_bytes=4 * FETCH_BYTES,
        **client_options(settings),
    )


async def committed_offsets(settings: Settings, partitions: list[int]) -> dict[int, int]:
    """The Flux consumer group's committed events-topic offsets of ``partitions`` (absent if none)."""
    consumer = log_consumer(settings, "offsets", group_id=settings.app_id)
    await consumer.start()
    try:
        found = {}
        for partition in partitions:
            offset = await consumer.committed(TopicPartition(settings.events_topic, partition))
            if offset is not None:
                found[partition] = offset
        return found
    finally:
        await consumer.stop()


def decode_message(message: Any, partitions: int, limits: EventLimits) -> DecodedRecord:
    """The events of one record read by an aiokafka consumer (timestamps in ms)."""
    return decode_record(
        message.value,
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        timestamp_ms=int(message.timestamp or 0),
        partitions=partitions,
        limits=limits,
    )


async def logged_events(settings: Settings, purpose: str) -> AsyncIterator[dict[str, Any]]:
    """Every committed event of the events topic, from its start to its end as of the call (each
    partition in log order): what a check compares a node's state with."""
    partitions = settings.partitions
    limits = settings.event_limits()
    consumer = log_consumer(settings, purpose)
    await consumer.start()
    try:
        tps = [TopicPartition(settings.events_topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            batches = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            for messages in batches.values():
                for message in messages:
                    for event in decode_message(message, partitions, limits).events:
                        yield event
    finally:
        await consumer.stop()
