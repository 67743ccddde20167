"""The Kafka topics Flux owns: created on start, checked against the configuration."""

from __future__ import annotations

import contextlib
import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from flux.config import Settings
from flux.kafka_security import client_options

log = logging.getLogger(__name__)

# A packed record of a batch stays under 1 MiB; a single event may be up to FLUX_MAX_EVENT_BYTES.
MAX_MESSAGE_BYTES = 8 * 1024 * 1024


class TopicMismatch(RuntimeError):
    """An existing topic does not match the configuration; starting would corrupt state."""


def events_topic_config(settings: Settings) -> dict[str, str]:
    """Configs of the events topic: the system of record keeps every event unless told otherwise."""
    return {
        "retention.ms": str(settings.events_retention_ms),
        "retention.bytes": "-1",
        "cleanup.policy": "delete",
        "max.message.bytes": str(MAX_MESSAGE_BYTES),
    }


async def ensure_topics(settings: Settings) -> str:
    """Create the events, changes, namespaces and dead-letter topics if missing; refuse a partition-count mismatch.

    Returns the Kafka cluster id.
    """
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        client_id=f"{settings.app_id}-admin",
        **client_options(settings),
    )
    await admin.start()
    try:
        wanted = {
            settings.events_topic: NewTopic(
                settings.events_topic,
                num_partitions=settings.partitions,
                replication_factor=settings.replication_factor,
                topic_configs=events_topic_config(settings),
            ),
            settings.changes_topic: NewTopic(
                settings.changes_topic,
                num_partitions=settings.partitions,
                replication_factor=settings.replication_factor,
                topic_configs={
                    "retention.ms": str(settings.changes_retention_ms),
                    "cleanup.policy": "delete",
                    "max.message.bytes": str(MAX_MESSAGE_BYTES),
                },
            ),
            settings.namespaces_topic: NewTopic(
                settings.namespaces_topic,
                num_partitions=1,
                replication_factor=settings.replication_factor,
                topic_configs={"cleanup.policy": "compact"},
            ),
            settings.idempotency_topic: NewTopic(
                settings.idempotency_topic,
                num_partitions=1,
                replication_factor=settings.replication_factor,
                topic_configs={
                    "cleanup.policy": "compact,delete",
                    "retention.ms": str(settings.idempotency_ttl_s * 1000 + 3_600_000),
                },
            ),
            settings.dead_letter_topic: NewTopic(
                settings.dead_letter_topic,
                num_partitions=1,
                replication_factor=settings.replication_factor,
                topic_configs={"max.message.bytes": str(MAX_MESSAGE_BYTES)},
            ),
        }
        existing = set(await admin.list_topics())
        missing = [topic for name, topic in wanted.items() if name not in existing]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):  # another Flux process was first
                await admin.create_topics(missing)
            log.info("created topics %s", [t.name for t in missing])
        described = await admin.describe_topics([settings.events_topic, settings.changes_topic])
        for topic in described:
            count = len(topic.get("partitions", []))
            if count and count != settings.partitions:
                raise TopicMismatch(
                    f"topic {topic.get('topic')!r} has {count} partitions "
                    f"but FLUX_PARTITIONS={settings.partitions}; "
                    "entities would map to other partitions than their state. Set FLUX_PARTITIONS to match."
                )
        cluster = await admin.describe_cluster()
        return str(cluster.get("cluster_id") or "unknown")
    finally:
        await admin.close()
