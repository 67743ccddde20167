"""ensure_topics against a real broker: creates Flux's topics, refuses existing ones that do not fit the config."""

from __future__ import annotations

import asyncio
import logging
import uuid

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from flux.config import Settings
from flux.kafka.topics import TopicMismatch, changelog_topic, ensure_topics, topic_configs
from tests.flux_process import app_settings


def settings_for(bootstrap: str) -> Settings:
    """Settings of a fresh app (4 partitions, 1 replica) whose topics nobody else uses."""
    return app_settings(bootstrap, f"tp{uuid.uuid4().hex[:10]}")


async def create_topic(bootstrap: str, name: str, partitions: int, configs: dict[str, str]) -> None:
    """Create one topic as another tool (or an older Flux) would have, and wait until the broker lists it."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1, topic_configs=configs)])
        async with asyncio.timeout(10):
            while name not in await admin.list_topics():
                await asyncio.sleep(0.05)
    finally:
        await admin.close()


async def test_creates_the_topics_and_accepts_them_the_next_time(kafka_bootstrap: str) -> None:
    settings = settings_for(kafka_bootstrap)
    assert await ensure_topics(settings)
    assert await ensure_topics(settings)  # everything exists and fits now
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        assert (await topic_configs(admin, settings.namespaces_topic))["cleanup.policy"] == "compact"
    finally:
        await admin.close()


async def test_a_changelog_with_the_same_partitions_and_compaction_is_accepted(kafka_bootstrap: str) -> None:
    settings = settings_for(kafka_bootstrap)
    await create_topic(kafka_bootstrap, changelog_topic(settings), 4, {"cleanup.policy": "compact"})
    assert await ensure_topics(settings)


async def test_refuses_an_events_topic_with_other_partitions(kafka_bootstrap: str) -> None:
    settings = settings_for(kafka_bootstrap)
    await create_topic(kafka_bootstrap, settings.events_topic, 2, {})
    with pytest.raises(TopicMismatch, match=rf"'{settings.events_topic}' has 2 partitions but FLUX_PARTITIONS=4"):
        await ensure_topics(settings)


async def test_refuses_a_table_changelog_with_other_partitions(kafka_bootstrap: str) -> None:
    settings = settings_for(kafka_bootstrap)
    changelog = f"{settings.app_id}-entities-changelog"
    await create_topic(kafka_bootstrap, changelog, 8, {"cleanup.policy": "compact"})
    with pytest.raises(TopicMismatch, match=rf"'{changelog}' has 8 partitions but FLUX_PARTITIONS=4"):
        await ensure_topics(settings)


async def test_refuses_a_table_changelog_that_is_not_compacted(kafka_bootstrap: str) -> None:
    settings = settings_for(kafka_bootstrap)
    changelog = changelog_topic(settings)
    await create_topic(kafka_bootstrap, changelog, 4, {"cleanup.policy": "delete"})
    with pytest.raises(TopicMismatch, match=rf"'{changelog}' has cleanup.policy='delete', not 'compact'"):
        await ensure_topics(settings)


async def test_warns_when_existing_topics_have_fewer_replicas_than_configured(
    kafka_bootstrap: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = settings_for(kafka_bootstrap)
    await ensure_topics(settings)  # one replica each
    await create_topic(kafka_bootstrap, changelog_topic(settings), 4, {"cleanup.policy": "compact"})
    with caplog.at_level(logging.WARNING, logger="flux.kafka.topics"):
        await ensure_topics(settings.model_copy(update={"replication_factor": 3}))
    warned = {r.args[0] for r in caplog.records if r.name == "flux.kafka.topics" and "FLUX_REPLICATION_FACTOR" in r.msg}
    assert warned == {
        settings.events_topic,
        settings.changes_topic,
        settings.namespaces_topic,
        settings.idempotency_topic,
        settings.webhooks_topic,
        settings.dead_letter_topic,
        changelog_topic(settings),
    }
