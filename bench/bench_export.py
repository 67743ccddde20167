"""Export benchmark: ``flux export`` of N entities from a real node, its rate and its memory.

Uses the node at ``--url``, or starts a broker (unless KAFKA_BOOTSTRAP_SERVERS is set) and a node.
Publishes ``--entities`` entities (one event each, under a fresh prefix, 10,000 per batch) and waits
until the node applied them (its ``flux_events_applied_total``), then runs
``python -m api.cli export --prefix ...`` as its own process twice: over the first tenth or so of the
entities, then over all of them. For each it reports entities/s, the export process's CPU time and its
peak RSS (``wait4``'s ``ru_maxrss``): flat memory means both peaks are about the same.
Last, it times one page deep in the list fetched by cursor (``after=``, as the Link header pages) and by
``offset=`` (which walks every entity before it, so past ``FLUX_LIST_MAX_OFFSET`` it is refused: ``422``).

Run: ``python bench/bench_export.py [--entities 1000000] [--url http://localhost:3000]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_core import applied_total, broker_for, progress, wait_applied
from flux.localkafka import free_port
from tests.flux_process import FluxProcess

PARTITIONS = 8
BATCH = 10_000
PAGE = 10_000  # flux export's page
T0 = 1_700_000_000_000


def entity_event(prefix: str, i: int) -> dict:
    return {
        "stream": "bench",
        "source": f"gw-{i % 8}",
        "timestamp": T0 + i,
        "payload": {
            "entity_id": f"{prefix}dev-{i:07d}",
            "properties": {"temp": 20 + i % 15, "unit": "celsius", "seq": i, "site": f"site-{i % 97}"},
        },
    }


async def populate(url: str, prefix: str, n: int, clients: int = 4) -> None:
    starts = list(range(0, n, BATCH))
    done = [0]
    started = time.perf_counter()

    async def worker(mine: list[int]) -> None:
        async with httpx.AsyncClient(base_url=url, timeout=300) as client:
            for start in mine:
                body = orjson.dumps([entity_event(prefix, i) for i in range(start, min(n, start + BATCH))])
                while True:  # a loaded machine: 503 while partitions move, retried
                    response = await client.post(
                        "/api/events/batch", content=body, headers={"content-type": "application/json"}
                    )
                    if response.status_code not in (502, 503):
                        break
                    await asyncio.sleep(1.0)
                response.raise_for_status()
                done[0] += min(n, start + BATCH) - start
                if done[0] % 100_000 < BATCH:
                    progress(f"published {done[0]:,}/{n:,} ({done[0] / (time.perf_counter() - started):,.0f}/s)")

    await asyncio.gather(*(worker(starts[i::clients]) for i in range(clients)))


def export(url: str, prefix: str, out: Path) -> tuple[int, float, int, float]:
    """Run ``flux export`` as a process: (lines, seconds, peak RSS in bytes, its CPU seconds)."""
    started = time.perf_counter()
    with out.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "api.cli", "export", "--prefix", prefix, "--url", url],
            stdout=sink,
            stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        )
        _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    assert proc.stderr is not None
    err = proc.stderr.read().decode()
    if proc.returncode != 0:
        raise RuntimeError(f"export failed ({proc.returncode}): {err}")
    progress(err.strip())
    with out.open("rb") as exported:
        lines = sum(1 for _ in exported)
    return lines, seconds, usage.ru_maxrss * 1024, usage.ru_utime + usage.ru_stime


def offset_probe(url: str, prefix: str, n: int) -> list[str]:
    """One page deep in the list (at 90 %) by cursor, as the Link header pages, and by offset: its time,
    or how it failed."""
    deep = int(n * 0.9)
    params = {"prefix": prefix, "limit": str(PAGE)}
    outcomes = []
    with httpx.Client(base_url=url, timeout=300) as client:
        for extra in ({"after": f"{prefix}dev-{deep - 1:07d}"}, {"offset": str(deep)}):
            started = time.perf_counter()
            try:
                page = client.get("/api/state/entities", params={**params, **extra})
            except httpx.HTTPError as exc:
                outcomes.append(f"{exc!r} after {time.perf_counter() - started:,.1f} s")
                continue
            seconds = time.perf_counter() - started
            if page.status_code != 200:
                outcomes.append(f"{page.status_code} after {seconds:,.1f} s: {page.text[:120]}")
                continue
            assert page.json()[0]["id"] == f"{prefix}dev-{deep:07d}"
            outcomes.append(f"{seconds * 1000:,.0f} ms")
    return outcomes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entities", type=int, default=1_000_000)
    parser.add_argument("--url", default=None, help="a running node (default: start a broker and a node)")
    args = parser.parse_args()
    n = args.entities
    prefix = f"bexp{uuid.uuid4().hex[:6]}/"
    work = Path(tempfile.mkdtemp(prefix="flux-bench-export-"))
    node = broker = None
    url = args.url
    try:
        if url is None:
            bootstrap, broker = broker_for(work)
            node = FluxProcess(bootstrap, work / "node", free_port(), f"bexp{uuid.uuid4().hex[:6]}", PARTITIONS, {})
            progress("starting a Flux node")
            node.start()
            url = node.url
        progress(f"publishing {n:,} entities under {prefix}")
        started = time.perf_counter()
        with httpx.Client(base_url=url, timeout=60) as metrics:
            before = applied_total(metrics)
            asyncio.run(populate(url, prefix, n))
            wait_applied(metrics, before + n, "entities")
        progress(f"published and applied in {time.perf_counter() - started:.1f} s")
        digits = max(0, len(str(max(n // 10, 1))) - 1)  # the first 10^digits entities: about a tenth or less
        small_prefix = f"{prefix}dev-{'0' * (7 - digits)}"
        rows = []
        for label, scope in ((f"first {10**digits:,}", small_prefix), (f"all {n:,}", prefix)):
            lines, seconds, rss, cpu = export(url, scope, work / "state.ndjson")
            rows.append((label, lines, seconds, lines / seconds, rss, cpu))
        print(f"\nflux export from {url} ({PARTITIONS if node else '?'} partitions), {os.cpu_count()} CPUs")
        print(f"{'export':>16} {'entities':>11} {'seconds':>8} {'entities/s':>11} {'peak RSS':>10} {'CPU s':>7}")
        for label, lines, seconds, rate, rss, cpu in rows:
            print(f"{label:>16} {lines:>11,} {seconds:>8.1f} {rate:>11,.0f} {rss / 2**20:>7.1f} MB {cpu:>7.1f}")
        sys.stdout.flush()
        by_cursor, by_offset = offset_probe(url, prefix, n)
        print(f"one page of {PAGE:,} at 90 % of the list: by cursor (after=) {by_cursor}, by offset= {by_offset}")
        assert rows[-1][1] == n, f"exported {rows[-1][1]:,} of {n:,}"
    finally:
        if node is not None:
            node.stop()
        if broker is not None:
            broker.stop()


if __name__ == "__main__":
    main()
