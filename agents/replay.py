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
import os
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
from flux.reducer import State, diff_states, exists, new_state, to_entity
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
SWITCH_FOLD_TIMEOUT_S = 30.0  # the longest live writes wait for the last records to be folded
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
    """One child process folding some of a job's partitions, and the JSON lines it exchanges."""

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
                return message

    async def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
        await self.process.wait()


class _Workers:
    """The child processes of one job: the job's partitions spread over them."""

    def __init__(self, workers: list[_Worker]) -> None:
        self.workers = workers
        for worker in workers:
            worker.siblings = workers

    async def reached(self) -> None:
        await asyncio.gather(*(w.until("reached") for w in self.workers))

    async def fold_to(self, ends: dict[int, int]) -> None:
        """Fold every partition up to ``ends`` (each worker its own partitions)."""
        for worker in self.workers:
            for p in worker.partitions:
                worker.job.partitions[p].end = max(worker.job.partitions[p].start, ends[p])
            await worker.send({"ends": {str(p): ends[p] for p in worker.partitions}})
        await self.reached()

    async def close(self) -> None:
        """Have every worker close its stores (it exits on its own afterwards)."""
        for worker in self.workers:
            await worker.send({"stop": True})
        await asyncio.gather(*(w.until("closed") for w in self.workers))

    def last(self) -> dict[int, int]:
        return {p: o for w in self.workers for p, o in w.last.items()}

    async def kill(self) -> None:
        await asyncio.gather(*(w.kill() for w in self.workers), return_exceptions=True)


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
        served = self._store.active_partitions() if self._store.recovered() else []
        if not served:
            raise PartitionUnavailable(-1)
        partitions = served
        if replay_range.from_offsets is not None:
            foreign = sorted(set(replay_range.from_offsets) - set(served))
            if foreign:
                raise InvalidReplay(
                    f"partition(s) {', '.join(map(str, foreign))} not served by this node "
                    f"(it serves {', '.join(map(str, served))}; the events topic has {self._settings.partitions})"
                )
            partitions = sorted(replay_range.from_offsets)
        job = ReplayJob(uuid.uuid4().hex[:16], replay_range)
        self._jobs[job.job_id] = job
        for old in [j for j in self._jobs.values() if j.status in FINISHED][:-KEEP_JOBS]:
            del self._jobs[old.job_id]
            self._tasks.pop(old.job_id, None)
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
        """Cancel running jobs (the live table stays as it is); a switch in progress is finished first."""
        for job_id, task in self._tasks.items():
            if self._jobs[job_id].status != SWITCHING:
                task.cancel()
            with contextlib.suppress(BaseException):
                await task

    # -- a job ----------------------------------------------------------------------------
    async def _run(self, job: ReplayJob, partitions: list[int]) -> None:
        directory = self._root / job.job_id
        workers: _Workers | None = None
        rebalances = self._store.rebalances
        try:
            starts, stops = await self._bounds(job.range, partitions)
            live = await self._live_positions(partitions)
            ends = stops if stops is not None else live
            job.partitions = {p: PartitionProgress(starts[p], starts[p], max(starts[p], ends[p])) for p in partitions}
            log.warning("replay %s: %s over partitions %s", job.job_id, job.range.public(), partitions)
            workers = await self._spawn(job, directory)
            await workers.reached()
            job.folded = time.time()
            if stops is None:
                await self._catch_up(job, workers, partitions)
            else:
                await self._wait_for_live(job, workers.last(), partitions)
            committed = await self._committed(partitions)  # read before pausing: it is a broker round trip
            paused = time.monotonic()
            async with self._reducer.paused():
                positions = self._positions(partitions, committed)
                async with asyncio.timeout(SWITCH_FOLD_TIMEOUT_S):  # on expiry the job fails, writes resume
                    if stops is None:
                        await workers.fold_to(positions)
                    await workers.close()
                if self._store.rebalances != rebalances:
                    raise RuntimeError("a rebalance happened during the replay; run it again")
                job.status = SWITCHING
                switch = asyncio.create_task(self._switch(positions, directory, rebalances))
                try:
                    report = await asyncio.shield(switch)
                except asyncio.CancelledError:
                    report = await switch  # never resume writes in the middle of a switch
                    raise
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
            if workers is not None:
                await workers.kill()
            shutil.rmtree(directory, ignore_errors=True)
            job.finished = time.time()

    async def _spawn(self, job: ReplayJob, directory: Path) -> _Workers:
        """Start the worker processes, each with a share of the job's partitions."""
        directory.mkdir(parents=True, exist_ok=True)
        count = self._settings.replay_workers or os.cpu_count() or 1
        partitions = sorted(job.partitions)
        shares = [partitions[k :: min(count, len(partitions))] for k in range(min(count, len(partitions)))]
        workers = []
        for share in shares:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "agents.replay_worker",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                limit=1 << 20,
                start_new_session=True,  # a Ctrl-C meant for the node does not reach it
            )
            worker = _Worker(process, job, share)
            workers.append(worker)
            await worker.send(
                {
                    "settings": self._settings.model_dump(mode="json"),
                    "dir": str(directory),
                    "partitions": {str(p): [job.partitions[p].start, job.partitions[p].end] for p in share},
                }
            )
        return _Workers(workers)

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

    async def _committed(self, partitions: list[int]) -> dict[int, int]:
        """The group's committed offsets of the partitions the reducer has not folded since this node started."""
        unknown = [p for p in partitions if self._store.applied_offset(p) < 0]
        found = await committed_offsets(self._settings, unknown) if unknown else {}
        return {p: found.get(p, 0) for p in unknown}

    def _positions(self, partitions: list[int], committed: dict[int, int]) -> dict[int, int]:
        """The events-topic offset each partition's live table holds the events up to."""
        positions = {p: self._store.applied_offset(p) for p in partitions}
        return {p: committed.get(p, 0) if offset < 0 else offset for p, offset in positions.items()}

    async def _live_positions(self, partitions: list[int]) -> dict[int, int]:
        return self._positions(partitions, await self._committed(partitions))

    async def _catch_up(self, job: ReplayJob, workers: _Workers, partitions: list[int]) -> None:
        """Let the new generation follow the live table until it is less than :data:`SWITCH_LAG` behind."""
        job.status = CATCHING_UP
        while True:
            live = await self._live_positions(partitions)
            if sum(max(0, live[p] - job.partitions[p].position) for p in partitions) <= SWITCH_LAG:
                return
            await workers.fold_to(live)

    async def _wait_for_live(self, job: ReplayJob, folded: dict[int, int], partitions: list[int]) -> None:
        """A rollback switches once the live table has folded every record the new generation holds."""
        job.status = CATCHING_UP
        deadline = time.monotonic() + LIVE_WAIT_S
        while True:
            live = await self._live_positions(partitions)
            if all(live[p] >= folded.get(p, 0) for p in partitions):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the live table did not reach the replay's end within {LIVE_WAIT_S:.0f} s")
            await asyncio.sleep(0.1)

    async def _switch(self, positions: dict[int, int], directory: Path, rebalances: int) -> SwitchReport:
        """Make the live table equal to the new generation, one partition (one WriteBatch) at a time;
        ``positions`` are the offsets both generations hold the events up to."""
        report = SwitchReport()
        for partition, offset in positions.items():
            if self._store.rebalances != rebalances or partition not in self._store.active_partitions():
                raise RuntimeError(f"partition {partition} moved during the switch; run the replay again")
            shadow = open_shadow(directory / f"p{partition}")
            try:
                await self._switch_partition(partition, offset, shadow, report)
            finally:
                shadow.close()
        await self._store.commit_source_offsets()  # a restart must not fold again what the switch replaced
        return report

    async def _switch_partition(
        self, partition: int, offset: int, shadow: rocksdict.Rdict, report: SwitchReport
    ) -> None:
        store = self._store
        live = store.db(partition)
        changed: dict[bytes, tuple[bytes, int]] = {}
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
            if old == new or (new is None and old == new_state()):
                continue
            entity_id = key.decode()
            report.changed += 1
            report.removed += int(exists(old) and not exists(new))
            # an entity the new generation lacks keeps a stamped empty state: its marks stay valid
            changed[key] = (stamped(new or new_state(), offset), int(exists(new)) - int(exists(old)))
            ops = encode_ops(diff_states(old, new, now_ms))
            if ops:
                feed.append(EntityChange(entity_id, offset, ops, to_entity(entity_id, new)))
        events = shadow_events(shadow) - store.partition_events(partition)
        stats = await store.write(partition, changed, offset, events)
        report.entities += stats.entities
        if changed or events:
            await self._feed.publish(ChangeRecord(partition, offset, stats.events, stats.entities, [], feed))
