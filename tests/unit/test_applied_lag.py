"""Applied lag and latency: the histogram and gauges as Prometheus text, the lag rule, one round of the
watch against a fake consumer, and the reducer's one observation per batch and partition."""

from __future__ import annotations

import math
import types
from typing import Any

import orjson
import pytest
from aiokafka import TopicPartition

from agents import applied_lag
from agents.applied_lag import AppliedLagWatch, lag_of
from agents.reducer_agent import BatchReducer
from agents.table.catch_up import CatchUp
from agents.table.store import PartitionStats
from flux.config import Settings
from flux.metrics import AppliedLag, Histogram, Metrics
from flux.model.partitioning import partition_for
from flux.prometheus import prometheus_text


def samples(text: str) -> dict[str, float]:
    """The sample lines of a Prometheus text, name with labels -> value."""
    lines = (line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))
    return {name: float(value) for name, value in lines}


# -- the histogram and the gauges as text ---------------------------------------------------------
def test_a_histogram_keeps_counts_per_bucket_and_makes_them_cumulative() -> None:
    histogram = Histogram((1, 5, 10))
    histogram.observe(0.5)
    histogram.observe(5, weight=3)  # on a bound: in that bound's bucket (le = less or equal)
    histogram.observe(7.25, weight=2)
    histogram.observe(60_000)
    histogram.observe(3, weight=0)  # nothing folded: nothing counted
    assert histogram.cumulative() == [(1, 1), (5, 4), (10, 6), (math.inf, 7)]
    assert histogram.count == 7 and histogram.sum == 60030


def test_the_applied_latency_is_counted_per_event_and_never_negative() -> None:
    metrics = Metrics()
    metrics.applied_since(1_000, 40, now_ms=1_150)
    metrics.applied_since(2_000, 2, now_ms=1_990)  # the producer's clock is ahead: 0 ms, not -10
    values = samples(prometheus_text(metrics, 0))
    assert values['flux_applied_latency_ms_bucket{le="1"}'] == 2
    assert values['flux_applied_latency_ms_bucket{le="100"}'] == 2
    assert values['flux_applied_latency_ms_bucket{le="200"}'] == 42
    assert values['flux_applied_latency_ms_bucket{le="+Inf"}'] == 42
    assert values["flux_applied_latency_ms_count"] == 42 and values["flux_applied_latency_ms_sum"] == 6000
    buckets = [key for key in values if key.startswith("flux_applied_latency_ms_bucket")]
    assert [key.split('"')[1] for key in buckets] == [
        *("1", "2", "5", "10", "25", "50", "100", "200", "500", "1000", "2500", "5000", "10000", "+Inf")
    ]


def test_lag_gauges_are_per_served_partition_and_partitions_no_longer_served_disappear() -> None:
    metrics = Metrics()
    metrics.lag({3: AppliedLag(12, 250.0), 0: AppliedLag(0, 0.0)})
    text = prometheus_text(metrics, 0)
    assert "# TYPE flux_applied_lag_records gauge" in text and "# TYPE flux_applied_lag_ms gauge" in text
    values = samples(text)
    assert values['flux_applied_lag_records{partition="0"}'] == 0
    assert values['flux_applied_lag_records{partition="3"}'] == 12
    assert values['flux_applied_lag_ms{partition="3"}'] == 250
    metrics.lag({0: AppliedLag(1, 7.5)})
    values = samples(prometheus_text(metrics, 0))
    assert not any('partition="3"' in key for key in values)
    assert values['flux_applied_lag_ms{partition="0"}'] == 7.5


def test_the_existing_metrics_come_first_and_unchanged() -> None:
    text = prometheus_text(Metrics(), 5)
    before, _, after = text.partition("# HELP flux_applied_latency_ms ")
    assert before.endswith("flux_websocket_dropped_total 0.0\n") and "flux_entities 5.0\n" in before
    assert after and "flux_events_" not in after


