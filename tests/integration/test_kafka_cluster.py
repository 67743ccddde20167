"""A three-broker local cluster keeps acknowledging ``acks=all`` writes while a broker is killed, and loses none."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from flux.kafka.topics import ensure_topics
from flux.localkafka import LocalKafkaCluster
from tests.flux_process import app_settings

ACKS_AFTER_KILL = 50  # acknowledged writes that must arrive with one broker dead
FAILOVER_TIMEOUT_S = 30.0  # the controller moves leadership once the dead broker's session (5 s) expires


async def _partitions(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    """The topic's partitions as the cluster's metadata describes them (leader, replicas, isr)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
        return sorted(described["partitions"], key=lambda p: int(p["partition"]))
    finally:
        await admin.close()


async def _read_partition(bootstrap: str, topic: str, partition: int) -> dict[int, bytes]:
    """Every record of one partition, offset to value, up to its end offset."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        end = (await consumer.end_offsets([tp]))[tp]
        records: dict[int, bytes] = {}
        async with asyncio.timeout(30):
            while await consumer.position(tp) < end:
                for record in (await consumer.getmany(tp, timeout_ms=1000)).get(tp, []):
                    records[record.offset] = record.value or b""
        return records
    finally:
        await consumer.stop()


class Writer:
    """Publishes numbered records to one partition, one at a time with ``acks=all``, remembering what was acked."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.topic = topic
        self.producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, request_timeout_ms=20_000
        )
        self.acked: list[tuple[float, int, bytes]] = []  # (when, offset, value)
        self.failed = 0
        self.running = True

    async def run(self) -> None:
        """Send until told to stop; a send that fails is not acknowledged, so nothing is promised for it."""
        await self.producer.start()
        try:
            n = 0
            while self.running:
                value = f"record-{n}".encode()
                n += 1
                try:
                    meta = await self.producer.send_and_wait(self.topic, value, key=b"k", partition=0)
                except KafkaError:
                    self.failed += 1
                    continue
                self.acked.append((time.monotonic(), meta.offset, value))
        finally:
            await self.producer.stop()

    def acked_since(self, moment: float) -> int:
        """How many records were acknowledged after ``moment``."""
        return sum(1 for when, _, _ in self.acked if when > moment)

    async def wait_acks(self, count: int, since: float, timeout: float) -> None:
        """Wait until ``count`` records were acknowledged after ``since``."""
        async with asyncio.timeout(timeout):
            while self.acked_since(since) < count:
                await asyncio.sleep(0.05)


async def test_acked_writes_continue_through_a_broker_crash_and_all_survive(kafka_cluster: LocalKafkaCluster) -> None:
    bootstrap = kafka_cluster.bootstrap
    settings = app_settings(bootstrap, f"cl{uuid.uuid4().hex[:8]}", partitions=3, replication_factor=3)
    await ensure_topics(settings)
    topic = settings.events_topic
    partitions = await _partitions(bootstrap, topic)
    assert [len(p["replicas"]) for p in partitions] == [3, 3, 3]
    assert all(len(p["isr"]) == 3 for p in partitions)

    writer = Writer(bootstrap, topic)
    task = asyncio.create_task(writer.run())
    victim = next(b for b in kafka_cluster.brokers if b.node_id == partitions[0]["leader"])
    try:
        await writer.wait_acks(20, since=0.0, timeout=30)
        assert await asyncio.to_thread(victim.kill)  # SIGKILL the partition's leader mid-load
        killed_at = time.monotonic()
        await writer.wait_acks(ACKS_AFTER_KILL, since=killed_at, timeout=FAILOVER_TIMEOUT_S)
        after_kill = await _partitions(bootstrap, topic)
        assert after_kill[0]["leader"] != victim.node_id
        assert len(after_kill[0]["isr"]) == 2, "two in-sync replicas satisfy min.insync.replicas=2"

        await asyncio.to_thread(victim.start, 120)
        restarted_at = time.monotonic()
        await writer.wait_acks(10, since=restarted_at, timeout=FAILOVER_TIMEOUT_S)
    finally:
        writer.running = False
        await task
        if not victim.is_running():
            await asyncio.to_thread(victim.start, 120)  # the cluster is the session's

    async with asyncio.timeout(30):  # the restarted broker catches up and rejoins the ISR
        while len((await _partitions(bootstrap, topic))[0]["isr"]) < 3:
            await asyncio.sleep(0.5)
    stored = await _read_partition(bootstrap, topic, 0)
    missing = [(offset, value) for _, offset, value in writer.acked if stored.get(offset) != value]
    assert not missing, f"{len(missing)} of {len(writer.acked)} acknowledged records lost, e.g. {missing[:5]}"
    print(
        f"{len(writer.acked)} records acknowledged, {writer.acked_since(killed_at)} after the kill, "
        f"{writer.failed} sends failed; all acknowledged ones read back"
    )
