"""The stall watch: a served partition behind the log that does not move is read again, then reported."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import TopicPartition
from mode.utils.queues import FlowControlEvent, FlowControlQueue

from agents import stall_watch
from agents.reducer_agent import WritesPaused
from agents.stall_watch import READ_AGAIN_S, STALL_S, StallWatch
from flux.config import Settings
from flux.metrics import Metrics

TOPIC = "flux.events"


class Store:
    def __init__(self) -> None:
        self.applied = {0: 5, 1: 7}
        self.events = {0: 50, 1: 70}
        self.stalled_partitions: list[int] = []
        self.rebalances = 0

    def recovered(self) -> bool:
        return True

    def active_partitions(self) -> list[int]:
        return [0, 1]

    def applied_offset(self, partition: int) -> int:
        return self.applied[partition]

    def partition_events(self, partition: int) -> int:
        return self.events[partition]

    async def positions(self, partitions: list[int]) -> dict[int, int]:
        return {p: self.applied[p] for p in partitions}


class FaustConsumer:
    def __init__(self) -> None:
        self.tps = {TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)}
        self._active_partitions = {TopicPartition(TOPIC, 1)}
        self._paused_partitions = {TopicPartition(TOPIC, 0)}
        self._buffered_partitions: set[Any] = set()
        self._read_offset: dict[Any, int | None] = {}  # the last offset handed to the stream
        self.flow_active = True
        self.seeks: list[tuple[int, int]] = []

    def assignment(self) -> set[Any]:
        return self.tps

    def resume_partitions(self, tps: list[Any]) -> None:
        self._paused_partitions.difference_update(tps)
        self._active_partitions.update(tps)

    def resume_flow(self) -> None:
        self.flow_active = True

    async def seek(self, tp: Any, offset: int) -> None:
        self.seeks.append((tp.partition, offset))


class Log:
    """Partition 0 has records from offset 5 on; partition 1 only a transaction marker at 7."""

    def __init__(self) -> None:
        self.at: dict[Any, int] = {}

    async def end_offsets(self, tps: list[Any]) -> dict[Any, int]:
        return {tp: {0: 10, 1: 8}[tp.partition] for tp in tps}

    def assign(self, tps: list[Any]) -> None:
        pass

    def seek(self, tp: Any, offset: int) -> None:
        self.at[tp] = offset

    async def getmany(self, tp: Any, timeout_ms: int, max_records: int) -> dict[Any, list[Any]]:
        return {tp: [SimpleNamespace(offset=self.at[tp])]} if tp.partition == 0 else {}


class Watched:
    """A stall watch over :class:`Store` and :class:`FaustConsumer` on a clock the test moves."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.clock = 1000.0
        monkeypatch.setattr(stall_watch.time, "monotonic", lambda: self.clock)
        self.store, self.consumer, self.metrics = Store(), FaustConsumer(), Metrics()
        self.crashes: list[BaseException] = []
        self.log = Log()

        async def crash(reason: BaseException) -> None:
            self.crashes.append(reason)

        self.flow_control = FlowControlEvent()  # Faust's, as the app has it: active once started
        self.flow_control.resume()
        self.channel: FlowControlQueue = FlowControlQueue(  # the stream's channel queue, as Faust makes it
            maxsize=8, flow_control=self.flow_control, clear_on_resume=True
        )
        app = SimpleNamespace(consumer=self.consumer, flow_control=self.flow_control, crash=crash)
        settings = Settings(events_topic=TOPIC)
        self.writes = asyncio.Lock()  # the reducer's write lock
        self.paused = WritesPaused(self.writes)
        self.watch = StallWatch(app, settings, self.store, self.metrics, self.paused)

    def check_at(self, t: float) -> None:
        """One round of the watch ``t`` seconds after the start."""
        self.clock = 1000.0 + t
        asyncio.run(self.watch.check(self.log))


