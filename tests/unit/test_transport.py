"""The worker's consumer thread never lets Faust drop fetched records without reading them again, and
fetches the changelog only while Faust reads it."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from aiokafka import TopicPartition

from agents.transport import ReadCommittedConsumerThread

EVENTS_0 = TopicPartition("t.events", 0)
EVENTS_1 = TopicPartition("t.events", 1)
CHANGELOG_0 = TopicPartition("t-entities-changelog", 0)
CHANGELOG_1 = TopicPartition("t-entities-changelog", 1)


class FakeAioConsumer:
    """What ``_fetch_records`` touches of an aiokafka consumer: its fetcher, assignment and seek."""

    def __init__(self, fetched: dict[Any, list[Any]], assigned: set[Any]) -> None:
        self.seeks: list[tuple[Any, int]] = []
        self._closed = False
        self._assigned = assigned
        self._fetcher = SimpleNamespace(
            _closed=False,
            _subscriptions=SimpleNamespace(fetch_context=_NoContext),
            fetched_records=self._fetched_records,
        )
        self._fetcher._records = {}
        self._answer = fetched
        self._paused: set[Any] = set()
        self.positions: dict[Any, int] = {}
        self._subscription = SimpleNamespace(
            subscription=SimpleNamespace(assignment=SimpleNamespace(state_value=self._state))
        )

    def _state(self, tp: Any) -> Any:
        return SimpleNamespace(has_valid_position=tp in self.positions, position=self.positions.get(tp))

    def paused(self) -> set[Any]:
        return set(self._paused)

    def pause(self, *tps: Any) -> None:
        self._paused.update(tps)

    def resume(self, *tps: Any) -> None:
        self._paused.difference_update(tps)

    async def _fetched_records(
        self, partitions: Any, timeout: float | None = None, max_records: int | None = None
    ) -> Any:
        return self._answer

    def assignment(self) -> set[Any]:
        return self._assigned

    def seek(self, tp: Any, offset: int) -> None:
        self.seeks.append((tp, offset))
        self._fetcher._records.pop(tp, None)


class _NoContext:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _thread(buffered: set[Any] | None = None) -> ReadCommittedConsumerThread:
    thread = ReadCommittedConsumerThread.__new__(ReadCommittedConsumerThread)
    thread.consumer = SimpleNamespace(flow_active=True, _buffered_partitions=buffered or set())  # type: ignore[assignment]
    thread.app = SimpleNamespace(tables=SimpleNamespace(changelog_topics={CHANGELOG_0.topic}))  # type: ignore[assignment]
    return thread


def _records(*offsets: int) -> list[Any]:
    return [SimpleNamespace(offset=offset) for offset in offsets]


def test_records_of_a_partition_not_active_are_held_back_and_read_again_from_the_first() -> None:
    # Recovery emptied the active set while the fetch was waiting: aiokafka answered for every partition.
    aio = FakeAioConsumer({EVENTS_0: _records(5, 6, 7), EVENTS_1: _records(3)}, {EVENTS_0, EVENTS_1})
    active = {EVENTS_1}
    got = asyncio.run(_thread()._fetch_records(aio, active, timeout=1.0))
    assert list(got) == [EVENTS_1]
    assert aio.seeks == [(EVENTS_0, 5)]


def test_records_of_active_or_buffered_partitions_pass_untouched() -> None:
    aio = FakeAioConsumer({EVENTS_0: _records(5), EVENTS_1: _records(3)}, {EVENTS_0, EVENTS_1})
    got = asyncio.run(_thread(buffered={EVENTS_0})._fetch_records(aio, {EVENTS_1}, timeout=1.0))
    assert set(got) == {EVENTS_0, EVENTS_1} and aio.seeks == []


def test_records_of_a_partition_no_longer_assigned_are_dropped_without_a_seek() -> None:
    aio = FakeAioConsumer({EVENTS_0: _records(5)}, set())
    got = asyncio.run(_thread()._fetch_records(aio, {EVENTS_1}, timeout=1.0))
    assert got == {} and aio.seeks == []


def test_changelog_partitions_faust_does_not_read_are_paused_and_their_fetched_records_dropped() -> None:
    # After recovery Faust reads only the events partitions; aiokafka had fetched the reducer's own
    # changelog writes, which would hold up every fetch from the broker until consumed.
    aio = FakeAioConsumer({}, {EVENTS_0, CHANGELOG_0, CHANGELOG_1})
    aio._fetcher._records[CHANGELOG_1] = object()
    aio.positions.update({CHANGELOG_0: 40, CHANGELOG_1: 12})
    asyncio.run(_thread()._fetch_records(aio, {EVENTS_0}, timeout=1.0))
    assert aio.paused() == {CHANGELOG_0, CHANGELOG_1}
    assert aio.seeks == [(CHANGELOG_1, 12)]  # same position: nothing skipped
    assert aio._fetcher._records == {}


def test_changelog_partitions_are_fetched_again_once_faust_reads_them() -> None:
    aio = FakeAioConsumer({}, {EVENTS_0, CHANGELOG_0, CHANGELOG_1})
    aio.pause(CHANGELOG_0, CHANGELOG_1, EVENTS_1)
    asyncio.run(_thread()._fetch_records(aio, {EVENTS_0, CHANGELOG_0}, timeout=1.0))
    assert aio.paused() == {CHANGELOG_1, EVENTS_1}  # a stream partition's pause is not ours to lift


def test_stream_partitions_faust_does_not_read_are_not_paused() -> None:
    aio = FakeAioConsumer({}, {EVENTS_0, EVENTS_1, CHANGELOG_0})
    asyncio.run(_thread()._fetch_records(aio, {EVENTS_0, CHANGELOG_0}, timeout=1.0))
    assert aio.paused() == set() and aio.seeks == []
