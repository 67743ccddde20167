"""Source topics benchmark: how fast a node folds records written to a source topic (FLUX_SOURCE_TOPICS).

Starts its own broker (the project's launcher, unless KAFKA_BOOTSTRAP_SERVERS is set) and a Flux node
folding two ``upsert`` source topics of ``--source-partitions`` partitions (the node has 8), then:

- live: produces ``--records`` upsert records with aiokafka (key = entity id, value = a JSON object) while
  the node runs, and times from the first send until ``flux_events_applied_total`` counts them all
  (produce, route to the events topic, fold: end to end);
- backlog: a second topic filled before the node starts, timed from the first record applied to the last
  (the router and the reducer draining a backlog, without the producer's share of the CPU);

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

from bench.bench_core import applied_total, broker_for, kafka_options, print_table, progress, wait_applied
from flux.localkafka import free_port
from tests.flux_process import FluxProcess

PARTITIONS = 8
ENTITIES = 10_000
T0 = 1_700_000_000_000


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
    try:
        started = time.perf_counter()
        futures = []
        for i in range(n):
            key, value = record(i, run)
            futures.append(await producer.send(topic, value, key=key, timestamp_ms=T0 + i))
            if len(futures) >= 10_000:
                await asyncio.gather(*futures)
                futures.clear()
        await asyncio.gather(*futures)
        return time.perf_counter() - started
    finally:
        await producer.stop()


def drain_rate(client: httpx.Client, target: int) -> tuple[float, int]:
    """Wait until ``target`` events are applied; returns (events/s from the first applied to the last, how many)."""
    while (first := applied_total(client)) == 0:
        time.sleep(0.01)
    started = time.perf_counter()
    done = wait_applied(client, target, "backlog")
    return (target - first) / max(done - started, 1e-9), target - first


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
        rate, counted = drain_rate(client, n)
        rows.append(
            (
                f"backlog of {n:,} upsert records ({args.source_partitions} partitions): routed and folded",
                f"{rate:,.0f} records/s (over the last {counted:,})",
            )
        )

        base = applied_total(client)
        progress(f"live: producing {n:,} records while the node runs")
        started = time.perf_counter()
        produce_s = asyncio.run(produce(bootstrap, live, n, "live"))
        done = wait_applied(client, base + n, "live")
        rows.append(
            (
                f"live: {n:,} upsert records produced ({n / produce_s:,.0f}/s) and folded, end to end",
                f"{n / (done - started):,.0f} records/s",
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
