"""Source topics benchmark: how fast a node folds records written to a source topic (FLUX_SOURCE_TOPICS).

Starts its own broker (the project's launcher, unless KAFKA_BOOTSTRAP_SERVERS is set) and a Flux node
folding two ``upsert`` source topics of ``--source-partitions`` partitions (the node has 8), then:

- backlog: a topic filled before the node starts, routed and folded by the node; then the same records
  routed by a router of the bench's own process to a scratch topic nobody folds (the router alone);
- direct: the same events as packed envelopes written straight to the events topic, the fold alone;
- live: produces ``--records`` upsert records with aiokafka (key = entity id, value = a JSON object) while
  the node runs, and times from the first send until ``flux_events_applied_total`` counts them all
  (produce, route to the events topic, fold: end to end);

next to raw aiokafka's produce rate on the same broker. Run: ``python bench/bench_sources.py [--records N]``.
The load generator runs on the same machine as the broker and Flux, and takes CPU from them.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_core import broker_for, kafka_options, print_table, progress
from flux.config import Settings
from flux.kafka.publisher import pack_by_partition
from flux.kafka.source_router import SourceRouter
from flux.localkafka import free_port
from flux.metrics import Metrics
from flux.model.ids import new_event_id
from tests.flux_process import FluxProcess

PARTITIONS = 8
ENTITIES = 10_000


def record(i: int, run: str) -> tuple[bytes, bytes]:
    """The key and value of the ``i``-th upsert record."""
    return f"{run}/dev-{i % ENTITIES}".encode(), orjson.dumps({"temp": i % 100, "seq": i})


async def create_topics(bootstrap: str, names: list[str], partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **kafka_options())
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1) for name in names])
    finally:
        await admin.close()


async def produce(bootstrap: str, topic: str, n: int, run: str) -> float:
    """Write ``n`` upsert records as fast as an idempotent aiokafka producer goes; returns the seconds it took."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5, **kafka_options()
    )
    await producer.start()
    t0 = int(time.time() * 1000)  # recent: Kafka's time retention would delete records of old timestamps
    try:
        started = time.perf_counter()
        futures = []
        for i in range(n):
            key, value = record(i, run)
            futures.append(await producer.send(topic, value, key=key, timestamp_ms=t0 + i // 100))
            if len(futures) >= 10_000:
                await asyncio.gather(*futures)
                futures.clear()
        await asyncio.gather(*futures)
        return time.perf_counter() - started
    finally:
        await producer.stop()


def counters(client: httpx.Client) -> dict[str, float]:
    """The node's counters from ``/metrics`` (name -> value), without labels."""
    found = {}
    for line in client.get("/metrics").text.splitlines():
        name, _, value = line.partition(" ")
        if not line.startswith("#") and "{" not in name and value:
            found[name] = float(value)
    return found


def wait_for(client: httpx.Client, counter: str, target: int, label: str) -> tuple[float, float]:
    """Wait until ``counter`` reaches ``target``, reporting the router's and the reducer's counts; returns
    (when it first moved, when it got there), ``time.perf_counter()`` times."""
    last_report = 0.0
    start = counters(client).get(counter, 0)
    moved = None
    while True:
        now = time.perf_counter()
        seen = counters(client)
        if moved is None and seen.get(counter, 0) > start:
            moved = now
        if seen.get(counter, 0) >= target:
            return moved or now, now
        if now - last_report > 2:
            progress(
                f"{label}: {seen.get('flux_source_records_total', 0):,.0f} routed, "
                f"{seen.get('flux_events_applied_total', 0):,.0f} applied, "
                f"{seen.get('flux_events_duplicate_total', 0):,.0f} duplicates"
            )
            last_report = now
        time.sleep(0.1)


async def produce_envelopes(bootstrap: str, topic: str, n: int, run: str) -> None:
    """The same upserts as envelopes, packed by partition as the router packs them, straight to the events topic."""
    t0 = int(time.time() * 1000)
    envelopes = [
        {
            "eventId": new_event_id(t0 + i // 100),
            "stream": run,
            "source": f"kafka:{run}",
            "timestamp": t0 + i // 100,
            "payload": {"entity_id": record(i, run)[0].decode(), "properties": {"temp": i % 100, "seq": i}},
        }
        for i in range(n)
    ]
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        max_request_size=16 * 1024 * 1024,
        **kafka_options(),
    )
    await producer.start()
    try:
        for start in range(0, n, 20_000):
            packed = pack_by_partition(envelopes[start : start + 20_000], PARTITIONS)
            await asyncio.gather(*[await producer.send(topic, value, partition=p) for p, value in packed])
    finally:
        await producer.stop()


async def router_alone(bootstrap: str, topic: str, n: int, app_id: str) -> float:
    """Route ``n`` records of ``topic`` with a router of this process (its own group) to a scratch topic
    nobody folds; returns records/s from the first routed to the last."""
    settings = Settings(
        kafka_bootstrap_servers=bootstrap,
        app_id=f"{app_id}-alone",
        events_topic=f"{app_id}.scratch",
        dead_letter_topic=f"{app_id}.scratch",
        source_topics=f"{topic}:upsert",
        partitions=PARTITIONS,
    )
    metrics = Metrics()
    router = SourceRouter(settings, metrics)
    await router.start()
    try:
        while (first := metrics.source_records) == 0:
            await asyncio.sleep(0.005)
        started = time.perf_counter()
        while metrics.source_records < n:
            await asyncio.sleep(0.005)
        return (n - first) / (time.perf_counter() - started)
    finally:
        await router.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--source-partitions", type=int, default=6)
    args = parser.parse_args()
    n = args.records

    work = Path(tempfile.mkdtemp(prefix="flux-bench-sources-"))
    bootstrap, broker = broker_for(work)
    app_id = f"bsrc{uuid.uuid4().hex[:6]}"
    live, backlog, raw = f"{app_id}.live", f"{app_id}.backlog", f"{app_id}.raw"
    node = FluxProcess(
        bootstrap,
        work / "node",
        free_port(),
        app_id,
        PARTITIONS,
        {"FLUX_SOURCE_TOPICS": f"{live}:upsert,{backlog}:upsert"},
    )
    rows: list[tuple[str, str]] = []
    try:
        asyncio.run(create_topics(bootstrap, [live, backlog, raw], args.source_partitions))
        progress(f"raw aiokafka: producing {n:,} records")
        seconds = asyncio.run(produce(bootstrap, raw, n, "raw"))
        rows.append(("raw aiokafka produce (idempotent, acks=all), the ceiling", f"{n / seconds:,.0f} records/s"))

        progress(f"filling the backlog topic with {n:,} records, then starting Flux")
        asyncio.run(produce(bootstrap, backlog, n, "backlog"))
        node.start()
        client = httpx.Client(base_url=node.url, timeout=60)
        applied_from, applied_at = wait_for(client, "flux_events_applied_total", n, "backlog")
        label = f"backlog of {n:,} upsert records ({args.source_partitions} partitions)"
        rows.append((f"{label}: routed and folded by the node", f"{n / (applied_at - applied_from):,.0f} records/s"))

        progress(f"the router alone (no fold) over the same {n:,} records")
        asyncio.run(create_topics(bootstrap, [f"{app_id}.scratch"], PARTITIONS))
        rows.append(
            (
                f"{label}: the router alone, to the events topic",
                f"{asyncio.run(router_alone(bootstrap, backlog, n, app_id)):,.0f} records/s",
            )
        )

        progress(f"the same {n:,} events as packed envelopes straight to the events topic (the fold alone)")
        base = int(counters(client).get("flux_events_applied_total", 0))
        started = time.perf_counter()
        asyncio.run(produce_envelopes(bootstrap, node.events_topic, n, "direct"))
        _, done = wait_for(client, "flux_events_applied_total", base + n, "direct")
        rows.append(("the same events packed straight to the events topic, folded", f"{n / (done - started):,.0f}/s"))

        base = int(counters(client).get("flux_events_applied_total", 0))
        progress(f"live: producing {n:,} records while the node runs")
        started = time.perf_counter()
        produce_s = asyncio.run(produce(bootstrap, live, n, "live"))
        _, done = wait_for(client, "flux_events_applied_total", base + n, "live")
        rows.append(
            (
                f"live: {n:,} upsert records produced ({n / produce_s:,.0f}/s), routed and folded, end to end",
                f"{n / (done - started):,.0f} records/s",
            )
        )
        seen = counters(client)
        rows.append(
            (
                "records routed twice (a fetch written again after a rebalance), applied once",
                f"{seen.get('flux_events_duplicate_total', 0):,.0f}",
            )
        )
        last = client.get(f"/api/state/entities/live/dev-{(n - 1) % ENTITIES}").json()
        assert last["properties"]["seq"] == n - 1, last
    finally:
        node.stop()
        if broker is not None:
            broker.stop()
    print_table(f"{n:,} records over {ENTITIES:,} entities, {PARTITIONS} Flux partitions", rows)


if __name__ == "__main__":
    main()