# -- the lag rule -----------------------------------------------------------------------------------
def test_lag_is_zero_when_caught_up_or_when_only_markers_are_left() -> None:
    assert lag_of(10, 10, None, 5_000) == (0, 0)
    assert lag_of(10, 8, None, 5_000) == (0, 0)  # the end was read before the reducer went on
    assert lag_of(10, 11, None, 5_000) == (0, 0)  # a transaction marker at 10
    assert lag_of(10, 11, (11, 4_000), 5_000) == (0, 0)  # the first record came after the end was read


def test_lag_is_offsets_behind_and_the_age_of_the_first_unfolded_record() -> None:
    assert lag_of(10, 25, (10, 4_000), 5_000) == (15, 1_000)
    assert lag_of(10, 25, (12, 4_000), 5_000) == (15, 1_000)  # an aborted record or a marker first
    assert lag_of(10, 25, (10, 6_000), 5_000) == (15, 0)  # clock skew: not negative
    assert lag_of(10, 25, (10, -1), 5_000) == (15, 0)  # a record without a timestamp


# -- one round of the watch -------------------------------------------------------------------------
class Store:
    def __init__(self, positions: dict[int, int]) -> None:
        self.served = positions
        self.standbys: dict[int, int] = {}
        self.catch_up = CatchUp()

    def active_partitions(self) -> list[int]:
        return sorted(self.served)

    async def positions(self, partitions: list[int]) -> dict[int, int]:
        return {p: self.served[p] for p in partitions}


class Consumer:
    """An aiokafka consumer over a fake log: offset -> timestamp per partition, ends given."""

    def __init__(self, logs: dict[int, dict[int, int]], ends: dict[int, int]) -> None:
        self.logs, self.ends = logs, ends
        self.assigned: list[TopicPartition] = []
        self.at: dict[TopicPartition, int] = {}
        self.probes = 0

    async def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: self.ends[tp.partition] for tp in tps}

    def assign(self, tps: list[TopicPartition]) -> None:
        self.assigned = tps
        self.probes += 1

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.at[tp] = offset

    async def getmany(self, *tps: TopicPartition, timeout_ms: int) -> dict[TopicPartition, list[Any]]:
        found = {}
        for tp in tps:
            log = self.logs.get(tp.partition, {})
            offsets = [o for o in sorted(log) if o >= self.at[tp]]
            if offsets:
                found[tp] = [types.SimpleNamespace(offset=offsets[0], timestamp=log[offsets[0]])]
            else:
                self.at[tp] = max(self.at[tp], self.ends[tp.partition])  # read past the markers
        return found

    async def position(self, tp: TopicPartition) -> int:
        return self.at[tp]

    def unsubscribe(self) -> None:
        self.assigned = []


def settings() -> Settings:
    return Settings(events_topic="t.events")


