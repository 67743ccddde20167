"""Replay jobs: re-derive the entity table from the events topic, then switch over to the result.

A job folds its range of the log (:mod:`flux.model.replay`) into a new generation in worker processes
(:mod:`agents.replay.worker`, one per core) while the live table keeps serving reads and folding
live events. The new generation follows the live table's position (each partition's applied
offset) until a round of catching up is short (:data:`SHORT_ROUND_S`); then the workers stop and the
new generation is compared with the live table and switched in (:mod:`agents.replay.switch`),
with the reducer paused only for the last records and the entities that differ. Entities that
are equal are not touched, so replaying an unchanged log writes nothing.

With ``to`` the new generation stops at the last record before that time and the switch waits
until the live table has folded that record: a rollback of state to that time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
import uuid

from aiokafka import TopicPartition

from agents.change_feed import ChangeFeed
from agents.log_reader import log_consumer
from agents.reducer_agent import BatchReducer
from agents.replay.switch import GenerationSwitch
from agents.replay.worker import WorkerPool
from agents.table.store import EntityStore
from flux.config import Settings
from flux.model.replay import (
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
)
from flux.model.state import PartitionUnavailable

log = logging.getLogger(__name__)

SWITCH_LAG = 100  # records behind the live table at which the new generation is caught up for sure
SHORT_ROUND_S = 0.25  # a round of catching up this short leaves a tail that is quick to fold while paused
MAX_ROUNDS = 20
LIVE_WAIT_S = 120.0  # how long a rollback waits for the live table to pass its end
SWITCH_FOLD_TIMEOUT_S = 30.0  # the longest live writes wait for the last records to be folded
KEEP_JOBS = 20


class ReplayJobs:
    """The node's replay jobs (one at a time); implements :class:`flux.model.replay.Replays`."""

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
        workers: WorkerPool | None = None
        switch: GenerationSwitch | None = None
        rebalances = self._store.rebalances
        try:
            starts, stops = await self._bounds(job.range, partitions)
            live = await self._live_positions(partitions)
            ends = stops if stops is not None else live
            job.partitions = {p: PartitionProgress(starts[p], starts[p], max(starts[p], ends[p])) for p in partitions}
            log.warning("replay %s: %s over partitions %s", job.job_id, job.range.public(), partitions)
            workers = await WorkerPool.start(self._settings, job, directory)
            await workers.reached()
            job.folded = time.time()
            if stops is None:
                await self._catch_up(job, workers, partitions)
            else:
                await self._wait_for_live(job, workers.last(), partitions)
            await workers.close()
            switch = GenerationSwitch(self._settings, self._store, self._feed, directory)
            await switch.compare(partitions)
            reached = {p: job.partitions[p].position for p in partitions}
            if stops is None:
                await switch.open_tail(reached)
            await self._live_positions(partitions)  # before pausing: any committed offset read is cached
            paused = time.monotonic()
            async with self._reducer.paused():
                positions = await self._live_positions(partitions)
                if stops is None:
                    for p, end in positions.items():
                        job.partitions[p].end = max(job.partitions[p].start, end)
                    async with asyncio.timeout(SWITCH_FOLD_TIMEOUT_S):  # on expiry the job fails, writes resume
                        job.events += await switch.fold_tail(positions)
                    for p, end in positions.items():
                        job.partitions[p].position = max(job.partitions[p].position, end)
                if self._store.rebalances != rebalances:
                    raise RuntimeError("a rebalance happened during the replay; run it again")
                job.status = SWITCHING
                applying = asyncio.create_task(switch.apply(positions, rebalances))
                try:
                    report = await asyncio.shield(applying)
                except asyncio.CancelledError:
                    report = await applying  # never resume writes in the middle of a switch
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
            if switch is not None:
                await switch.close()
            shutil.rmtree(directory, ignore_errors=True)
            job.finished = time.time()

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
        return await self._store.positions(partitions)

    async def _catch_up(self, job: ReplayJob, workers: WorkerPool, partitions: list[int]) -> None:
        """Let the new generation follow the live table until what is left to fold is small: fewer
        than :data:`SWITCH_LAG` records, or what arrived during a round shorter than :data:`SHORT_ROUND_S`."""
        job.status = CATCHING_UP
        for _ in range(MAX_ROUNDS):
            live = await self._live_positions(partitions)
            if sum(max(0, live[p] - job.partitions[p].position) for p in partitions) <= SWITCH_LAG:
                return
            started = time.monotonic()
            await workers.fold_to(live)
            if time.monotonic() - started < SHORT_ROUND_S:
                return

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
