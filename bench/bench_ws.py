"""WebSocket benchmark: publish-to-WebSocket latency with 100 subscribers, against a real broker.

Starts its own broker (the project's launcher, unless KAFKA_BOOTSTRAP_SERVERS is set) and a Flux
node. 1,000 entities (``b<ns>/d<k>``, 100 namespaces of 10) are watched by 100 WebSocket
subscribers, each entity by exactly one: half the subscribers use a prefix pattern (``b<ns>/*``),
half subscribe to ten exact ids. Two publisher processes POST batches of events at a fixed
rate; each event carries ``t``, the wall-clock time just before its POST, and the subscriber that
receives its ``state_update`` records ``now - t``. So the figure spans the HTTP publish (acked by
the broker), the reducer, the change-feed topic, the relay and the WebSocket send.

For reference the same run measures raw aiokafka at the same rate: produce (acks=all) to a topic
and consume it in one process, one Kafka hop; Flux's path has two hops (events, then changes).

Run: ``make bench-ws`` or ``python bench/bench_ws.py [--rates 1000 10000] [--batches 100 1000]
[--seconds 15]``; each rate runs once per batch size (events per POST).
Publishers, subscribers, broker and Flux share this machine's cores.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import orjson
import websockets
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_core import _paced_publisher_loop, broker_for, kafka_options, pct, print_table, progress
from flux.localkafka import free_port
from tests.flux_process import FluxProcess

PARTITIONS = 8
NAMESPACES = 100
PER_NAMESPACE = 10
SUBSCRIBERS = 100
SUBSCRIBER_PROCESSES = 2
WARMUP_S = 2.0


def entity_id(i: int) -> str:
    return f"b{(i // PER_NAMESPACE) % NAMESPACES}/d{i % PER_NAMESPACE}"


def bench_event(i: int, run: str) -> dict:
    """One event for the ``i``-th entity of the round, stamped with the time it is sent."""
    return {
        "stream": "bench",
        "source": "ws-bench",
        "payload": {"entity_id": entity_id(i), "properties": {"t": time.time(), "run": run}},
    }


def subscriptions(subscriber: int) -> list[str]:
    """What subscriber ``subscriber`` watches: its namespace by prefix, or its ten ids exactly."""
    if subscriber % 2 == 0:
        return [f"b{subscriber}/*"]
    return [f"b{subscriber}/d{k}" for k in range(PER_NAMESPACE)]


def _subscriber_process(url: str, first: int, count: int, seconds: float, ready: object, results: object) -> None:
    """Child process: ``count`` WebSocket clients; puts ([(arrival, latency ms)], messages) on ``results``."""

    async def client(subscriber: int, latencies: list[tuple[float, float]], started: asyncio.Event) -> int:
        received = 0
        async with websockets.connect(url.replace("http", "ws") + "/api/ws", max_size=None) as ws:
            for pattern in subscriptions(subscriber):
                await ws.send(orjson.dumps({"type": "subscribe", "entity_id": pattern}).decode())
                while orjson.loads(await ws.recv())["type"] != "subscribed":
                    pass
            started.set()
            deadline = time.time() + seconds
            while (remaining := deadline - time.time()) > 0:
                try:
                    raw = await asyncio.wait_for(ws.recv(), remaining)
                except TimeoutError:
                    break
                now = time.time()
                message = orjson.loads(raw)
                if message.get("property") == "t":
                    received += 1
                    latencies.append((now, (now - message["value"]) * 1000))
        return received

    async def run() -> None:
        latencies: list[tuple[float, float]] = []
        events = [asyncio.Event() for _ in range(count)]
        tasks = [asyncio.create_task(client(first + k, latencies, events[k])) for k in range(count)]
        await asyncio.gather(*(e.wait() for e in events))
        ready.set()  # type: ignore[attr-defined]
        received = sum(await asyncio.gather(*tasks))
        results.put((latencies, received))  # type: ignore[attr-defined]

    asyncio.run(run())


def _publisher_process(url: str, rate: float, seconds: float, offset: int, run: str, batch: int) -> None:
    _paced_publisher_loop(url, rate, seconds, batch, lambda i: bench_event(i, run), offset)


def flux_phase(url: str, rate: int, seconds: float, batch: int) -> dict[str, float]:
    """One paced phase: subscribers connect, publishers publish, latencies after the warm-up."""
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    per = SUBSCRIBERS // SUBSCRIBER_PROCESSES
    readies = [ctx.Event() for _ in range(SUBSCRIBER_PROCESSES)]
    listen_s = WARMUP_S + seconds + 10.0
    subscribers = [
        ctx.Process(target=_subscriber_process, args=(url, k * per, per, listen_s, readies[k], results))
        for k in range(SUBSCRIBER_PROCESSES)
    ]
    for process in subscribers:
        process.start()
    for ready in readies:
        if not ready.wait(60):
            raise RuntimeError("subscribers did not connect")
    run = uuid.uuid4().hex[:6]
    publishers = [
        ctx.Process(
            target=_publisher_process, args=(url, rate / 2, WARMUP_S + seconds, k * PER_NAMESPACE * 50, run, batch)
        )
        for k in range(2)
    ]
    started = time.time()
    for process in publishers:
        process.start()
    for process in publishers:
        process.join()
    latencies: list[tuple[float, float]] = []
    received = 0
    for _ in subscribers:
        part, count = results.get(timeout=listen_s + 60)
        latencies.extend(part)
        received += count
    for process in subscribers:
        process.join()
    measured = [latency for arrival, latency in latencies if arrival >= started + WARMUP_S]
    published = rate * (WARMUP_S + seconds)
    return {
        "p50": pct(measured, 0.5),
        "p99": pct(measured, 0.99),
        "max": max(measured),
        "received": received,
        "published": published,
        "wall_s": time.time() - started,
    }


async def raw_phase(bootstrap: str, rate: int, seconds: float) -> dict[str, float]:
    """Raw aiokafka, one hop: produce ``rate`` records/s (acks=all, batches of 100), consume, time each."""
    topic = f"rawws-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **kafka_options())
    await admin.start()
    await admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
    await admin.close()
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=1, **kafka_options()
    )
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None, **kafka_options()
    )
    await producer.start()
    await consumer.start()
    total = int(rate * (WARMUP_S + seconds))
    latencies: list[float] = []

    async def consume() -> None:
        while len(latencies) < total:
            for records in (await consumer.getmany(timeout_ms=500, max_records=5000)).values():
                now = time.time()
                latencies.extend((now - orjson.loads(r.value)["t"]) * 1000 for r in records)

    async def produce() -> None:
        interval = 100 / rate
        next_at = time.perf_counter()
        for start in range(0, total, 100):
            for i in range(start, start + 100):  # acks arrive on their own; the consumer is the clock
                await producer.send(topic, orjson.dumps({"t": time.time()}), key=entity_id(i).encode())
            next_at += interval
            if (delay := next_at - time.perf_counter()) > 0:
                await asyncio.sleep(delay)

    reader = asyncio.create_task(consume())
    await produce()
    await asyncio.wait_for(reader, 60)
    await producer.stop()
    await consumer.stop()
    measured = latencies[int(len(latencies) * WARMUP_S / (WARMUP_S + seconds)) :]
    return {"p50": pct(measured, 0.5), "p99": pct(measured, 0.99)}


async def write_latency(url: str, wait: bool, samples: int = 300) -> list[float]:
    """Sequential single publishes, idle: time to the answer, with or without ``?wait=true``."""
    latencies: list[float] = []
    path = "/api/events?wait=true" if wait else "/api/events"
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        for i in range(samples):
            body = {"stream": "lat", "source": "bench", "payload": {"entity_id": f"w/{i}", "properties": {"i": i}}}
            t0 = time.perf_counter()
            (await client.post(path, json=body)).raise_for_status()
            latencies.append((time.perf_counter() - t0) * 1000)
            await asyncio.sleep(0.01)
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rates", type=int, nargs="*", default=[1_000, 10_000])
    parser.add_argument("--batches", type=int, nargs="*", default=[100, 1_000], help="events per POST")
    parser.add_argument("--seconds", type=float, default=15.0)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="flux-bench-ws-"))
    bootstrap, broker = broker_for(work)
    node = None
    rows: list[tuple[str, str]] = []
    try:
        node = FluxProcess(bootstrap, work / "node", free_port(), f"benchws{uuid.uuid4().hex[:6]}", PARTITIONS, {})
        progress("starting Flux")
        node.start()
        progress("idle publish latency without and with ?wait=true (300 each)")
        plain = asyncio.run(write_latency(node.url, wait=False))
        waited = asyncio.run(write_latency(node.url, wait=True))
        for label, samples in (("", plain), ("?wait=true", waited)):
            figure = f"{pct(samples, 0.5):.1f} / {pct(samples, 0.99):.1f} ms"
            rows.append((f"idle POST /api/events{label}, answer p50 / p99", figure))
        for rate in args.rates:
            progress(f"raw aiokafka at {rate:,} records/s for {args.seconds:.0f} s")
            raw = asyncio.run(raw_phase(bootstrap, rate, args.seconds))
            for batch in args.batches:
                progress(
                    f"Flux at {rate:,} events/s in POSTs of {batch}, {args.seconds:.0f} s, {SUBSCRIBERS} subscribers"
                )
                flux = flux_phase(node.url, rate, args.seconds, batch)
                rows.append(
                    (
                        f"{rate:,} events/s, {batch} per POST: publish-to-WebSocket p50 / p99 / max "
                        f"({flux['received']:,.0f} of {flux['published']:,.0f} updates received)",
                        f"{flux['p50']:.1f} / {flux['p99']:.1f} / {flux['max']:.0f} ms",
                    )
                )
            rows.append(
                (
                    f"{rate:,} records/s: raw aiokafka produce-to-consume p50 / p99 (one hop, reference)",
                    f"{raw['p50']:.1f} / {raw['p99']:.1f} ms",
                )
            )
    finally:
        if node is not None:
            node.stop()
        if broker is not None:
            broker.stop()

    print_table(
        f"{NAMESPACES * PER_NAMESPACE:,} entities, {PARTITIONS} partitions, {SUBSCRIBERS} subscribers in "
        f"{SUBSCRIBER_PROCESSES} processes, {args.seconds:.0f} s per rate after {WARMUP_S:.0f} s warm-up",
        rows,
    )


if __name__ == "__main__":
    main()
