"""Read-your-writes bookkeeping: waiting until partitions are applied past given offsets."""

from __future__ import annotations

import asyncio

from api.live.applied import AppliedOffsets


async def test_a_wait_ends_when_every_partition_is_applied_past_its_offset():
    applied = AppliedOffsets()
    waiting = asyncio.create_task(applied.wait({0: 10, 3: 4}, timeout_s=5))
    await asyncio.sleep(0)
    applied.advance(0, 11)
    await asyncio.sleep(0)
    assert not waiting.done()
    applied.advance(3, 5)
    assert await waiting == []


async def test_a_wait_that_times_out_names_the_partitions_still_pending():
    applied = AppliedOffsets()
    applied.advance(1, 100)
    assert await applied.wait({1: 50, 2: 0}, timeout_s=0.05) == [2]


async def test_offsets_only_move_forward():
    applied = AppliedOffsets()
    applied.advance(0, 9)
    applied.advance(0, 3)
    assert applied.get(0) == 9
    assert await applied.wait({0: 8}, timeout_s=0) == []
