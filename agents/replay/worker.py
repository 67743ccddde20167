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
:class:`WorkerPool` is the node's side: it starts the workers and keeps a job's progress.
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
from agents.replay.shadow_store import ShadowPartition, open_shadow
from flux.config import Settings
from flux.kafka.security import TLS_PROTOCOLS
from flux.model.replay import ReplayJob

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


class _Worker:
    """One worker process folding some of a job's partitions, seen from the node."""

    def __init__(self, process: asyncio.subprocess.Process, job: ReplayJob, partitions: list[int]) -> None:
        self.process = process
        self.job = job
        self.partitions = partitions
        self.last: dict[int, int] = {}  # partition -> offset after the last record folded
        self.events = 0
        self.siblings: list[_Worker] = [self]

    async def send(self, command: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(orjson.dumps(command) + b"\n")
        await self.process.stdin.drain()

    async def until(self, event: str) -> dict[str, Any]:
        """Read progress lines into the job until the line carrying ``event``."""
        assert self.process.stdout is not None
        while True:
            line = await self.process.stdout.readline()
            if not line:
                code = await self.process.wait()
                raise RuntimeError(f"a replay worker exited ({code}) before it said {event!r}")
            message = orjson.loads(line)
            if "events" in message:
                self.events = message["events"]
                self.job.events = sum(w.events for w in self.siblings)
            for p, offset in (message.get("positions") or message.get("reached") or {}).items():
                self.job.partitions[int(p)].position = offset
            self.last.update({int(p): offset for p, offset in message.get("last", {}).items()})
            if event in message:
                return dict(message)

    async def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
        await self.process.wait()


class WorkerPool:
    """The worker processes of one job, the job's partitions spread over them (one per core by default)."""

    def __init__(self, workers: list[_Worker]) -> None:
        self.workers = workers
        for worker in workers:
            worker.siblings = workers

    @classmethod
    async def start(cls, settings: Settings, job: ReplayJob, directory: Path) -> WorkerPool:
        """Start workers folding ``job``'s partitions from their start to their end into ``directory``."""
        directory.mkdir(parents=True, exist_ok=True)
        partitions = sorted(job.partitions)
        count = min(settings.replay_workers or os.cpu_count() or 1, len(partitions))
        pool = cls([])
        try:
            for share in (partitions[k::count] for k in range(count)):
                process = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "agents.replay.worker",
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    limit=1 << 20,
                    start_new_session=True,  # a Ctrl-C meant for the node does not reach it
                )
                pool.workers.append(_Worker(process, job, share))
                spec = {
                    "settings": settings.in_clear(),  # model_dump would mask the secrets
                    "dir": str(directory),
                    "partitions": {str(p): [job.partitions[p].start, job.partitions[p].end] for p in share},
                }
                await pool.workers[-1].send(spec)
        except BaseException:
            await pool.kill()
            raise
        return cls(pool.workers)

    async def reached(self) -> None:
        """Wait until every worker folded its partitions up to their ends."""
        await asyncio.gather(*(w.until("reached") for w in self.workers))

    async def fold_to(self, ends: dict[int, int]) -> None:
        """Fold every partition further, up to ``ends``."""
        for worker in self.workers:
            for p in worker.partitions:
                worker.job.partitions[p].end = max(worker.job.partitions[p].start, ends[p])
            await worker.send({"ends": {str(p): ends[p] for p in worker.partitions}})
        await self.reached()

    async def close(self) -> None:
        """Have every worker close its stores, then end the processes."""
        for worker in self.workers:
            await worker.send({"stop": True})
        await asyncio.gather(*(w.until("closed") for w in self.workers))
        await self.kill()

    def last(self) -> dict[int, int]:
        """Per partition, the offset after the last record folded."""
        return {p: o for w in self.workers for p, o in w.last.items()}

    async def kill(self) -> None:
        """End every worker process now."""
        await asyncio.gather(*(w.kill() for w in self.workers), return_exceptions=True)


def main() -> None:
    """Read the spec from the first line of stdin and run."""
    spec = orjson.loads(sys.stdin.readline())
    if spec["settings"]["kafka_security_protocol"] in TLS_PROTOCOLS:  # see kafka_security.uses_tls
        asyncio.run(run(spec))
        return
    try:
        import uvloop

        uvloop.run(run(spec))
    except ImportError:  # pragma: no cover - uvloop is a dependency; plain asyncio works too
        asyncio.run(run(spec))


if __name__ == "__main__":
    main()
