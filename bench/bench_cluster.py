"""Cluster benchmark: apply rate with 1, 2 and 3 nodes, and failover time after kill -9 of a node.

Starts its own broker (unless KAFKA_BOOTSTRAP_SERVERS is set) and Flux nodes of one app on this
machine. Events are written straight to the events topic by a raw aiokafka producer, packed as
Flux's publisher packs them, so the load generator costs little CPU; the apply rate is the time
from the first record written to the last event folded, summed over the nodes. Every process
shares the same cores: on a 2-core machine more nodes add processes, not CPU.

Failover: three nodes fold one event for each of ``--failover-entities`` entities, then the node
serving the most partitions is killed with SIGKILL; the figure is the time until the other two
serve every partition again, with standby replicas (the default, 1) and without (0).

Run: ``make bench-cluster`` or ``python bench/bench_cluster.py [--events N] [--failover-entities N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import os
import platform
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
from aiokafka import AIOKafkaProducer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_core import applied_total, broker_for, kafka_options, print_table, progress, raw_kafka
from flux.kafka.publisher import pack_by_partition
from flux.localkafka import free_port
from flux.model.events import validate_event
from tests.flux_process import FluxProcess, served_partitions

PARTITIONS = 6  # divides over 1, 2 and 3 nodes evenly
RECORD_EVENTS = 1000


def start_nodes(bootstrap: str, work: Path, count: int, **env: str) -> list[FluxProcess]:
    """``count`` nodes of a new app, started side by side, once every partition is served."""
    app_id = f"bcl{uuid.uuid4().hex[:6]}"
    nodes = [
        FluxProcess(bootstrap, work / f"{app_id}-{i}", free_port(), app_id, PARTITIONS, dict(env)) for i in range(count)
    ]
    with concurrent.futures.ThreadPoolExecutor(count) as pool:
        list(pool.map(lambda node: node.start(timeout=180), nodes))
    wait_served(nodes)
    return nodes


def served(nodes: list[FluxProcess]) -> dict[str, list[int]] | None:
    """Partitions per node, if every node is ready and together they serve each partition once."""
    found = served_partitions(nodes)
    if found is None:
        return None
    together = sorted(p for partitions in found.values() for p in partitions)
    return found if together == list(range(PARTITIONS)) and all(found.values()) else None


def wait_served(nodes: list[FluxProcess], timeout: float = 180.0) -> float:
    """Seconds until ``nodes`` serve every partition between them."""
    started = time.perf_counter()
    while served(nodes) is None:
        if time.perf_counter() - started > timeout:
            raise SystemExit(f"partitions not served within {timeout} s")
        time.sleep(0.1)
    return time.perf_counter() - started


async def produce(bootstrap: str, topic: str, events: int, entities: int, run: str) -> float:
    """Write ``events`` events (entity ``i % entities``) as packed records; returns the seconds taken."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, **kafka_options())
    await producer.start()
    started = time.perf_counter()
    try:
        now = int(time.time() * 1000)
        for first in range(0, events, RECORD_EVENTS * PARTITIONS):
            envelopes = [
                validate_event(
                    {
                        "stream": "bench",
                        "source": "bench-cluster",
                        "timestamp": 1_700_000_000_000 + i,
                        "payload": {"entity_id": f"{run}/dev-{i % entities:07d}", "properties": {"seq": i}},
                    },
                    now_ms=now,
                )
                for i in range(first, min(first + RECORD_EVENTS * PARTITIONS, events))
            ]
            sends = [
                await producer.send(topic, value, partition=p) for p, value in pack_by_partition(envelopes, PARTITIONS)
            ]
            await asyncio.gather(*sends)
    finally:
        await producer.stop()
    return time.perf_counter() - started


def apply_rate(bootstrap: str, work: Path, count: int, events: int, entities: int) -> tuple[float, list[int], float]:
    """(events/s over all nodes, events folded per node, seconds) for ``count`` nodes."""
    nodes = start_nodes(bootstrap, work, count)
    try:
        clients = [httpx.Client(base_url=node.url, timeout=30) for node in nodes]
        started = time.perf_counter()
        asyncio.run(produce(bootstrap, nodes[0].events_topic, events, entities, nodes[0].app_id))
        last = 0.0
        while (done := sum(applied_total(c) for c in clients)) < events:
            if time.perf_counter() - last > 3:
                progress(f"{count} node(s): {done:,}/{events:,} applied")
                last = time.perf_counter()
            time.sleep(0.05)
        seconds = time.perf_counter() - started
        return events / seconds, [applied_total(c) for c in clients], seconds
    finally:
        for node in nodes:
            node.stop()


def failover(bootstrap: str, work: Path, entities: int, standbys: int) -> tuple[float, int]:
    """Seconds from kill -9 of the busiest of three nodes until the others serve every partition."""
    nodes = start_nodes(bootstrap, work, 3, FLUX_STANDBY_REPLICAS=str(standbys))
    try:
        clients = [httpx.Client(base_url=node.url, timeout=30) for node in nodes]
        asyncio.run(produce(bootstrap, nodes[0].events_topic, entities, entities, nodes[0].app_id))
        while sum(applied_total(c) for c in clients) < entities:
            time.sleep(0.2)
        time.sleep(5)  # standbys apply the changelog in buffers: let them catch up as a running cluster would
        layout = served(nodes) or {}
        victim = max(nodes, key=lambda node: len(layout.get(node.url, [])))
        moved = len(layout.get(victim.url, []))
        progress(f"kill -9 of {victim.url} (partitions {layout.get(victim.url)}), standby replicas {standbys}")
        victim.kill()
        return wait_served([n for n in nodes if n is not victim], timeout=300), moved
    finally:
        for node in nodes:
            node.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=600_000)
    parser.add_argument("--entities", type=int, default=60_000)
    parser.add_argument("--failover-entities", type=int, default=1_000_000)
    parser.add_argument("--only", choices=("apply", "failover"), help="run one half of the benchmark")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="flux-bench-cluster-"))
    bootstrap, broker = broker_for(work)
    rows: list[tuple[str, str]] = []
    try:
        progress("raw aiokafka, same broker")
        raw = asyncio.run(raw_kafka(bootstrap, 200_000))
        rows.append(("raw aiokafka consume, one event per record (count only)", f"{raw['raw_consume']:,.0f} events/s"))
        for count in (1, 2, 3) if args.only != "failover" else ():
            progress(f"apply rate with {count} node(s): {args.events:,} events over {args.entities:,} entities")
            rate, per_node, seconds = apply_rate(bootstrap, work, count, args.events, args.entities)
            shares = ", ".join(f"{n / seconds:,.0f}" for n in per_node)
            rows.append((f"apply with {count} node(s): total (per node)", f"{rate:,.0f} events/s ({shares})"))
        for standbys in (1, 0) if args.only != "apply" else ():
            progress(f"failover with {args.failover_entities:,} entities, FLUX_STANDBY_REPLICAS={standbys}")
            seconds, moved = failover(bootstrap, work, args.failover_entities, standbys)
            rows.append(
                (
                    f"kill -9 of a node ({moved} of {PARTITIONS} partitions, {args.failover_entities:,} entities "
                    f"in all), standby replicas {standbys}: until all served",
                    f"{seconds:.1f} s",
                )
            )
    finally:
        if broker is not None:
            broker.stop()
    print_table(
        f"Flux cluster benchmark ({platform.machine()}, {len(os.sched_getaffinity(0))} cores, "
        f"Python {platform.python_version()})",
        rows,
    )


if __name__ == "__main__":
    main()
