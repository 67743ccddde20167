"""History benchmark: history pages and time travel for an entity with many events, on a real broker.

Starts its own broker (unless KAFKA_BOOTSTRAP_SERVERS is set) and a Flux node, publishes
``--events`` events for one entity (and as many spread over 1,000 others), then times
``GET /api/events`` pages (first page, pages at random points of the entity's history, the
last page descending, a namespace page), and ``GET /api/state/entities/{id}?at=`` at random
points (the fold of the events up to that time), for the big entity and for small ones.

Run: ``make bench-history`` or ``python bench/bench_history.py [--events N] [--samples N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_core import applied_total, broker_for, http_ingest, pct, print_table, progress, wait_applied
from flux.localkafka import free_port
from tests.flux_process import FluxProcess

PARTITIONS = 8
T0 = 1_700_000_000_000
SMALL_ENTITIES = 1000


def big_event(i: int) -> dict:
    return {
        "stream": "history",
        "source": f"gw-{i % 4}",
        "timestamp": T0 + i * 10,
        "eventId": f"big-{i:08d}",
        "payload": {"entity_id": "hist/big", "properties": {"temp": i % 100, "seq": i}},
    }


def small_event(i: int) -> dict:
    return {
        "stream": "history",
        "source": "gw",
        "timestamp": T0 + i * 10,
        "payload": {"entity_id": f"hist/small-{i % SMALL_ENTITIES:04d}", "properties": {"v": i}},
    }


async def publish(url: str, make: Callable[[int], dict], n: int, batch: int = 1000, clients: int = 4) -> None:
    starts = list(range(0, n, batch))

    async def worker(mine: list[int]) -> None:
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            for start in mine:
                body = [make(i) for i in range(start, min(n, start + batch))]
                (await client.post("/api/events/batch", json=body)).raise_for_status()

    await asyncio.gather(*(worker(starts[k::clients]) for k in range(clients)))


def timed(client: httpx.Client, path: str, params: dict, samples: int) -> list[float]:
    """ms per GET of ``path`` with ``params`` (a dict, or a callable giving one per sample)."""
    out = []
    for _ in range(samples):
        p = params() if callable(params) else params
        t0 = time.perf_counter()
        response = client.get(path, params=p)
        out.append((time.perf_counter() - t0) * 1000)
        if response.status_code not in (200, 404):
            raise RuntimeError(f"{path} {p}: {response.status_code} {response.text[:200]}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=100_000, help="events of the big entity")
    parser.add_argument("--samples", type=int, default=300)
    args = parser.parse_args()
    n = args.events

    work = Path(tempfile.mkdtemp(prefix="flux-bench-history-"))
    bootstrap, broker = broker_for(work)
    node = FluxProcess(bootstrap, work / "node", free_port(), f"bhist{uuid.uuid4().hex[:6]}", PARTITIONS, {})
    rows: list[tuple[str, str]] = []
    try:
        progress("starting Flux")
        node.start()
        client = httpx.Client(base_url=node.url, timeout=60)
        base = applied_total(client)
        progress(f"publishing {n:,} events of one entity and {n:,} over {SMALL_ENTITIES:,} others")
        started = time.perf_counter()
        asyncio.run(publish(node.url, big_event, n))
        asyncio.run(publish(node.url, small_event, n))
        done = wait_applied(client, base + 2 * n, "apply")
        rows.append(("publish + apply, 1,000 events per POST, 4 clients", f"{2 * n / (done - started):,.0f} events/s"))

        end = T0 + (n - 1) * 10
        page = {"entity": "hist/big", "since": "0", "limit": "100"}
        checks = {
            "first page of 100": timed(client, "/api/events", page, args.samples),
            "page of 100 at a random time": timed(
                client, "/api/events", lambda: {**page, "since": str(random.randint(T0, end))}, args.samples
            ),
            "last page of 100, descending": timed(client, "/api/events", {**page, "order": "desc"}, args.samples),
            "page of 1,000 at a random time": timed(
                client,
                "/api/events",
                lambda: {**page, "limit": "1000", "since": str(random.randint(T0, end))},
                args.samples // 3,
            ),
            "namespace page of 100 (entity id, then time)": timed(
                client, "/api/events", {"namespace": "hist", "since": "0", "limit": "100"}, args.samples
            ),
        }
        for label, samples in checks.items():
            rows.append(
                (
                    f"GET /api/events, entity with {n:,} events: {label}, p50 / p99",
                    f"{pct(samples, 0.5):.1f} / {pct(samples, 0.99):.1f} ms",
                )
            )
        small_at = timed(
            client,
            f"/api/state/entities/hist/small-{random.randrange(SMALL_ENTITIES):04d}",
            lambda: {"at": str(random.randint(T0, end))},
            args.samples,
        )
        rows.append(
            (
                f"?at= for an entity with {n // SMALL_ENTITIES} events, p50 / p99",
                f"{pct(small_at, 0.5):.1f} / {pct(small_at, 0.99):.1f} ms",
            )
        )
        big_at = timed(client, "/api/state/entities/hist/big", lambda: {"at": str(random.randint(T0, end))}, 30)
        rows.append(
            (
                f"?at= for the entity with {n:,} events (folds up to all of them), p50 / p99",
                f"{pct(big_at, 0.5):.0f} / {pct(big_at, 0.99):.0f} ms",
            )
        )
        progress(f"flux backfill of a {n:,}-event JSON Lines file")
        archive = work / "archive.jsonl"
        archive.write_text("".join(orjson.dumps(small_event(n + i)).decode() + "\n" for i in range(n)))
        t0 = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "api.cli", "backfill", str(archive), "--url", node.url],
            capture_output=True,
            text=True,
            check=True,
        )
        backfill_s = time.perf_counter() - t0
        assert f"accepted {n:,}" in done.stdout, done.stdout + done.stderr
        rows.append(
            (f"flux backfill, {n:,} events from a file, 1,000 per POST (acked)", f"{n / backfill_s:,.0f} events/s")
        )
        ingest_s, _ = asyncio.run(http_ingest(node.url, n, "hist", 1000, 1))
        rows.append(("the same load from one in-process HTTP client, for reference", f"{n / ingest_s:,.0f} events/s"))
    finally:
        node.stop()
        if broker is not None:
            broker.stop()
    print_table(f"{PARTITIONS} partitions, one node, {args.samples} samples per page figure", rows)


if __name__ == "__main__":
    main()
