"""Batches of a Faust stream's events, gathered as a group commit gathers writes.

Faust's ``stream.take_events(max_, within)`` yields what its buffer holds every ``within``
seconds, on a timer: an event that arrives alone waits for the next tick (up to ``within``), and
under load no batch gathers for longer than ``within``, so the per-batch costs (a RocksDB write, a
changelog batch and a change record per partition) are paid again every few milliseconds.

:func:`take_batches` starts gathering when the first event arrives and yields as soon as no
further event came for ``gap`` seconds, or the batch reached ``max_events`` events, or it has
gathered for ``within`` seconds. Idle, an event waits ``gap`` (1 ms); under load, events keep
coming and batches grow to ``within`` (measured in BENCHMARKS.md, "Small events").

Acknowledgement is Faust's: events are acked only after the loop body returns, so an offset is
never committed for an event that was not folded. The buffering follows ``take_events`` (the
stream is drained passively into a buffer that is closed while the body runs).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

GATHER_GAP_S = 0.001  # a batch is cut once no event arrived for this long


async def take_batches(
    stream: Any, max_events: int, within: float, gap: float = GATHER_GAP_S
) -> AsyncIterator[list[Any]]:
    """Yield lists of Faust events from ``stream``: see the module docstring."""
    loop = asyncio.get_running_loop()
    events: list[Any] = []
    arrived = asyncio.Event()  # set by every event added: wakes the wait for a batch's first
    room = asyncio.Event()  # clear while a full batch waits for the body
    room.set()
    consuming: asyncio.Future[None] | None = None  # set while the body runs: no event is added meanwhile

    async def add_to_batch(value: Any) -> Any:
        nonlocal consuming
        try:
            if consuming is not None:
                await consuming
            while not room.is_set():
                await room.wait()
            event = stream.current_event
            if event is None:
                raise RuntimeError("the stream has no current event")
            events.append(event)
            arrived.set()
            if len(events) >= max_events:
                room.clear()  # never more than max_events in one batch
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await stream.crash(exc)
        return value

    acks = stream.enable_acks
    stream.enable_acks = False  # acked below, after the body
    stream.add_processor(add_to_batch)
    stream._enable_passive(aiter(stream.channel))
    try:
        while not stream.should_stop:
            if not events:
                arrived.clear()
                if (await stream.wait(arrived)).stopped:
                    break
            deadline = loop.time() + within
            while len(events) < max_events:
                gathered = len(events)
                left = deadline - loop.time()
                if left <= 0:
                    break
                await asyncio.sleep(min(gap, left))  # one timer per gap, not a wake-up per event
                if len(events) == gathered:
                    break  # nothing more came: no one gains from waiting
            if not events:
                continue
            consuming = loop.create_future()
            batch = list(events)
            try:
                yield batch
            finally:
                events.clear()
                for event in batch:
                    await stream.ack(event)
                future, consuming = consuming, None
                if not future.done():
                    future.set_result(None)
                room.set()
    finally:
        stream.enable_acks = acks
        stream._processors.remove(add_to_batch)
