"""The reducer's batches: cut when events stop coming, bounded in size and time, acked after the fold."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any

from agents.batches import take_batches


class FakeChannel(asyncio.Queue[Any]):
    """A Faust channel as far as the stream's passive drainer goes: values in order."""

    def __aiter__(self) -> FakeChannel:
        return self

    async def __anext__(self) -> Any:
        return await self.get()


class FakeStream:
    """What :func:`take_batches` uses of a Faust stream: processors run on each value drained from
    its channel, with the value's event as ``current_event``; acks recorded."""

    def __init__(self) -> None:
        self.channel = FakeChannel()
        self.enable_acks = True
        self.should_stop = False
        self.current_event: Any = None
        self.acked: list[Any] = []
        self._processors: list[Callable[[Any], Awaitable[Any]]] = []
        self._drainer: asyncio.Task[None] | None = None

    def add_processor(self, processor: Callable[[Any], Awaitable[Any]]) -> None:
        self._processors.append(processor)

    def _enable_passive(self, channel: Any) -> None:
        self._drainer = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        while True:
            value = await self.channel.get()
            self.current_event = value
            for processor in self._processors:
                await processor(value)
            self.current_event = None

    async def wait(self, event: asyncio.Event) -> Any:
        await event.wait()
        return SimpleNamespace(stopped=self.should_stop)

    async def ack(self, event: Any) -> None:
        self.acked.append(event)

    async def crash(self, exc: BaseException) -> None:
        raise AssertionError(f"the stream crashed: {exc!r}")


async def _collect(stream: FakeStream, batches: int, **options: Any) -> list[tuple[float, list[Any]]]:
    got: list[tuple[float, list[Any]]] = []
    async for batch in take_batches(stream, **options):
        got.append((time.monotonic(), batch))
        if len(got) == batches:
            break
    return got


def test_a_lone_event_is_folded_after_the_gap_not_after_the_longest_gathering() -> None:
    async def main() -> None:
        stream = FakeStream()
        collecting = asyncio.create_task(_collect(stream, 1, max_events=100, within=2.0, gap=0.001))
        await asyncio.sleep(0.01)
        sent = time.monotonic()
        stream.channel.put_nowait("e1")
        [(at, batch)] = await asyncio.wait_for(collecting, 1.0)
        assert batch == ["e1"]
        assert at - sent < 0.2  # the gathering could have gone on for 2 s

    asyncio.run(main())


def test_events_that_keep_coming_gather_into_one_batch_until_the_longest_gathering() -> None:
    async def main() -> None:
        stream = FakeStream()
        collecting = asyncio.create_task(_collect(stream, 2, max_events=10_000, within=0.05, gap=0.02))
        for i in range(40):  # one event every 5 ms for 200 ms: never a 20 ms gap
            stream.channel.put_nowait(i)
            await asyncio.sleep(0.005)
        (_, first), (_, second) = await asyncio.wait_for(collecting, 1.0)
        assert 3 <= len(first) <= 15  # ~50 ms worth of events, not one
        assert second[0] == first[-1] + 1  # in order, none lost between batches

    asyncio.run(main())


def test_no_batch_holds_more_than_max_events() -> None:
    async def main() -> None:
        stream = FakeStream()
        for i in range(25):
            stream.channel.put_nowait(i)
        got = await asyncio.wait_for(_collect(stream, 3, max_events=10, within=0.05), 1.0)
        assert [batch for _, batch in got] == [list(range(10)), list(range(10, 20)), list(range(20, 25))]

    asyncio.run(main())


def test_events_are_acked_only_after_the_body_and_none_join_a_batch_being_folded() -> None:
    async def main() -> None:
        stream = FakeStream()
        stream.channel.put_nowait("a")
        batches = take_batches(stream, max_events=100, within=0.05)
        first = await batches.__anext__()
        assert first == ["a"] and stream.acked == [] and stream.enable_acks is False
        stream.channel.put_nowait("b")  # arrives while the body folds "a"
        await asyncio.sleep(0.01)
        assert first == ["a"]
        second = await batches.__anext__()
        assert stream.acked == ["a"] and second == ["b"]
        await batches.aclose()
        assert stream.acked == ["a", "b"] and stream.enable_acks is True and stream._processors == []

    asyncio.run(main())
