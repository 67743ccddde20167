"""The replay worker: a child process of a Flux node that folds events-topic ranges into a new generation.

Folding runs here, on its own core, so that the node keeps serving reads and folding live events
while a replay runs. The node talks to it in JSON lines::

    node -> worker (stdin):  {"settings": {...}, "dir": "...", "partitions": {"0": [start, end], ...}}
                             {"ends": {"0": end, ...}}     fold further, up to these offsets
                             {"stop": true}                close the stores and exit
    worker -> node (stdout): {"positions": {"0": offset, ...}, "events": n}   progress, a few times a second
                             {"reached": {"0": offset, ...}, "last": {"0": offset, ...}, "events": n}
                                 every partition is at its end; "last" is the offset after the
                                 last record folded (before transaction markers), or the start
                             {"closed": true}                              the stores are closed

The worker exits when its stdin closes or its parent dies, so a killed node leaves no orphan.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

import orjson
from aiokafka import TopicPartition

from agents.log_reader import log_consumer
from agents.shadow_store import ShadowPartition, open_shadow
from flux.config import Settings

PROGRESS_EVERY_S = 0.25
MAX_RECORDS_PER_FETCH = 20_000


def _say(message: dict[str, Any]) -> None:
    sys.stdout.write(orjson.dumps(message).decode() + "\n")
    sys.stdout.flush()


def _by_partition(offsets: dict[int, int]) -> dict[str, int]:
    return {str(p): o for p, o in offsets.items()}


async def _read_command() -> dict[str, Any] | None:
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    return orjson.loads(line) if line.strip() else None


async def run(spec: dict[str, Any]) -> None:
    """Fold the spec's partitions from their start up to their end, then follow the node's commands."""
    settings = Settings(**spec["settings"])
    parent = os.getppid()
    bounds = {int(p): (int(start), int(end)) for p, (start, end) in spec["partitions"].items()}
    topics = {p: TopicPartition(settings.events_topic, p) for p in bounds}
    shadows = {p: ShadowPartition(open_shadow(Path(spec["dir"]) / f"p{p}"), settings) for p in bounds}
    positions = {p: start for p, (start, _) in bounds.items()}
    last = dict(positions)
    ends = {p: max(start, end) for p, (start, end) in bounds.items()}
    consumer = log_consumer(settings, "replay")
    await consumer.start()
    try:
        consumer.assign(list(topics.values()))
        for p, start in positions.items():
            consumer.seek(topics[p], start)
        events = 0
        reported = 0.0
        while os.getppid() == parent:
            behind = [topics[p] for p in topics if positions[p] < ends[p]]
            if not behind:
                _say({"reached": _by_partition(positions), "last": _by_partition(last), "events": events})
                command = await _read_command()
                if command is None or command.get("stop"):
                    break
                ends.update({int(p): max(positions[int(p)], int(e)) for p, e in command["ends"].items()})
                continue
            consumer.pause(*[topics[p] for p in topics if positions[p] >= ends[p]])
            consumer.resume(*behind)
            fetched = await consumer.getmany(*behind, timeout_ms=200, max_records=MAX_RECORDS_PER_FETCH)
            for tp in behind:
                p = tp.partition
                messages = fetched.get(tp, [])
                within = [m for m in messages if m.offset < ends[p]]
                if within:
                    events += shadows[p].fold(within)
                    last[p] = within[-1].offset + 1
                if len(within) < len(messages):  # read past the end: come back to it if the end moves
                    consumer.seek(tp, ends[p])
                    positions[p] = ends[p]
                elif messages:
                    positions[p] = messages[-1].offset + 1
                else:  # nothing fetched: the position may be past transaction markers
                    positions[p] = min(ends[p], max(positions[p], await consumer.position(tp)))
            now = time.monotonic()
            if now - reported >= PROGRESS_EVERY_S:
                reported = now
                _say({"positions": _by_partition(positions), "events": events})
    finally:
        for shadow in shadows.values():
            shadow.db.close()
        _say({"closed": True})  # the node may open the stores now, before the consumer is down
        await consumer.stop()


def main() -> None:
    """Read the spec from the first line of stdin and run."""
    spec = orjson.loads(sys.stdin.readline())
    try:
        import uvloop

        uvloop.run(run(spec))
    except ImportError:  # pragma: no cover - uvloop is a dependency; plain asyncio works too
        asyncio.run(run(spec))


if __name__ == "__main__":
    main()
