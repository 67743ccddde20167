"""Core benchmark: ingest, apply, latency, against a real broker, with raw aiokafka as the ceiling.

Starts its own broker (the project's launcher, unless KAFKA_BOOTSTRAP_SERVERS is set) and a
Flux node, then prints one table. Run: ``make bench`` or ``python bench/bench_core.py [--events N]``.
The load generator runs on the same machine as the broker and Flux, and takes CPU from them.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flux.config import Settings
from flux.kafka.security import client_options
from flux.localkafka import LocalKafka, free_port
from tests.flux_process import FluxProcess

PARTITIONS = 8
ENTITIES = 10_000
HISTORY_SAMPLE = 40  # entities whose whole histories are compared between the live node and the new one


def progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def event(i: int, run: str) -> dict:
    return {
        "stream": "bench",
        "source": f"sensor-gw-{i % 16}",
        "timestamp": 1_700_000_000_000 + i,
        "payload": {"entity_id": f"{run}/dev-{i % ENTITIES}", "properties": {"temp": i % 100, "seq": i}},
    }


def broker_for(work: Path) -> tuple[str, LocalKafka | None]:
    """KAFKA_BOOTSTRAP_SERVERS if set, else a local broker started under ``work`` (returned to stop)."""
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if bootstrap:
        return bootstrap, None
    progress("starting a local Kafka broker")
    broker = LocalKafka(work / "kafka", port=free_port(), controller_port=free_port())
    return broker.start(), broker


def kafka_options() -> dict[str, Any]:
    """The raw clients' security options: the FLUX_KAFKA_* variables, read as a Flux node reads them."""
    return client_options(Settings())


def print_table(heading: str, rows: list[tuple[str, str]]) -> None:
    """Print ``heading`` and ``rows`` as a Markdown table (for BENCHMARKS.md)."""
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    print()
    print(f"Machine: {machine}; {heading}")
    print("| measure | figure |")
    print("| --- | --- |")
    for label, value in rows:
        print(f"| {label} | {value} |")


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def raw_kafka(bootstrap: str, n: int) -> dict[str, float]:
    """aiokafka alone: produce one record per event (acks=all, idempotent), then consume them."""
    topic = f"raw-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **kafka_options())
    await admin.start()
    await admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
    await admin.close()
    values = [orjson.dumps(event(i, "raw")) for i in range(n)]
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5, **kafka_options()
    )
    await producer.start()
    started = time.perf_counter()
    futures = [await producer.send(topic, v, key=str(i % ENTITIES).encode()) for i, v in enumerate(values)]
    await asyncio.gather(*futures)
    produce_s = time.perf_counter() - started
    await producer.stop()
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None, **kafka_options()
    )
    await consumer.start()
    seen = 0
    started = time.perf_counter()
    while seen < n:
        for records in (await consumer.getmany(timeout_ms=1000, max_records=10_000)).values():
            seen += len(records)
    consume_s = time.perf_counter() - started
    await consumer.stop()
    return {"raw_produce": n / produce_s, "raw_consume": n / consume_s}


def applied_total(client: httpx.Client) -> int:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("flux_events_applied_total "):
            return int(float(line.split()[1]))
    return 0


async def http_ingest(
    url: str, n: int, run: str, batch: int, concurrency: int, headers: dict[str, str] | None = None
) -> tuple[float, float]:
    """POST batches from ``concurrency`` clients (with ``headers``); returns (seconds, start time)."""
    bodies = [orjson.dumps([event(i, run) for i in range(s, min(n, s + batch))]) for s in range(0, n, batch)]
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)

    async def worker() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=60, headers=headers) as client:
            while not queue.empty():
                body = queue.get_nowait()
                response = await client.post(
                    "/api/events/batch", content=body, headers={"content-type": "application/json"}
                )
                response.raise_for_status()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started, started


async def get_latency_under_load(url: str, run: str, stop: asyncio.Event) -> list[float]:
    samples: list[float] = []
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        while not stop.is_set():
            entity = f"{run}/dev-{random.randrange(ENTITIES)}"
            t0 = time.perf_counter()
            await client.get(f"/api/state/entities/{entity}")
            samples.append((time.perf_counter() - t0) * 1000)
            await asyncio.sleep(0.005)
    return samples


async def publish_to_visible(url: str, stop: asyncio.Event, pause_s: float, samples: int | None = None) -> list[float]:
    """Single POST of a new entity, then GET every 1 ms until it is visible; until ``stop`` or ``samples``."""
    latencies: list[float] = []
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        while not stop.is_set() and (samples is None or len(latencies) < samples):
            entity = f"lat/{uuid.uuid4().hex[:12]}"
            t0 = time.perf_counter()
            body = {"stream": "lat", "source": "bench", "payload": {"entity_id": entity, "properties": {"x": 1}}}
            (await client.post("/api/events", json=body)).raise_for_status()
            while (await client.get(f"/api/state/entities/{entity}")).status_code != 200:
                await asyncio.sleep(0.001)
            latencies.append((time.perf_counter() - t0) * 1000)
            await asyncio.sleep(pause_s)
    return latencies


