"""The Kafka topics Flux owns: created on start, checked against the configuration."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from flux.config import Settings
from flux.kafka.security import client_options

log = logging.getLogger(__name__)

# A packed record of a batch stays under 1 MiB; a single event may be up to FLUX_MAX_EVENT_BYTES.
MAX_MESSAGE_BYTES = 8 * 1024 * 1024
METADATA_WAIT_S = 10.0  # how long a just-created topic may take to show in the broker's metadata
TABLE_NAME = "entities"  # the Faust table of entity state (agents/app.py); its changelog is a topic too


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


def changelog_topic(settings: Settings) -> str:
    """The entity table's changelog topic, as Faust names it: ``<FLUX_APP_ID>-entities-changelog``."""
    return f"{settings.app_id}-{TABLE_NAME}-changelog"


def wanted_topics(settings: Settings) -> dict[str, NewTopic]:
    """The topics Flux creates itself, by name (Faust creates the table's changelog).

    Source topics (``FLUX_SOURCE_TOPICS``) are created when missing, with ``FLUX_PARTITIONS``
    partitions and the broker's default retention; existing ones are read as they are, whatever
    their partition count (the router repartitions their records, see :mod:`flux.kafka.source_router`).
    """
    sources = {
        source.topic: NewTopic(
            source.topic, num_partitions=settings.partitions, replication_factor=settings.replication_factor
        )
        for source in settings.sources()
    }
    return sources | {
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
        settings.webhooks_topic: NewTopic(
            settings.webhooks_topic,
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


async def ensure_topics(settings: Settings) -> str:
    """Create Flux's topics if missing and check the existing ones against the configuration.

    Refuses (:class:`TopicMismatch`) an events topic, change feed or table changelog whose partition
    count is not ``FLUX_PARTITIONS``, and a changelog that is not compacted; logs a warning for an
    existing topic with fewer replicas than ``FLUX_REPLICATION_FACTOR``. Returns the Kafka cluster id.
    """
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        client_id=f"{settings.app_id}-admin",
        **client_options(settings),
    )
    await admin.start()
    try:
        wanted = wanted_topics(settings)
        existing = set(await admin.list_topics())
        missing = [topic for name, topic in wanted.items() if name not in existing]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):  # another Flux process was first
                await admin.create_topics(missing)
            log.info("created topics %s", [t.name for t in missing])
        changelog = changelog_topic(settings)
        checked = [*wanted, *([changelog] if changelog in existing else [])]
        described = await describe_topics(admin, checked)
        for name in (settings.events_topic, settings.changes_topic, changelog):
            _check_partitions(name, described.get(name), settings.partitions)
        if changelog in existing:
            _check_compacted(changelog, await topic_configs(admin, changelog))
        for name in sorted(existing & described.keys()):
            _warn_replication(name, described[name], settings.replication_factor)
        cluster = await admin.describe_cluster()
        return str(cluster.get("cluster_id") or "unknown")
    finally:
        await admin.close()


async def describe_topics(
    admin: AIOKafkaAdminClient, names: list[str], timeout: float = METADATA_WAIT_S
) -> dict[str, dict[str, Any]]:
    """Topic metadata by name, waiting up to ``timeout`` for topics the broker does not show yet.

    A topic created a moment ago (by this call's ``create_topics`` or another process) is known to
    the controller before the broker's metadata cache lists it; its checks would be skipped.
    """
    deadline = time.monotonic() + timeout
    while True:
        described = {str(t.get("topic")): t for t in await admin.describe_topics(names)}
        if all(described.get(name, {}).get("partitions") for name in names) or time.monotonic() >= deadline:
            return described
        await asyncio.sleep(0.1)


async def topic_configs(admin: AIOKafkaAdminClient, topic: str) -> dict[str, str]:
    """The effective configuration of ``topic`` (``describe_configs``), name to value."""
    configs: dict[str, str] = {}
    for response in await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)]):
        for error_code, error_message, _, name, entries, *_ in response.resources:
            if name != topic:
                continue
            if error_code:
                raise KafkaError(f"describing the configuration of topic {topic!r} failed: {error_message}")
            configs.update({str(entry[0]): str(entry[1]) for entry in entries})
    return configs


def _check_partitions(name: str, described: dict[str, Any] | None, partitions: int) -> None:
    count = len((described or {}).get("partitions") or [])
    if count and count != partitions:
        raise TopicMismatch(
            f"topic {name!r} has {count} partitions but FLUX_PARTITIONS={partitions}; "
            "entities would map to other partitions than their state. Set FLUX_PARTITIONS to match."
        )


def _check_compacted(name: str, configs: dict[str, str]) -> None:
    policy = configs.get("cleanup.policy", "")
    if policy != "compact":
        raise TopicMismatch(
            f"the entity table's changelog topic {name!r} has cleanup.policy={policy!r}, not 'compact'; "
            "Kafka would delete entities' state that restarts and new nodes recover from. "
            f"Set it with: kafka-configs --alter --entity-type topics --entity-name {name} "
            "--add-config cleanup.policy=compact"
        )


def _warn_replication(name: str, described: dict[str, Any], replication_factor: int) -> None:
    replicas = min((len(p.get("replicas") or []) for p in described.get("partitions") or []), default=0)
    if replicas and replicas < replication_factor:
        log.warning(
            "topic %r has %d replica(s) per partition, fewer than FLUX_REPLICATION_FACTOR=%d: it keeps the "
            "replication it was created with (raise it with kafka-reassign-partitions)",
            name,
            replicas,
            replication_factor,
        )