def test_a_partition_behind_the_log_that_does_not_move_is_read_again_then_reported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    w = Watched(monkeypatch)
    store, consumer, metrics, crashes = w.store, w.consumer, w.metrics, w.crashes
    check_at = w.check_at
    check_at(-1)  # the first round only notes the rebalance
    check_at(0)
    check_at(READ_AGAIN_S - 1)
    assert metrics.partition_stalls == 0 and TopicPartition(TOPIC, 0) in consumer._paused_partitions
    check_at(READ_AGAIN_S + 1)  # partition 0 is behind (5 < 10) and still: let it flow again
    assert metrics.partition_stalls == 1
    assert TopicPartition(TOPIC, 0) in consumer._active_partitions
    assert consumer.seeks == [(0, 5)]  # read again from the first offset the table does not hold
    assert store.stalled_partitions == []
    check_at(READ_AGAIN_S + STALL_S)
    assert store.stalled_partitions == []  # read again less than STALL_S ago
    check_at(READ_AGAIN_S + STALL_S + 2)  # still not moving: reported; partition 1 has only a marker ahead
    assert store.stalled_partitions == [0]
    store.applied[0] = 8  # it moves again
    check_at(READ_AGAIN_S + STALL_S + 3)
    assert store.stalled_partitions == []
    assert crashes == []


def test_a_partition_still_stalled_after_it_was_reported_crashes_the_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    w = Watched(monkeypatch)
    for t in (-1, 0, STALL_S + 1, 2 * STALL_S + 2):
        w.check_at(t)
    assert w.store.stalled_partitions == [0] and w.crashes == []  # reported, not yet given up
    w.check_at(3 * STALL_S + 2)
    assert len(w.crashes) == 1 and isinstance(w.crashes[0], stall_watch.Stalled)
    assert "[0]" in str(w.crashes[0])


def test_a_batch_that_hangs_while_writing_does_not_blind_the_watch_but_a_replay_switch_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    w = Watched(monkeypatch)

    async def hold_writes() -> None:
        await w.writes.acquire()  # a batch stuck inside the reducer's apply holds this lock

    asyncio.run(hold_writes())
    for t in (-1, 0, STALL_S + 1, 2 * STALL_S + 2, 3 * STALL_S + 2):
        w.check_at(t)
    assert len(w.crashes) == 1, "a reducer hanging in a batch is a stall like any other"

    w = Watched(monkeypatch)

    async def switch_while_checking() -> None:
        async with w.paused:  # a replay's switch pauses writes on purpose
            for t in (-1, 0, STALL_S + 1, 2 * STALL_S + 2, 3 * STALL_S + 2):
                w.clock = 1000.0 + t
                await w.watch.check(w.log)

    asyncio.run(switch_while_checking())
    assert w.crashes == [] and w.store.stalled_partitions == []


def test_reading_a_partition_again_keeps_the_records_other_partitions_have_queued(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Resuming Faust's flow control clears the channel queue every partition shares: records
    already marked read would never be folded (a new node lost ~13 % of a log's events so)."""
    w = Watched(monkeypatch)
    w.channel.put_nowait("partition 1, offset 7")  # waiting for the agent
    for t in (-1, 0, READ_AGAIN_S + 1):
        w.check_at(t)
    assert w.consumer.seeks == [(0, 5)]
    assert w.channel.qsize() == 1


def test_with_faust_flow_control_suspended_a_partition_is_not_read_again_but_still_reported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    w = Watched(monkeypatch)
    w.flow_control.suspend()
    for t in (-1, 0, READ_AGAIN_S + 1, READ_AGAIN_S + STALL_S + 2):
        w.check_at(t)
    assert w.consumer.seeks == [] and not w.flow_control.is_active()
    assert w.store.stalled_partitions == [0]  # then the worker stops: a restart reads from the commits


def test_a_partition_whose_records_wait_in_the_queue_while_others_fold_is_not_read_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    w = Watched(monkeypatch)
    w.consumer._read_offset[TopicPartition(TOPIC, 0)] = 9  # handed to the stream, not folded yet
    for t in (-1, 0, READ_AGAIN_S + 1, READ_AGAIN_S + 3):
        w.store.events[1] += 100  # the reducer folds partition 1's records, queued before
        w.check_at(t)
    assert w.consumer.seeks == [] and w.metrics.partition_stalls == 0
    for t in (READ_AGAIN_S + 5, 2 * READ_AGAIN_S + 6):  # the reducer folds nothing any more
        w.check_at(t)
    assert w.consumer.seeks == [(0, 5)]