def _paced_publisher(url: str, rate: float, seconds: float, run: str, batch: int, offset: int) -> None:
    """Child process: POST batches at ``rate`` events/s for ``seconds``, then exit."""
    _paced_publisher_loop(url, rate, seconds, batch, lambda j: event(j, run), offset)


def _paced_publisher_loop(
    url: str, rate: float, seconds: float, batch: int, make_event: Callable[[int], dict], offset: int
) -> None:
    """POST ``rate * seconds`` events (``make_event(i)``) in batches at ``rate`` events/s, without waiting for
    answers. Every batch is sent even when the generator falls behind, so callers can count on the total."""

    async def publish() -> None:
        interval = batch / rate
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            inflight: set[asyncio.Task] = set()
            next_at = time.perf_counter()
            i = offset
            for _ in range(int(rate * seconds) // batch):
                body = orjson.dumps([make_event(j) for j in range(i, i + batch)])
                i += batch
                task = asyncio.create_task(
                    client.post("/api/events/batch", content=body, headers={"content-type": "application/json"})
                )
                inflight.add(task)
                task.add_done_callback(inflight.discard)
                next_at += interval
                delay = next_at - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            await asyncio.gather(*inflight)

    asyncio.run(publish())


async def paced_phase(url: str, rate: int, seconds: float, run: str, batch: int) -> dict[str, float]:
    """Publish ``rate`` events/s (from two child processes) while this process probes latency.

    The load comes from other processes so that building request bodies never delays the
    probes' own event loop: the probes measure Flux, not the load generator.
    """
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    publishers = [
        ctx.Process(target=_paced_publisher, args=(url, rate / 2, seconds, run, batch, k * 10_000_000))
        for k in range(2)
    ]
    for process in publishers:
        process.start()
    stop = asyncio.Event()

    await asyncio.sleep(1.0)  # let the publishers start
    started = time.perf_counter()
    tasks = [
        asyncio.create_task(get_latency_under_load(url, run, stop)),
        asyncio.create_task(publish_to_visible(url, stop, 0.02)),
    ]
    await asyncio.to_thread(lambda: [p.join() for p in publishers])
    stop.set()
    gets, visible = await asyncio.gather(*tasks)
    return {
        "get_p50": pct(gets, 0.5),
        "get_p99": pct(gets, 0.99),
        "gets": len(gets),
        "vis_p50": pct(visible, 0.5),
        "vis_p99": pct(visible, 0.99),
        "vis_n": len(visible),
        "window_s": time.perf_counter() - started,
    }


STUCK_S = 60.0  # an applied count that does not move for this long means events were lost


class EventsLost(Exception):
    """The applied count stopped short of what was published."""


def wait_applied(client: httpx.Client, target: int, label: str) -> float:
    last_report = 0.0
    moved_at, last_done = time.perf_counter(), -1
    while True:
        done = applied_total(client)
        now = time.perf_counter()
        if done >= target:
            return now
        if done != last_done:
            moved_at, last_done = now, done
        elif now - moved_at > STUCK_S:
            raise EventsLost(f"{label}: the applied count stuck at {done:,} of {target:,} for {STUCK_S:.0f} s")
        if now - last_report > 2:
            progress(f"{label}: {done:,}/{target:,} applied")
            last_report = now
        time.sleep(0.02)


def history_ids(client: httpx.Client, entity: str) -> list[str]:
    """The eventIds of ``entity``'s whole history, following the Link pages."""
    ids: list[str] = []
    response = client.get("/api/events", params={"entity": entity, "since": "0", "limit": "1000"})
    while True:
        response.raise_for_status()
        ids.extend(e["eventId"] for e in response.json())
        following = response.links.get("next")
        if following is None:
            return ids
        response = client.get(following["url"])


def histories_identical(node: httpx.Client, replica: httpx.Client, run: str, sample: int) -> tuple[int, int]:
    """(entities whose histories differ between the two nodes, events the node's sample holds)."""
    differ = held = 0
    for k in random.Random(17).sample(range(ENTITIES), sample):
        mine = history_ids(node, f"{run}/dev-{k}")
        held += len(mine)
        differ += mine != history_ids(replica, f"{run}/dev-{k}")
    return differ, held


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rates", type=int, nargs="*", default=[10_000, 20_000])
    parser.add_argument("--seconds", type=float, default=15.0)
    args = parser.parse_args()
    n = args.events

    work = Path(tempfile.mkdtemp(prefix="flux-bench-"))
    bootstrap, broker = broker_for(work)
    results: dict[str, float] = {}
    node = None
    replica = None
    try:
        progress(f"raw aiokafka: producing and consuming {n:,} events")
        results.update(asyncio.run(raw_kafka(bootstrap, n)))

        app_id = f"bench{uuid.uuid4().hex[:6]}"
        node = FluxProcess(bootstrap, work / "node", free_port(), app_id, PARTITIONS, {})
        progress("starting Flux")
        node.start()
        client = httpx.Client(base_url=node.url, timeout=30)

        progress("publish-to-visible latency, idle (200 samples)")
        idle = asyncio.run(publish_to_visible(node.url, asyncio.Event(), 0.01, samples=200))
        base_applied = applied_total(client)

        progress(f"HTTP batch ingest: {n:,} events in batches of {args.batch}, {args.concurrency} clients")

        async def ingest_with_reads() -> tuple[float, float, list[float]]:
            stop = asyncio.Event()
            reader = asyncio.create_task(get_latency_under_load(node.url, "run1", stop))
            seconds, started = await http_ingest(node.url, n, "run1", args.batch, args.concurrency)
            stop.set()
            return seconds, started, await reader

        ingest_s, ingest_started, get_samples = asyncio.run(ingest_with_reads())
        done_at = wait_applied(client, base_applied + n, "live apply")
        results["ingest"] = n / ingest_s
        results["apply_e2e"] = n / (done_at - ingest_started)

        for rate in args.rates:
            progress(f"paced load: {rate:,} events/s for {args.seconds:.0f} s with GET and publish-to-visible probes")
            before = applied_total(client)
            started = time.perf_counter()
            paced = asyncio.run(paced_phase(node.url, rate, args.seconds, "run1", 500))
            target = before + int(rate * args.seconds)
            paced["achieved"] = (target - before) / (wait_applied(client, target, f"paced {rate}") - started - 1.0)
            results.update({f"paced{rate}_{k}": v for k, v in paced.items()})

        progress("fold from the log: a second node with a new group reads the same topic from the start")
        replica = FluxProcess(
            bootstrap, work / "replica", free_port(), f"{app_id}r", PARTITIONS, {"FLUX_EVENTS_TOPIC": node.events_topic}
        )
        replica_started = time.perf_counter()
        replica.start()
        replica_client = httpx.Client(base_url=replica.url, timeout=30)
        total = applied_total(client)
        done_at = wait_applied(replica_client, total, "fold from log")
        results["fold_from_log"] = total / (done_at - replica_started)
        results["fold_events"] = total

        node_state = client.get("/api/state/entities?prefix=run1/&limit=10000").json()
        replica_state = replica_client.get("/api/state/entities?prefix=run1/&limit=10000").json()
        identical = node_state == replica_state and len(node_state) == ENTITIES
        progress(f"comparing the histories of {HISTORY_SAMPLE} sampled entities on both nodes")
        differ, held = histories_identical(client, replica_client, "run1", HISTORY_SAMPLE)
    finally:
        for process in (replica, node):
            if process is not None:
                process.stop()
        if broker is not None:
            broker.stop()

    r = results
    rows = [
        ("raw aiokafka produce, 1 record/event, acks=all, idempotent", f"{r['raw_produce']:,.0f} events/s"),
        ("raw aiokafka consume (getmany, count only)", f"{r['raw_consume']:,.0f} events/s"),
        (
            f"Flux HTTP batch ingest ({args.batch}/batch, {args.concurrency} clients, acked)",
            f"{r['ingest']:,.0f} events/s ({r['ingest'] / r['raw_produce']:.2f}x raw produce)",
        ),
        ("Flux end-to-end apply (first POST to last event folded)", f"{r['apply_e2e']:,.0f} events/s"),
        (
            f"Flux fold from the log ({r['fold_events']:,.0f} events, new node from offset 0, incl. start-up)",
            f"{r['fold_from_log']:,.0f} events/s ({r['fold_from_log'] / r['raw_consume']:.2f}x raw consume)",
        ),
        (
            f"GET entity during saturating ingest, p50 / p99 ({len(get_samples)} requests)",
            f"{pct(get_samples, 0.5):.1f} / {pct(get_samples, 0.99):.1f} ms",
        ),
        (
            "publish-to-visible, idle, p50 / p99 (single POST, then GET every 1 ms)",
            f"{pct(idle, 0.5):.1f} / {pct(idle, 0.99):.1f} ms",
        ),
    ]
    for rate in args.rates:
        p = {k.split("_", 1)[1]: v for k, v in r.items() if k.startswith(f"paced{rate}_")}
        rows.append(
            (
                f"paced {rate:,} events/s (applied at {p['achieved']:,.0f}/s): GET entity p50 / p99 ({p['gets']:.0f})",
                f"{p['get_p50']:.1f} / {p['get_p99']:.1f} ms",
            )
        )
        rows.append(
            (
                f"paced {rate:,} events/s: publish-to-visible p50 / p99 ({p['vis_n']:.0f} samples)",
                f"{p['vis_p50']:.1f} / {p['vis_p99']:.1f} ms",
            )
        )
    rows.append(("replica state identical to live state", str(identical)))
    rows.append(
        (
            f"histories of {HISTORY_SAMPLE} sampled entities identical on both nodes ({held:,} events)",
            "True" if differ == 0 else f"False: {differ} differ",
        )
    )
    print_table(f"events: {n:,}, {ENTITIES:,} entities, {PARTITIONS} partitions", rows)


if __name__ == "__main__":
    main()
