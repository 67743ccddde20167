"""Replay jobs: re-derive the entity table from the events topic, then switch over to the result.

A job folds its range of the log (:mod:`flux.replay`) into a new generation in a child process
(:mod:`agents.replay_worker`, on its own core) while the live table keeps serving reads and
folding live events. The new generation follows the live table's position (each partition's
applied offset) until it is close behind; then the reducer pauses, the last records are folded
so that both generations hold exactly the same offsets, and each partition switches in one
RocksDB write: entities whose state differs are written through the live table's changelog
(removed ones as tombstones), stamped with the switch's offset, and announced on the change feed.
Entities that are equal are not touched, so replaying an unchanged log writes nothing.

With ``to`` the new generation stops at the last record before that time and the switch waits
for the live table to have passed it: a rollback of state to that time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import rocksdict
from aiokafka import TopicPartition

from agents.change_feed import ChangeFeed
from agents.entity_store import EntityStore, decode_state
from agents.log_reader import committed_offsets, log_consumer
from agents.reducer_agent import BatchReducer
from agents.shadow_store import open_shadow, shadow_events
from flux.changes import ChangeRecord, EntityChange, encode_ops
from flux.config import Settings
from flux.reducer import State, diff_states, exists, to_entity
from flux.replay import (
    CANCELLED,
    CATCHING_UP,
    DONE,
    FAILED,
    FINISHED,
    FROM_BEGINNING,
    FROM_OFFSETS,
    SWITCHING,
    InvalidReplay,
    PartitionProgress,
    ReplayBusy,
    ReplayJob,
    ReplayRange,
    SwitchReport,
)
from flux.state import PartitionUnavailable

log = logging.getLogger(__name__)

SWITCH_LAG = 5_000  # records the new generation may be behind when the reducer pauses for the switch
LIVE_WAIT_S = 120.0  # how long a rollback waits for the live table to pass its end
KEEP_JOBS = 20
YIELD_EVERY_KEYS = 2_000


class ReplayCancelled(Exception):
    """The job was cancelled."""


def unstamped(raw: bytes) -> bytes:
    """A stored state without its trailing ``"o"`` stamp (the key the reducer always writes last)."""
    cut = raw.rfind(b',"o":')
    if cut > 0 and raw.endswith(b"}") and raw[cut + 5 : -1].lstrip(b"-").isdigit():
        return raw[:cut] + b"}"
    return raw


def stamped(state: State, offset: int) -> bytes:
    """The stored form of ``state`` as written by a batch that reached ``offset``."""
    state.pop("o", None)
    state["o"] = offset
    return orjson.dumps(state)


def _joined(
    live: Iterator[tuple[bytes, bytes]], shadow: Iterator[tuple[bytes, bytes]]
) -> Iterator[tuple[bytes, bytes | None, bytes | None]]:
    """(key, live value, new value) over the union of two key-ordered streams."""
    a, b = next(live, None), next(shadow, None)
    while a is not None or b is not None:
        if b is None or (a is not None and a[0] < b[0]):
            assert a is not None
            yield a[0], a[1], None
            a = next(live, None)
        elif a is None or b[0] < a[0]:
            yield b[0], None, b[1]
            b = next(shadow, None)
        else:
            yield a[0], a[1], b[1]
            a, b = next(live, None), next(shadow, None)


class _Worker:
    """The child process folding one job, and the JSON lines it exchanges with it."""

    def __init__(self, process: asyncio.subprocess.Process, job: ReplayJob) -> None:
        self.process = process
        self.job = job

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
                raise RuntimeError(f"the replay worker exited ({code}) before {event}")
            message = orjson.loads(line)
            self.job.events = message.get("events", self.job.events)
            for p, offset in (message.get("positions") or message.get("reached") or {}).items():
                self.job.partitions[int(p)].position = offset
            if event in message:
                return message

    async def fold_to(self, ends: dict[int, int]) -> None:
        for p, end in ends.items():
            self.job.partitions[p].end = max(self.job.partitions[p].start, end)
        await self.send({"ends": {str(p): end for p, end in ends.items()}})
        await self.until("reached")

    async def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()


class ReplayJobs:
    """The node's replay jobs (one at a time); implements :class:`flux.replay.Replays`."""

    def __init__(self, settings: Settings, store: EntityStore, reducer: BatchReducer, feed: ChangeFeed) -> None:
        self._settings = settings
        self._store = store
        self._reducer = reducer
        self._feed = feed
        self._jobs: dict[str, ReplayJob] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._root = settings.data_dir / "replay"
        shutil.rmtree(self._root, ignore_errors=True)  # generations of jobs a stop cut short

    # -- the Replays interface ---------------------------------------------------------
    def start(self, replay_range: ReplayRange) -> ReplayJob:
        """Start a job over the partitions this node serves (or those ``fromOffsets`` names)."""
        if any(job.status not in FINISHED for job in self._jobs.values()):
            raise ReplayBusy("a replay is already running on this node")
        if not self._store.recovered():
            raise PartitionUnavailable(-1)
        served = self._store.active_partitions()
        partitions = served
        if replay_range.from_offsets is not None:
            foreign = sorted(set(replay_range.from_offsets) - set(served))
            if foreign:
                raise InvalidReplay(
                    f"partition(s) {', '.join(map(str, foreign))} not served by this node "
                    f"(it serves {', '.join(map(str, served)) or 'none'}; the events topic has "
                    f"{self._settings.partitions})"
                )
            partitions = sorted(replay_range.from_offsets)
        job = ReplayJob(uuid.uuid4().hex[:16], replay_range)
        self._jobs[job.job_id] = job
        for old in [j for j in self._jobs.values() if j.status in FINISHED][:-KEEP_JOBS]:
            del self._jobs[old.job_id]
        self._tasks[job.job_id] = asyncio.create_task(self._run(job, partitions), name=f"flux-replay-{job.job_id}")
        return job

    def get(self, job_id: str) -> ReplayJob | None:
        """A job by id."""
        return self._jobs.get(job_id)

    def all(self) -> list[ReplayJob]:
        """Jobs since this node started, newest first."""
        return sorted(self._jobs.values(), key=lambda job: job.started, reverse=True)

    async def cancel(self, job_id: str) -> ReplayJob | None:
        """Cancel a job before its switch (raises :class:`ReplayBusy` during the switch)."""
        job = self._jobs.get(job_id)
        task = self._tasks.get(job_id)
        if job is None or task is None or job.status in FINISHED:
            return job
        if job.status == SWITCHING:
            raise ReplayBusy("the job is switching to the new generation; it cannot be cancelled now")
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        return job

    async def stop(self) -> None:
        """Cancel every running job (the live table stays as it is)."""
        for task in self._tasks.values():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task

    # -- a job ----------------------------------------------------------------------------
    async def _run(self, job: ReplayJob, partitions: list[int]) -> None:
        directory = self._root / job.job_id
        worker: _Worker | None = None
        try:
            starts, stops = await self._bounds(job.range, partitions)
            live = await self._live_positions(partitions)
            ends = stops if stops is not None else live
            job.partitions = {p: PartitionProgress(starts[p], starts[p], max(starts[p], ends[p])) for p in partitions}
            log.warning("replay %s: %s over partitions %s", job.job_id, job.range.public(), partitions)
            worker = await self._spawn(job, directory)
            await worker.until("reached")
            if stops is None:
                await self._catch_up(job, worker, partitions)
            else:
                await self._wait_for_live(job, partitions)
            job.status = SWITCHING
            paused = time.monotonic()
            async with self._reducer.paused():
                positions = await self._live_positions(partitions)
                if stops is None:
                    await worker.fold_to(positions)
                await worker.send({"stop": True})
                await worker.until("closed")
                await worker.process.wait()
                report = await self._switch(positions, directory)
            report.pause_ms = (time.monotonic() - paused) * 1000
            job.report = report
            job.status = DONE
            log.warning("replay %s done: %s", job.job_id, job.public()["report"])
        except asyncio.CancelledError:
            job.status = CANCELLED
            log.warning("replay %s cancelled; the current generation stays", job.job_id)
        except Exception as exc:
            job.status = FAILED
            job.error = str(exc) or repr(exc)
            log.exception("replay %s failed; the current generation stays", job.job_id)
        finally:
            if worker is not None:
                await worker.kill()
            shutil.rmtree(directory, ignore_errors=True)
            job.finished = time.time()

    async def _spawn(self, job: ReplayJob, directory: Path) -> _Worker:
        directory.mkdir(parents=True, exist_ok=True)
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "agents.replay_worker",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=1 << 20,
        )
        worker = _Worker(process, job)
        await worker.send(
            {
                "settings": self._settings.model_dump(mode="json"),
                "dir": str(directory),
                "partitions": {str(p): [b.start, b.end] for p, b in job.partitions.items()},
            }
        )
        return worker

    async def _bounds(
        self, replay_range: ReplayRange, partitions: list[int]
    ) -> tuple[dict[int, int], dict[int, int] | None]:
        """Each partition's first offset, and its end when the range ends at a time (else None)."""
        topic = self._settings.events_topic
        tps = {p: TopicPartition(topic, p) for p in partitions}
        consumer = log_consumer(self._settings, "replay-bounds")
        await consumer.start()
        try:
            first = await consumer.beginning_offsets(list(tps.values()))
            last = await consumer.end_offsets(list(tps.values()))

            async def at(unix_ms: int) -> dict[int, int]:
                found = await consumer.offsets_for_times({tp: unix_ms for tp in tps.values()})
                return {p: last[tp] if found.get(tp) is None else found[tp].offset for p, tp in tps.items()}

            if replay_range.start == FROM_BEGINNING:
                starts = {p: first[tp] for p, tp in tps.items()}
            elif replay_range.start == FROM_OFFSETS:
                assert replay_range.from_offsets is not None
                starts = {p: max(first[tps[p]], min(o, last[tps[p]])) for p, o in replay_range.from_offsets.items()}
            else:
                assert replay_range.from_timestamp is not None
                starts = await at(replay_range.from_timestamp)
            stops = None if replay_range.to_timestamp is None else await at(replay_range.to_timestamp + 1)
            return starts, stops
        finally:
            await consumer.stop()

    async def _live_positions(self, partitions: list[int]) -> dict[int, int]:
        """The events-topic offset each partition's live table holds events up to."""
        positions = {p: self._store.applied_offset(p) for p in partitions}
        unknown = [p for p, offset in positions.items() if offset < 0]
        if unknown:  # nothing folded since this node started: the table is where the group committed
            committed = await committed_offsets(self._settings, unknown)
            positions.update({p: committed.get(p, 0) for p in unknown})
        return positions

    async def _catch_up(self, job: ReplayJob, worker: _Worker, partitions: list[int]) -> None:
        """Let the new generation follow the live table until it is less than :data:`SWITCH_LAG` behind."""
        job.status = CATCHING_UP
        while True:
            live = await self._live_positions(partitions)
            if sum(max(0, live[p] - job.partitions[p].position) for p in partitions) <= SWITCH_LAG:
                return
            await worker.fold_to(live)

    async def _wait_for_live(self, job: ReplayJob, partitions: list[int]) -> None:
        """A rollback switches once the live table has folded at least up to the rollback's end."""
        deadline = time.monotonic() + LIVE_WAIT_S
        while True:
            live = await self._live_positions(partitions)
            if all(live[p] >= job.partitions[p].end for p in partitions):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the live table did not reach the replay's end within {LIVE_WAIT_S:.0f} s")
            await asyncio.sleep(0.1)

    async def _switch(self, positions: dict[int, int], directory: Path) -> SwitchReport:
        """Make the live table equal to the new generation, one partition (one WriteBatch) at a time;
        ``positions`` are the offsets both generations hold the events up to."""
        if not self._store.recovered() or not set(positions) <= set(self._store.active_partitions()):
            raise RuntimeError("partitions moved to another node during the replay; run it again")
        report = SwitchReport()
        for partition, offset in positions.items():
            shadow = open_shadow(directory / f"p{partition}")
            try:
                await self._switch_partition(partition, offset, shadow, report)
            finally:
                shadow.close()
        return report

    async def _switch_partition(
        self, partition: int, offset: int, shadow: rocksdict.Rdict, report: SwitchReport
    ) -> None:
        store = self._store
        live = store.db(partition)
        changed: dict[bytes, tuple[bytes | None, int]] = {}
        feed: list[EntityChange] = []
        now_ms = int(time.time() * 1000)
        pairs = _joined(store.iter_partition(live, b""), store.iter_partition(shadow, b""))
        for index, (key, old_raw, new_raw) in enumerate(pairs):
            if index % YIELD_EVERY_KEYS == YIELD_EVERY_KEYS - 1:
                await asyncio.sleep(0)  # reads go on during a long comparison
            if old_raw is not None and new_raw is not None and unstamped(old_raw) == new_raw:
                continue
            old = None if old_raw is None else decode_state(old_raw)
            new = None if new_raw is None else decode_state(new_raw)
            if old is not None:
                old.pop("o", None)
            if old == new:
                continue
            entity_id = key.decode()
            report.changed += 1
            report.removed += int(new is None)
            changed[key] = (None if new is None else stamped(new, offset), int(exists(new)) - int(exists(old)))
            ops = encode_ops(diff_states(old, new, now_ms))
            if ops:
                feed.append(EntityChange(entity_id, offset, ops, to_entity(entity_id, new)))
        events = shadow_events(shadow) - store.partition_events(partition)
        stats = await store.write(partition, changed, offset, events)
        report.entities += stats.entities
        if feed:
            await self._feed.publish(ChangeRecord(partition, offset, stats.events, stats.entities, [], feed))