async def test_a_round_measures_every_served_partition_and_skips_a_known_markers_only_probe(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(applied_lag.time, "time", lambda: 100.0)  # now: 100,000 ms
    metrics = Metrics()
    store = Store({0: 5, 1: 7, 2: 3})
    # partition 0 is caught up; 1 has only a transaction marker at 7; 2 has records from 3 on
    consumer = Consumer({1: {}, 2: {3: 99_600, 4: 99_800}}, {0: 5, 1: 8, 2: 5})
    watch = AppliedLagWatch(settings(), store, metrics)
    lags = await watch.measure(consumer)
    assert lags == {0: (0, 0), 1: (0, 0), 2: (2, 400)}
    assert metrics.applied_lag == lags and consumer.assigned == [], "no partition stays assigned"
    await watch.measure(consumer)
    assert consumer.probes == 2
    # the second probe asks for partition 2 only: nothing changed for 1
    store.served = {1: 7}  # a rebalance took 0 and 2 away
    assert await watch.measure(consumer) == {1: (0, 0)} and consumer.probes == 2
    assert set(metrics.applied_lag) == {1}


async def test_each_round_tells_the_catch_up_where_each_partition_stands() -> None:
    store = Store({0: 5, 2: 3})
    # partition 0 reached its log end; partition 2 has records 3 and 4 to fold
    consumer = Consumer({2: {3: 99_600, 4: 99_800}}, {0: 5, 2: 5})
    await AppliedLagWatch(settings(), store, Metrics()).measure(consumer)
    assert store.catch_up.behind({0: 5, 2: 3}) == {2: 2}
    consumer.ends[2] = 9  # more arrive meanwhile: the target stays the end as first read
    assert store.catch_up.behind({0: 5, 2: 5}) == {}


async def test_the_catch_up_targets_are_the_high_watermarks_read_once_per_assignment() -> None:
    store = Store({0: 5})
    watch = AppliedLagWatch(settings(), store, Metrics())
    marks = Consumer({}, {0: 12})  # a transaction still open hides offsets 5..11 from the stable end
    await watch.aim(marks)
    await watch.measure(Consumer({0: {}}, {0: 5}))
    assert store.catch_up.behind({0: 5}) == {0: 7}
    marks.ends[0] = 50
    await watch.aim(marks)  # read once: the target stays
    await watch.measure(Consumer({0: {}}, {0: 12}))  # aborted meanwhile: the stable end passed the target
    assert store.catch_up.behind({0: 5}) == {}


async def test_a_probe_without_an_answer_keeps_the_records_behind_and_the_last_age(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(applied_lag, "PROBE_TIMEOUT_S", 0.01)
    metrics = Metrics()
    metrics.lag({0: AppliedLag(3, 120.0)})
    consumer = Consumer({0: {}}, {0: 9})

    async def silent(*tps: TopicPartition, timeout_ms: int) -> dict[TopicPartition, list[Any]]:
        return {}

    consumer.getmany = silent  # type: ignore[method-assign]
    lags = await AppliedLagWatch(settings(), Store({0: 4}), metrics).measure(consumer)
    assert lags == {0: (5, 120.0)}


# -- the reducer: one observation per batch and partition, counted per event --------------------
class TableStore:
    def __init__(self) -> None:
        self.writes = 0

    def load(self, partition: int, key: bytes) -> bytes | None:
        return None

    async def write(self, partition: int, states: dict[bytes, Any], applied: int, events: int, *_: Any) -> Any:
        self.writes += 1
        return PartitionStats(events, len(states))


class Feed:
    async def publish(self, record: Any) -> None:
        pass


class Fence:
    async def check(self) -> None:
        pass


def record(entity_id: str, offset: int, timestamp_s: float, events: int = 1) -> Any:
    envelopes = [
        {"stream": "s", "source": "t", "payload": {"entity_id": entity_id, "properties": {"n": offset * 10 + i}}}
        for i in range(events)
    ]
    value = orjson.dumps(envelopes[0] if events == 1 else envelopes)
    partition = partition_for(entity_id, 4)
    message = types.SimpleNamespace(
        value=value, topic="t.events", partition=partition, offset=offset, timestamp=timestamp_s
    )
    return types.SimpleNamespace(message=message)


async def test_the_reducer_observes_each_partition_of_a_batch_once_from_its_oldest_record(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    observed: list[tuple[float, int]] = []
    metrics = Metrics()
    monkeypatch.setattr(metrics, "applied_since", lambda ts, count, now_ms=None: observed.append((ts, count)))
    s = Settings(partitions=4, events_topic="t.events")
    reducer = BatchReducer(types.SimpleNamespace(), TableStore(), Feed(), s, metrics, Fence())  # type: ignore[arg-type]
    a, b = "lag/a", next(f"lag/b{i}" for i in range(100) if partition_for(f"lag/b{i}", 4) != partition_for("lag/a", 4))
    batch = [record(a, 0, 10.5), record(b, 0, 10.0, events=3), record(a, 1, 10.2, events=2), record(b, 1, 11.0)]
    assert await reducer.apply(batch) == 7
    assert sorted(observed) == [(10_000, 4), (10_200, 3)]
