"""Read-your-writes: waiting until the reducer has applied given events-topic offsets.

The change feed reports, per partition, the offset up to which state is written (``applied``,
see :mod:`flux.model.changes`). A publish knows where its events landed; ``?wait=true`` waits here
until every partition it wrote to has been applied past those offsets.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools

from flux.kafka.publisher import Offsets


class AppliedOffsets:
    """Per partition, the events-topic offset the state is written up to, and who waits for it."""

    def __init__(self) -> None:
        self._applied: dict[int, int] = {}
        self._waiters: dict[int, list[tuple[int, int, asyncio.Future[None]]]] = {}
        self._order = itertools.count()

    def get(self, partition: int) -> int:
        """The offset ``partition`` is applied up to (exclusive), -1 if nothing was reported yet."""
        return self._applied.get(partition, -1)

    def advance(self, partition: int, applied: int) -> None:
        """Record that ``partition`` is applied up to ``applied`` (exclusive); wake who waited for it."""
        if applied <= self._applied.get(partition, -1):
            return
        self._applied[partition] = applied
        waiting = self._waiters.get(partition)
        while waiting and waiting[0][0] < applied:
            _, _, future = heapq.heappop(waiting)
            if not future.done():
                future.set_result(None)

    def pending(self, offsets: Offsets) -> list[int]:
        """The partitions of ``offsets`` not yet applied past their offset."""
        return [p for p, offset in offsets.items() if self._applied.get(p, -1) <= offset]

    async def wait(self, offsets: Offsets, timeout_s: float) -> list[int]:
        """Wait until every ``partition: offset`` is applied; returns the partitions still pending."""
        loop = asyncio.get_running_loop()
        futures = []
        for partition in self.pending(offsets):
            future: asyncio.Future[None] = loop.create_future()
            heapq.heappush(self._waiters.setdefault(partition, []), (offsets[partition], next(self._order), future))
            futures.append(future)
        if futures:
            _, not_done = await asyncio.wait(futures, timeout=timeout_s)
            for future in not_done:
                future.cancel()
        return self.pending(offsets)
