"""Replay benchmark: re-deriving state from the events topic, on a real broker.

Starts its own broker (unless KAFKA_BOOTSTRAP_SERVERS is set) and a Flux node, publishes
``--events`` events over ``--entities`` entities (1,000 per POST), waits until they are applied,
then measures in one run:

- raw aiokafka: one event per record produced to a fresh topic, then consumed (count only), and a
  plain read of the Flux events topic itself (getmany + JSON decode, no fold);
- ``POST /api/admin/replay`` from the beginning: the fold rate of the new generation, the whole
  job's time, and how long live writes paused for the switch (an unchanged log: nothing to write);
- the same replay while a paced publisher adds live events and a reader samples GET latency.

Run: ``make bench-replay`` or ``python bench/bench_replay.py [--events N] [--entities N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_core import broker_for, kafka_options, pct, print_table, progress, raw_kafka, wait_applied
from flux.localkafka import free_port
from tests.flux_process import FluxProcess

PARTITIONS = 8
T0 = 1_700_000_000_000


def bench_event(i: int, entities: int) -> dict:
    return {
        "stream": "replay",
        "source": f"gw-{i % 8}",
        "timestamp": T0 + i,
        "payload": {"entity_id": f"fleet/dev-{i % entities:07d}", "properties": {"temp": i % 100, "seq": i}},
    }


async def publish(url: str, n: int, entities: int, first: int = 0, batch: int = 1000, clients: int = 4) -> None:
    starts = list(range(first, first + n, batch))

    async def worker(mine: list[int]) -> None:
        async with httpx.AsyncClient(base_url=url, timeout=120) as client:
            for start in mine:
                body = orjson.dumps([bench_event(i, entities) for i in range(start, min(first + n, start + batch))])
                response = await client.post(
                    "/api/events/batch", content=body, headers={"content-type": "application/json"}
                )
                response.raise_for_status()

    await asyncio.gather(*(worker(starts[k::clients]) for k in range(clients)))


async def read_topic(bootstrap: str, topic: str) -> tuple[int, float]:
    """Read every record of ``topic`` and decode it; returns (events, seconds)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=8 << 20,
        **kafka_options(),
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        await consumer.seek_to_beginning(*tps)
        events = 0
        started = time.perf_counter()
        while any([await consumer.position(tp) < ends[tp] for tp in tps]):
            for records in (await consumer.getmany(timeout_ms=500, max_records=20_000)).values():
                for record in records:
                    decoded = orjson.loads(record.value)
                    events += len(decoded) if isinstance(decoded, list) else 1
        return events, time.perf_counter() - started
    finally:
        await consumer.stop()


def run_replay(client: httpx.Client) -> dict:
    job = client.post("/api/admin/replay", json={"fromBeginning": True}).json()
    last = 0.0
    while job["status"] not in ("done", "failed", "cancelled"):
        time.sleep(0.2)
        job = client.get(f"/api/admin/replay/{job['jobId']}").json()
        if time.monotonic() - last > 2:
            progress(
                f"replay: {job['percent']}% {job['events']:,} events {job['eventsPerSecond']:,}/s [{job['status']}]"
            )
            last = time.monotonic()
    if job["status"] != "done":
        raise SystemExit(f"replay {job['status']}: {job['error']}")
    return job  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=500_000)
    parser.add_argument("--entities", type=int, default=50_000)
    parser.add_argument("--live-rate", type=int, default=2_000, help="live events/s during the second replay")
    args = parser.parse_args()
    n = args.events

    work = Path(tempfile.mkdtemp(prefix="flux-bench-replay-"))
    bootstrap, broker = broker_for(work)
    node = FluxProcess(bootstrap, work / "node", free_port(), f"brep{uuid.uuid4().hex[:6]}", PARTITIONS, {})
    rows: list[tuple[str, str]] = []
    try:
        progress("starting Flux")
        node.start()
        client = httpx.Client(base_url=node.url, timeout=60)
        progress(f"publishing {n:,} events over {args.entities:,} entities")
        asyncio.run(publish(node.url, n, args.entities))
        wait_applied(client, n, "apply")

        progress("raw aiokafka, same broker")
        raw = asyncio.run(raw_kafka(bootstrap, min(n, 200_000)))
        read_events, read_s = asyncio.run(read_topic(bootstrap, node.events_topic))
        rows.append(("raw aiokafka consume, one event per record (count only)", f"{raw['raw_consume']:,.0f} events/s"))
        rows.append(
            (
                "raw aiokafka read of the Flux events topic (getmany + JSON decode)",
                f"{read_events / read_s:,.0f} events/s",
            )
        )

        progress("replay from the beginning, idle node")
        job = run_replay(client)
        report = job["report"]
        fold_rate = job["events"] / report["foldSeconds"]
        rows.append(
            (
                f"replay of {job['events']:,} events: fold into the new generation",
                f"{fold_rate:,.0f} events/s ({fold_rate / raw['raw_consume']:.2f}x raw consume)",
            )
        )
        rows.append(("replay: whole job (start, fold, switch)", f"{report['seconds']:.2f} s"))
        rows.append(
            (
                f"replay: live writes paused for the switch ({report['entities']:,} entities compared)",
                f"{report['writesPausedMs']:,.0f} ms",
            )
        )

        progress(f"replay from the beginning under {args.live_rate:,} live events/s and GET sampling")
        stop = threading.Event()
        latencies: list[float] = []
        live_sent = [0]

        def live() -> None:
            with httpx.Client(base_url=node.url, timeout=60) as writer:
                i = n
                while not stop.is_set():
                    started = time.perf_counter()
                    body = [bench_event(j, args.entities) for j in range(i, i + args.live_rate // 10)]
                    writer.post("/api/events/batch", json=body).raise_for_status()
                    i += len(body)
                    live_sent[0] += len(body)
                    time.sleep(max(0.0, 0.1 - (time.perf_counter() - started)))

        def reads() -> None:
            with httpx.Client(base_url=node.url, timeout=60) as reader:
                k = 0
                while not stop.is_set():
                    started = time.perf_counter()
                    reader.get(f"/api/state/entities/fleet/dev-{k % args.entities:07d}")
                    latencies.append((time.perf_counter() - started) * 1000)
                    k += 7919
                    time.sleep(0.01)

        threads = [threading.Thread(target=live), threading.Thread(target=reads)]
        for thread in threads:
            thread.start()
        try:
            busy = run_replay(client)
        finally:
            stop.set()
            for thread in threads:
                thread.join()
        wait_applied(client, n + live_sent[0], "live events")
        busy_report = busy["report"]
        busy_rate = busy["events"] / busy_report["foldSeconds"]
        rows.append((f"replay under {args.live_rate:,} live events/s: fold", f"{busy_rate:,.0f} events/s"))
        rows.append(
            (
                "replay under live traffic: whole job / writes paused",
                f"{busy_report['seconds']:.2f} s / {busy_report['writesPausedMs']:,.0f} ms",
            )
        )
        rows.append(
            ("GET entity during that replay, p50 / p99", f"{pct(latencies, 0.5):.1f} / {pct(latencies, 0.99):.1f} ms")
        )
        print_table(f"`python bench/bench_replay.py --events {n} --entities {args.entities}`", rows)
    finally:
        node.stop()
        if broker is not None:
            broker.stop()


if __name__ == "__main__":
    main()
