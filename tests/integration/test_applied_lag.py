"""The applied-lag watch against a real broker: records behind and their age, and transaction markers
(which no reducer ever folds) not counted as lag."""

from __future__ import annotations

import time
import uuid

from aiokafka import AIOKafkaProducer

from agents.applied_lag import AppliedLagWatch
from agents.log_reader import log_consumer
from agents.table.catch_up import CatchUp
from flux.kafka.topics import ensure_topics
from flux.metrics import Metrics
from tests.flux_process import app_settings


class Store:
    """The table's positions, as the test sets them."""

    def __init__(self, positions: dict[int, int]) -> None:
        self.served = positions
        self.standbys: dict[int, int] = {}  # no standby copies here
        self.catch_up = CatchUp()

    def active_partitions(self) -> list[int]:
        return sorted(self.served)

    async def positions(self, partitions: list[int]) -> dict[int, int]:
        return {p: self.served[p] for p in partitions}


async def test_lag_counts_records_behind_and_their_age_but_not_transaction_markers(kafka_bootstrap: str) -> None:
    settings = app_settings(kafka_bootstrap, f"lag{uuid.uuid4().hex[:10]}")
    assert await ensure_topics(settings)
    topic = settings.events_topic
    sent_ms = int(time.time() * 1000) - 3_000  # the records say they were produced 3 s ago
    plain = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", enable_idempotence=True)
    transactional = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, transactional_id=f"{settings.app_id}-tx")
    await plain.start()
    await transactional.start()
    try:
        for i in range(3):  # partition 0: offsets 0, 1, 2
            await plain.send_and_wait(topic, b"{}", partition=0, timestamp_ms=sent_ms + i * 1_000)
        async with transactional.transaction():  # partition 1: offsets 0, 1, and the commit marker at 2
            for _ in range(2):
                await transactional.send(topic, b"{}", partition=1)
    finally:
        await plain.stop()
        await transactional.stop()

    metrics = Metrics()
    store = Store({0: 1, 1: 2, 2: 0})  # 0: two records to fold; 1: folded up to the marker; 2: empty log
    watch = AppliedLagWatch(settings, store, metrics)
    consumer = log_consumer(settings, "test-lag")
    await consumer.start()
    try:
        lags = await watch.measure(consumer)
        assert lags[0].records == 2 and 1_500 <= lags[0].ms <= 10_000, lags  # the record at offset 1: ~2 s old
        assert lags[1] == (0, 0) and lags[2] == (0, 0), lags
        assert metrics.applied_lag == lags

        started = time.monotonic()
        assert (await watch.measure(consumer))[1] == (0, 0)
        assert time.monotonic() - started < 0.5, "a markers-only partition is not probed again"

        store.served = {0: 3, 1: 1}  # 0 folded up; 1 one record behind the marker
        lags = await watch.measure(consumer)
        assert lags[0] == (0, 0) and lags[1].records == 2 and lags[1].ms >= 0, lags
        assert set(metrics.applied_lag) == {0, 1}
    finally:
        await consumer.stop()
