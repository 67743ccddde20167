"""Faults and admin jobs during the soak: ``kill -9`` of a node or a broker, restarts, replays.

The fault loop waits a random 2-5 minutes (``--fault-every-min``/``--fault-every-max``), kills a
random node (its reducer process; the HTTP children die with it) or broker with SIGKILL, leaves it
down a few seconds, starts it again on the same data and waits until it serves (a node's
``/ready``, a broker's metadata with every broker registered). One fault at a time. A node that
exits by itself (the fence's exit code 1) is started again by the supervisor loop, as
``flux cluster`` would, and noted. The replay loop runs ``POST /api/admin/replay`` from the
beginning on a random node every few minutes and waits for the job.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from bench.soak.cluster import SoakCluster, SoakNode
from flux.client import AsyncFluxClient, FluxError

Say = Callable[[str], None]


@dataclass
class Fault:
    at: float  # seconds since the start
    target: str
    down_s: float
    back_s: float | None = None  # from the restart to serving again
    served_s: float | None = None  # from the kill to every partition served by the ready nodes
    note: str = ""


@dataclass
class Replay:
    at: float
    node: str
    status: str
    seconds: float | None = None
    entities: int | None = None
    changed: int | None = None
    removed: int | None = None
    paused_ms: float | None = None
    error: str | None = None


@dataclass
class Chaos:
    cluster: SoakCluster
    rng: random.Random
    say: Say
    started: float
    every_min_s: float
    every_max_s: float
    replay_every_s: float
    admin_clients: list[AsyncFluxClient]
    targets: str = "all"  # or "nodes", "brokers"
    down_s: tuple[float, float] = (3.0, 10.0)
    faults: list[Fault] = field(default_factory=list)
    replays: list[Replay] = field(default_factory=list)
    self_exits: list[tuple[float, str, int]] = field(default_factory=list)
    busy: set[str] = field(default_factory=set)  # nodes being killed or restarted by the fault loop
    peak_rss: dict[str, int] = field(default_factory=dict)

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    async def faults_loop(self, stop: asyncio.Event) -> None:
        """Inject faults until ``stop``; a fault in progress is finished (its target serves again)."""
        while not stop.is_set():
            wait = self.rng.uniform(self.every_min_s, self.every_max_s)
            try:
                await asyncio.wait_for(stop.wait(), wait)
                return
            except TimeoutError:
                pass
            targets: list[str] = []
            if self.targets in ("all", "nodes"):
                targets += [node.name for node in self.cluster.nodes]
            if self.targets in ("all", "brokers"):
                targets += [f"broker-{broker.node_id}" for broker in self.cluster.brokers]
            await self._inject(self.rng.choice(targets))

    async def _inject(self, target: str) -> None:
        down = self.rng.uniform(*self.down_s)
        fault = Fault(round(self.elapsed(), 1), target, round(down, 1))
        self.faults.append(fault)
        killed_at = time.monotonic()
        if target.startswith("node-"):
            node = next(n for n in self.cluster.nodes if n.name == target)
            self.busy.add(node.name)
            try:
                pids = await asyncio.to_thread(node.kill)
                self.say(f"fault: kill -9 {target} (pids {pids}); down for {down:.1f} s")
                await asyncio.sleep(down)
                node.start()
                fault.back_s = round(await asyncio.to_thread(node.wait_ready), 1)
                self.say(f"{target} ready again {fault.back_s} s after its restart")
            except RuntimeError as exc:  # it exited while starting: the supervisor starts it again
                fault.note = str(exc)
                self.say(f"after {target}: {exc}")
            finally:
                self.busy.discard(node.name)
        else:
            broker = next(b for b in self.cluster.brokers if f"broker-{b.node_id}" == target)
            await asyncio.to_thread(broker.kill)
            self.say(f"fault: kill -9 {target} ({broker.bootstrap}); down for {down:.1f} s")
            await asyncio.sleep(down)
            restarted = time.monotonic()
            await asyncio.to_thread(broker.start, 180)
            await asyncio.to_thread(self.cluster.kafka.wait_all_registered, 120)
            fault.back_s = round(time.monotonic() - restarted, 1)
            self.say(f"{target} back in the cluster {fault.back_s} s after its restart")
        try:
            await asyncio.to_thread(self.cluster.wait_served, 240)
            fault.served_s = round(time.monotonic() - killed_at, 1)
        except RuntimeError as exc:
            fault.note = str(exc)
            self.say(f"after {target}: {exc}")

    async def supervise(self, stop: asyncio.Event) -> None:
        """Start again a node that exited by itself (not one the fault loop is handling)."""
        while not stop.is_set():
            for node in self.cluster.nodes:
                code = node.exit_code()
                if code is not None and node.name not in self.busy:
                    self.self_exits.append((round(self.elapsed(), 1), node.name, code))
                    self.say(f"{node.name} exited by itself (code {code}); starting it again, see {node.log_path}")
                    self.busy.add(node.name)
                    try:
                        node.start()
                        await asyncio.to_thread(self._wait_or_note, node)
                    finally:
                        self.busy.discard(node.name)
            for node in self.cluster.nodes:
                self.peak_rss[node.name] = max(self.peak_rss.get(node.name, 0), node.rss())
            await asyncio.sleep(1.0)

    def _wait_or_note(self, node: SoakNode) -> None:
        try:
            self.say(f"{node.name} ready again {node.wait_ready():.1f} s after its restart")
        except RuntimeError as exc:
            self.say(str(exc))

    async def replays_loop(self, stop: asyncio.Event) -> None:
        """A replay from the beginning on a random serving node every ``replay_every_s``."""
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), self.replay_every_s)
                return
            except TimeoutError:
                pass
            index = self.rng.randrange(len(self.cluster.nodes))
            await self._replay(index)

    async def _replay(self, index: int) -> None:
        node = self.cluster.nodes[index]
        client = self.admin_clients[index]
        replay = Replay(round(self.elapsed(), 1), node.name, "refused")
        self.replays.append(replay)
        try:
            job = await client.start_replay(from_beginning=True)
            replay.status = "running"
            self.say(f"replay {job.job_id} started on {node.name}")
            job = await client.wait_replay(job.job_id, poll_s=1.0, timeout_s=900)
        except (FluxError, TimeoutError) as exc:
            replay.error = str(exc)
            replay.status = "lost" if replay.status != "refused" else replay.status
            self.say(f"replay on {node.name}: {exc}")
            return
        replay.status = job.status
        replay.error = job.error
        if job.report is not None:
            replay.seconds = round(job.report.seconds, 1)
            replay.entities = job.report.entities
            replay.changed = job.report.entities_changed
            replay.removed = job.report.entities_removed
            replay.paused_ms = round(job.report.writes_paused_ms, 1)
        self.say(
            f"replay on {node.name}: {job.status}, {replay.entities} entities, {replay.changed} changed, "
            f"{replay.removed} removed, {replay.seconds} s, writes paused {replay.paused_ms} ms"
            + (f" ({job.error})" if job.error else "")
        )
