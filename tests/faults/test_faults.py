"""A cluster of three Flux nodes survives the crash of any process, under load, on real brokers.

Each scenario publishes a load through the nodes (batches of events with eventIds, each batch
acknowledged only after the broker's ``acks=all``), injects one fault in the middle of it, and
then checks:

- every acknowledged eventId is in the events topic (nothing acknowledged was lost);
- every node's answer to a gathered list equals the fold of the whole events topic with the pure
  reducer, whichever node folded which partition;
- where it applies, WebSocket subscribers on surviving nodes kept receiving changes of every
  partition after the fault.

The time from the fault until every partition is served again is printed (``FAULT ...`` lines,
see FAULTS.md).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import websockets

from agents.log_reader import logged_events
from api.live.hub import CLOSE_TOO_SLOW
from flux.localkafka import LocalKafkaCluster
from flux.model.partitioning import partition_for
from flux.model.reducer import fold, to_entity
from tests.flux_process import FluxProcess, app_settings, free_port, served_partitions
from tests.ws_client import Subscriber

PARTITIONS = 6
BATCH = 5_000
ENTITIES = 5_000
T0 = 1_700_000_000_000
SERVED_TIMEOUT_S = 120.0
CONVERGE_TIMEOUT_S = 240.0
OUTCOME_TIMEOUT_S = 60.0  # a resumed node has exited or serves again within this
SETTLED_S = 3.0  # how long a rejoined node's assignment must hold before it counts
EXIT_WITHIN_S = 20.0  # a fenced node's process is gone within this (api.server.CRASH_EXIT_S, and a margin)


def _cluster(bootstrap: str, base: Path, count: int, **env: str) -> list[FluxProcess]:
    """``count`` started nodes of one app (own ports and data dirs), partitions spread over them."""
    app_id = f"faults{os.urandom(4).hex()}"
    nodes = [
        FluxProcess(
            bootstrap,
            base / f"node-{i}",
            free_port(),
            app_id,
            PARTITIONS,
            {"FLUX_FAUST_LOG_LEVEL": "INFO", **env},
        )
        for i in range(count)
    ]
    try:
        start_all(nodes)
        _wait_served(nodes, nodes)
    except BaseException:
        _stop_all(nodes)  # a cluster that did not come up leaves no process behind
        raise
    return nodes


def start_all(nodes: list[FluxProcess]) -> None:
    """Start the nodes side by side (each waits for its own /ready)."""
    with concurrent.futures.ThreadPoolExecutor(len(nodes)) as pool:
        list(pool.map(lambda node: node.start(), nodes))


def _served(nodes: list[FluxProcess]) -> list[int] | None:
    """The partitions ``nodes`` serve between them, if every one of them is ready."""
    found = served_partitions(nodes)
    return None if found is None else sorted(p for partitions in found.values() for p in partitions)


def _wait_served(nodes: list[FluxProcess], expected_servers: list[FluxProcess]) -> float:
    """Seconds until ``nodes`` serve every partition once, each of ``expected_servers`` some."""
    started = time.monotonic()
    while time.monotonic() - started < SERVED_TIMEOUT_S:
        if _served(nodes) == list(range(PARTITIONS)) and all(
            node.client.get("/ready").json()["partitions"] for node in expected_servers
        ):
            return time.monotonic() - started
        time.sleep(0.2)
    logs = "\n".join(f"--- {n.url}\n{n.log_tail(30)}" for n in nodes)
    raise AssertionError(f"partitions not all served within {SERVED_TIMEOUT_S} s\n{logs}")


class Load(threading.Thread):
    """Publishes ``total`` events in batches to the live nodes in turn, remembering what was acknowledged.

    Event ``i`` sets ``n = i`` on entity ``e-{i % ENTITIES}`` at time ``T0 + i`` with eventId
    ``{tag}-{i}``. A batch that fails (a node died under it) is sent again to another node: with
    the same eventIds, so it is applied once.
    """

    def __init__(self, nodes: list[FluxProcess], total: int, tag: str) -> None:
        super().__init__(daemon=True)
        self.nodes = nodes
        self.total = total
        self.tag = tag
        self.down: set[str] = set()
        self.acked: list[int] = []  # first event index of each acknowledged batch
        self.failures = 0
        self.error: BaseException | None = None

    def body(self, first: int) -> list[dict[str, Any]]:
        return [
            {
                "eventId": f"{self.tag}-{i}",
                "stream": "load",
                "source": "faults",
                "timestamp": T0 + i,
                "payload": {"entity_id": f"{self.tag}/e-{i % ENTITIES}", "properties": {"n": i}},
            }
            for i in range(first, min(first + BATCH, self.total))
        ]

    def acked_count(self) -> int:
        return len(self.acked) * BATCH

    def run(self) -> None:
        clients = {node.url: httpx.Client(base_url=node.url, timeout=60) for node in self.nodes}
        turn = 0
        try:
            for first in range(0, self.total, BATCH):
                body = self.body(first)
                for _ in range(200):
                    live = [n for n in self.nodes if n.url not in self.down]
                    node = live[turn % len(live)]
                    turn += 1
                    try:
                        answer = clients[node.url].post("/api/events/batch", json=body)
                    except httpx.HTTPError:
                        answer = None
                    if answer is not None and answer.status_code == 200:
                        self.acked.append(first)
                        break
                    self.failures += 1
                    time.sleep(0.2)
                else:
                    raise AssertionError(f"batch {first} was never acknowledged")
        except BaseException as exc:  # surfaced by the test
            self.error = exc

    def wait_acked(self, count: int, timeout: float = 300.0) -> None:
        deadline = time.monotonic() + timeout
        while self.acked_count() < count:
            assert self.error is None, self.error
            assert time.monotonic() < deadline, f"only {self.acked_count()} events acknowledged"
            time.sleep(0.1)

    def finish(self, timeout: float = 600.0) -> None:
        self.join(timeout)
        assert not self.is_alive(), "the load did not finish"
        assert self.error is None, self.error


class Watcher(threading.Thread):
    """A WebSocket subscriber of ``{tag}/*`` on one node, noting when it received which entity.

    A node closes a subscriber that falls too far behind (this thread, on a busy machine), telling it
    to reconnect and subscribe again: it does, as a client should."""

    def __init__(self, node: FluxProcess, tag: str) -> None:
        super().__init__(daemon=True)
        self.node = node
        self.tag = tag
        self.received: list[tuple[float, str]] = []
        self.subscribed = threading.Event()
        self.stop = threading.Event()

    def run(self) -> None:
        asyncio.run(self._listen())

    async def _listen(self) -> None:
        while not self.stop.is_set():
            try:
                await self._listen_once()
            except websockets.ConnectionClosed as closed:
                if closed.rcvd is None or closed.rcvd.code != CLOSE_TOO_SLOW or "too slow" not in closed.rcvd.reason:
                    raise

    async def _listen_once(self) -> None:
        async with Subscriber(self.node.url) as client:
            await client.subscribe(f"{self.tag}/*")
            self.subscribed.set()
            while not self.stop.is_set():
                try:
                    message = await client.recv(timeout=0.5)
                except TimeoutError:
                    continue
                client.messages.clear()
                if message["type"] == "state_update":
                    self.received.append((time.monotonic(), message["entity_id"]))

    def partitions_after(self, moment: float) -> set[int]:
        return {partition_for(e, PARTITIONS) for t, e in self.received if t > moment}


def watched_load(nodes: list[FluxProcess], total: int) -> tuple[Load, Watcher]:
    """A load through ``nodes`` watched by a subscriber on the first, once 30 % is acknowledged."""
    load = Load(nodes, total, nodes[0].app_id)
    watcher = Watcher(nodes[0], load.tag)
    watcher.start()
    assert watcher.subscribed.wait(30)
    load.start()
    load.wait_acked(int(total * 0.3))
    return load, watcher


def expected_state(bootstrap: str, app_id: str, load: Load) -> dict[str, dict[str, Any]]:
    """The fold of the whole events topic; asserts that every acknowledged eventId is in it."""
    settings = app_settings(bootstrap, app_id, PARTITIONS)

    async def read() -> list[dict[str, Any]]:
        return [event async for event in logged_events(settings, "faults-check")]

    events = asyncio.run(read())
    ids = {e["eventId"] for e in events}
    missing = [f"{load.tag}-{i}" for f in load.acked for i in range(f, min(f + BATCH, load.total))]
    missing = [i for i in missing if i not in ids]
    assert not missing, f"{len(missing)} acknowledged events are not in the log, e.g. {missing[:5]}"
    by_entity: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        by_entity.setdefault(event["payload"]["entity_id"], []).append(event)
    return {entity_id: to_entity(entity_id, fold(evs)) for entity_id, evs in by_entity.items()}  # type: ignore[misc]


def assert_converges(nodes: list[FluxProcess], tag: str, expected: dict[str, dict[str, Any]]) -> None:
    """Every node's gathered list of ``tag/`` equals ``expected`` (waiting while folds catch up)."""
    deadline = time.monotonic() + CONVERGE_TIMEOUT_S
    for node in nodes:
        while True:
            answer = node.client.get("/api/state/entities", params={"prefix": f"{tag}/", "limit": "10000"})
            found = {e["id"]: e for e in answer.json()} if answer.status_code == 200 else {}
            if found == expected:
                break
            if time.monotonic() > deadline:
                wrong = [i for i in expected if found.get(i) != expected[i]]
                raise AssertionError(
                    f"{node.url} answered {answer.status_code}; {len(wrong)} of {len(expected)} entities "
                    f"differ from the fold of the log, e.g. {wrong[:3]}\n{node.log_tail(40)}"
                )
            time.sleep(1)


def _stop_all(nodes: list[FluxProcess]) -> None:
    for node in nodes:
        if node.proc is not None and node.proc.poll() is None:
            with_signal(node, signal.SIGCONT)
        node.stop()


def with_signal(node: FluxProcess, sig: signal.Signals) -> None:
    assert node.proc is not None
    os.kill(node.proc.pid, sig)


def test_kill_9_of_a_node_under_load_then_a_full_restart_lose_no_acknowledged_event(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    nodes = _cluster(kafka_bootstrap, tmp_path, 3)
    try:
        victim = nodes[2]
        load, watcher = watched_load(nodes, 500_000)
        load.down.add(victim.url)
        victim.kill()
        killed = time.monotonic()
        failover = _wait_served(nodes[:2], nodes[:2])
        print(f"\nFAULT kill -9 node: all partitions served again after {failover:.1f} s")
        load.finish()
        expected = expected_state(kafka_bootstrap, nodes[0].app_id, load)
        assert len(expected) == ENTITIES
        assert_converges(nodes[:2], load.tag, expected)
        watcher.stop.set()
        watcher.join(10)
        assert watcher.partitions_after(killed) == set(range(PARTITIONS)), "a survivor's subscriber kept receiving"

        _stop_all(nodes[:2])  # the whole cluster stops, then starts again with the same data dirs
        restarted = time.monotonic()
        start_all(nodes)
        _wait_served(nodes, nodes)
        print(f"FAULT full restart: all partitions served after {time.monotonic() - restarted:.1f} s")
        assert_converges(nodes, load.tag, expected)
    finally:
        _stop_all(nodes)


def resumed_outcome(frozen: FluxProcess, others: list[FluxProcess]) -> tuple[str, float]:
    """What a node resumed after a freeze past its session does, and how many seconds it took.

    ``"exited"``: it was fenced and the process ended (with a non-zero code, for its supervisor).
    ``"rejoined"``: it serves partitions again, with none served twice by the whole cluster, for
    :data:`SETTLED_S` on end. Anything else (alive but not serving, or serving stale partitions that
    another node took) past :data:`OUTCOME_TIMEOUT_S` is the outage the fence must prevent.
    """
    assert frozen.proc is not None
    started = time.monotonic()
    settled_since: float | None = None
    while time.monotonic() - started < OUTCOME_TIMEOUT_S:
        if frozen.proc.poll() is not None:
            return "exited", time.monotonic() - started
        found = served_partitions([*others, frozen])
        claims = None if found is None else sorted(p for partitions in found.values() for p in partitions)
        if found is not None and claims == list(range(PARTITIONS)) and all(found.values()):
            settled_since = settled_since or time.monotonic()
            if time.monotonic() - settled_since >= SETTLED_S:
                return "rejoined", settled_since - started
        else:
            settled_since = None
        time.sleep(0.2)
    raise AssertionError(
        f"{OUTCOME_TIMEOUT_S} s after it resumed, the node neither exited nor served again: "
        f"{served_partitions([frozen])}\n{frozen.log_tail(60)}"
    )


def freeze_past_session(frozen: FluxProcess, others: list[FluxProcess], load: Load | None = None) -> tuple[str, float]:
    """SIGSTOP ``frozen`` until ``others`` serve every partition (and, under ``load``, 80,000 more
    events are acknowledged), SIGCONT it, and return what it then did (see :func:`resumed_outcome`)."""
    acked = 0 if load is None else load.acked_count()
    with_signal(frozen, signal.SIGSTOP)
    stopped = time.monotonic()
    failover = _wait_served(others, others)
    print(f"\nFAULT SIGSTOP node: all partitions served by the others after {failover:.1f} s")
    if load is not None:
        load.wait_acked(acked + 80_000)
    with_signal(frozen, signal.SIGCONT)
    print(f"FAULT SIGSTOP node: resumed after {time.monotonic() - stopped:.1f} s")
    outcome, took = resumed_outcome(frozen, others)
    assert frozen.proc is not None
    if outcome == "exited":
        assert frozen.proc.returncode == 1, f"exit code {frozen.proc.returncode}\n{frozen.log_tail(60)}"
        assert "is not confirmed in group" in frozen.log_tail(400), frozen.log_tail(60)
        assert took <= EXIT_WITHIN_S, f"the fenced node took {took:.1f} s to exit"
        print(f"FAULT SIGSTOP node: fenced, exited with code 1 {took:.1f} s after it resumed; restarted")
        frozen.start()
    else:
        print(f"FAULT SIGSTOP node: rejoined in process {took:.1f} s after it resumed")
    return outcome, took


def test_a_node_frozen_past_its_session_under_load_writes_no_stale_state_and_exits_or_rejoins(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    nodes = _cluster(kafka_bootstrap, tmp_path, 3)
    try:
        frozen = nodes[2]
        load = Load(nodes[:2], 200_000, nodes[0].app_id)
        load.start()
        load.wait_acked(40_000)
        freeze_past_session(frozen, nodes[:2], load)
        load.finish()
        _wait_served(nodes, nodes)
        expected = expected_state(kafka_bootstrap, nodes[0].app_id, load)
        assert_converges(nodes, load.tag, expected)

        # What every later recovery reads, the changelog, holds no stale state either: nodes with
        # empty data dirs rebuild the table from it alone.
        _stop_all(nodes)
        for node in nodes:
            shutil.rmtree(node.workdir / "data")
        start_all(nodes)
        _wait_served(nodes, nodes)
        assert_converges(nodes, load.tag, expected)
    finally:
        _stop_all(nodes)


def test_a_node_frozen_past_its_session_while_idle_rejoins_in_process_and_folds_on(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    nodes = _cluster(kafka_bootstrap, tmp_path, 3)
    try:
        frozen = nodes[2]
        outcome, _ = freeze_past_session(frozen, nodes[:2])  # no batch in hand when it wakes: nothing to fence
        assert outcome == "rejoined"
        load = Load(nodes, 30_000, nodes[0].app_id)
        load.start()
        load.finish()
        assert frozen.proc is not None and frozen.proc.poll() is None, frozen.log_tail(60)
        assert_converges(nodes, load.tag, expected_state(kafka_bootstrap, nodes[0].app_id, load))
    finally:
        _stop_all(nodes)


def test_kill_9_of_a_broker_under_load_loses_no_acknowledged_event(
    kafka_cluster: LocalKafkaCluster, tmp_path: Path
) -> None:
    bootstrap = kafka_cluster.bootstrap
    nodes = _cluster(bootstrap, tmp_path, 3, FLUX_REPLICATION_FACTOR="3")
    try:
        load, watcher = watched_load(nodes, 500_000)
        broker = kafka_cluster.brokers[1]
        broker.kill()
        killed = time.monotonic()
        load.wait_acked(300_000)
        print(f"\nFAULT kill -9 broker: 150,000 more events acknowledged {time.monotonic() - killed:.1f} s after")
        broker.start()
        load.finish()
        expected = expected_state(bootstrap, nodes[0].app_id, load)
        assert_converges(nodes, load.tag, expected)
        watcher.stop.set()
        watcher.join(10)
        assert watcher.partitions_after(killed) == set(range(PARTITIONS))
    finally:
        _stop_all(nodes)
