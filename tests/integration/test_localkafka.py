"""The local Kafka launcher: idempotent start, and acknowledged records surviving restarts and crashes."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from flux.localkafka import (
    LocalKafka,
    LocalKafkaError,
)

# --- no broker needed ----------------------------------------------------------------------------------------------


# --- against the real launched broker -------------------------------------------------------------------------------


def _jvms_for(kafka: LocalKafka) -> list[int]:
    """Pids of live broker JVMs started with this launcher's server.properties."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "kafka.Kafka" in cmdline and str(kafka.server_properties) in cmdline:
            pids.append(int(proc.name))
    return pids


async def _create_topic(bootstrap: str, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()


async def _produce_acked(bootstrap: str, topic: str, values: list[bytes]) -> list[int]:
    """Send each value with acks=all and idempotence; return the acknowledged offsets."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        offsets = []
        for value in values:
            meta = await producer.send_and_wait(topic, value, key=b"k", partition=0)
            offsets.append(meta.offset)
        return offsets
    finally:
        await producer.stop()


async def _read_all(bootstrap: str, topic: str, expected: int, timeout: float = 30.0) -> list[tuple[int, bytes]]:
    """Read partition 0 of ``topic`` from the beginning until ``expected`` records arrived."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        records: list[tuple[int, bytes]] = []
        async with asyncio.timeout(timeout):
            while len(records) < expected:
                batch = await consumer.getmany(tp, timeout_ms=1000)
                records.extend((r.offset, r.value) for r in batch.get(tp, []) if r.value is not None)
        return records
    finally:
        await consumer.stop()


def test_second_start_returns_same_bootstrap_without_a_second_jvm(local_kafka: LocalKafka) -> None:
    pid = local_kafka.pid()
    assert pid is not None
    assert local_kafka.start() == local_kafka.bootstrap
    # A second launcher on the same data dir (as another process would build) finds the running broker too.
    twin = LocalKafka(local_kafka.data_dir, local_kafka.port, local_kafka.controller_port)
    assert twin.is_running()
    assert twin.start() == local_kafka.bootstrap
    assert local_kafka.pid() == pid
    assert _jvms_for(local_kafka) == [pid]


def test_start_on_a_port_taken_by_another_broker_fails_clearly(local_kafka: LocalKafka, tmp_path: Path) -> None:
    other = LocalKafka(tmp_path / "other", port=local_kafka.port, controller_port=local_kafka.controller_port)
    with pytest.raises(LocalKafkaError, match="already in use"):
        other.start(timeout=10)
    assert not other.is_running()


@pytest.mark.parametrize("how", ["stop", "kill"])
async def test_acked_records_survive_a_broker_restart(local_kafka: LocalKafka, how: str) -> None:
    bootstrap = local_kafka.bootstrap
    topic = f"survive-{how}-{uuid.uuid4().hex[:8]}"
    values = [f"record-{i}".encode() for i in range(20)]
    await _create_topic(bootstrap, topic)
    offsets = await _produce_acked(bootstrap, topic, values)
    assert offsets == list(range(20))

    old_pid = local_kafka.pid()
    try:
        stopped = await asyncio.to_thread(local_kafka.stop if how == "stop" else local_kafka.kill)
        assert stopped
        assert not local_kafka.is_running()
        assert not local_kafka.pid_file.exists()
    finally:
        assert await asyncio.to_thread(local_kafka.start, 120) == bootstrap
    assert local_kafka.pid() not in (None, old_pid)

    records = await _read_all(bootstrap, topic, expected=len(values))
    assert records == list(zip(offsets, values, strict=True))
    # And the restarted broker accepts new writes after the surviving ones.
    assert await _produce_acked(bootstrap, topic, [b"after"]) == [20]
