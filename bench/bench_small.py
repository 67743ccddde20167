"""Small-machine benchmark (issue 17): Flux's single-event figures beside their targets and ceilings.

Everything is measured in one run on this machine, with the load tools of ``../shared/load``
(``wrk`` with ``post_event.lua`` / ``get_entity.lua``, and ``flux_load.py``):

- ceilings: a hello-world uvicorn app (httptools, no access log, as many processes as Flux's HTTP
  server) that ``orjson.loads`` the same body and answers a small JSON, under the same ``wrk``
  commands; and raw aiokafka producing single small records (acks=all, idempotent) to a fresh topic
  on the same broker while a consumer reads them back;
- Flux, one node on a free port with its own data dir and app id (so topics are fresh): single-event
  POST (``wrk -c64``) and the time until all of it is folded; GET one entity (``wrk -c16``) idle and
  while 5,000 events/s arrive; publish -> WebSocket latency idle, at 1,000 and at 5,000 events/s
  (``flux_load.py latency``); single-event records produced straight to the events topic and
  folded; the applied-lag p99 at 5,000 events/s if ``/metrics`` has such a metric.

The broker is ``KAFKA_BOOTSTRAP_SERVERS`` if set, else a local one started the way ``flux serve``
does (its jars come from Maven Central on first use). Whatever the script starts it stops at the
end, also on Ctrl-C or an error. The fold settles (applied == published in ``/metrics``) between
steps, so one step's backlog never shows up in the next.

Run: ``make bench-small`` or ``python bench/bench_small.py [--seconds 20] [--quick] [--only post,get]
[--url http://127.0.0.1:3000]``. Needs Debian's ``wrk`` (``apt-get install -y wrk``). The load
generators, the broker and Flux share this machine's cores.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_core import broker_for, kafka_options, progress
from flux.config import Settings
from flux.localkafka import free_port
from tests.flux_process import FluxProcess

ROOT = Path(__file__).resolve().parents[1]
LOAD_DIR = Path(os.environ.get("FLUX_LOAD_DIR", ROOT.parent / "shared" / "load"))
STEPS = ("http-ceiling", "kafka-ceiling", "post", "get", "get-load", "ws-idle", "ws-1k", "ws-5k", "kafka-fold", "lag")
WRK_STEPS = {"http-ceiling", "post", "get", "get-load"}
ENTITIES = 10_000  # post_event.lua and get_entity.lua cycle over sensor-0 .. sensor-9999
SETTLE_TIMEOUT_S = 300.0
APPLIED_P99_TARGET_MS = 200.0  # target 4 of issue 17


# -- the hello-world ceiling ---------------------------------------------------------------------------------------


async def hello_app(scope: dict[str, Any], receive: Callable[[], Any], send: Callable[[dict[str, Any]], Any]) -> None:
    """Raw ASGI: read the body, ``orjson.loads`` it if there is one, answer a small JSON (uvicorn's ceiling)."""
    if scope["type"] != "http":
        return
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    answer: dict[str, Any] = {"status": "ok"}
    if body:
        answer["entity_id"] = orjson.loads(body)["payload"]["entity_id"]
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": orjson.dumps(answer)})


def http_workers() -> int:
    """Flux's HTTP processes, as the node will run them (``FLUX_HTTP_PROCESSES``; 0 counts as the
    one process that then serves HTTP)."""
    return max(1, Settings().http_process_count())


# -- results -------------------------------------------------------------------------------------------------------


@dataclass
class Row:
    """One line of the table; ``ok`` None means no target (or nothing measured)."""

    measure: str
    flux: str
    target: str = "—"
    ceiling: str = "—"
    ok: bool | None = None


def verdict(ok: bool | None) -> str:
    return "—" if ok is None else ("pass" if ok else "FAIL")


def machine_facts() -> str:
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    now = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    return f"{os.cpu_count()} CPUs ({model}), Python {platform.python_version()}, {now}"


def print_table(rows: list[Row], command: str) -> None:
    """The one table, with ``rich`` if it is installed, else aligned plain text."""
    header = f"Machine: {machine_facts()}\nCommand: {command}"
    columns = ("measure", "Flux", "target", "ceiling (same run)", "pass/fail")
    cells = [(r.measure, r.flux, r.target, r.ceiling, verdict(r.ok)) for r in rows]
    try:
        from rich import box
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        widths = [max(len(c[i]) for c in [columns, *cells]) for i in range(len(columns))]
        print(header)
        for line in [columns, tuple("-" * w for w in widths), *cells]:
            print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())
        return
    console = Console(width=None if sys.stdout.isatty() else 1000)  # a file or pipe: each row on one line
    table = Table(*columns, box=box.SIMPLE_HEAVY, title=None, show_lines=False)
    for cell in cells:
        style = "red" if cell[4] == "FAIL" else None
        table.add_row(*cell, style=style)
    console.print(header, highlight=False)
    console.print(table)


# -- processes this run starts -------------------------------------------------------------------------------------


class Children:
    """Every process the run starts (and the broker and node), stopped in reverse order by :meth:`close`."""

    def __init__(self) -> None:
        self._stops: list[tuple[str, Callable[[], object]]] = []

    def add(self, name: str, stop: Callable[[], object]) -> None:
        self._stops.append((name, stop))

    def popen(self, name: str, argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(argv, **kwargs)
        self.add(name, lambda: terminate(proc))
        return proc

    def close_last(self) -> None:
        """Stop the most recently started child (the hello-world server once it is measured)."""
        if self._stops:
            self._stops.pop()[1]()

    def close(self) -> None:
        while self._stops:
            name, stop = self._stops.pop()
            try:
                stop()
            except Exception as exc:  # keep stopping the others
                progress(f"stopping {name} failed: {exc!r}")


def terminate(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """SIGTERM this one process (not a group, not a name) and wait; SIGKILL past ``timeout``."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def wait_http(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            httpx.get(url, timeout=2)
            return
        time.sleep(0.2)
    raise TimeoutError(f"nothing answers at {url} after {timeout:.0f} s")


def start_hello(children: Children, workers: int, log: Path) -> str:
    port = free_port()
    argv = [sys.executable, "-m", "uvicorn", "bench.bench_small:hello_app", "--app-dir", str(ROOT)]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--http", "httptools", "--no-access-log"]
    argv += ["--lifespan", "off", "--log-level", "warning", "--workers", str(workers)]
    with open(log, "ab") as out:
        proc = children.popen("hello-world server", argv, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/")
    if proc.poll() is not None:
        raise RuntimeError(f"the hello-world server exited with {proc.returncode}; see {log}")
    return url


# -- wrk ------------------------------------------------------------------------------------------------------------


@dataclass
class WrkResult:
    rps: float
    p99_ms: float
    non2xx: int
    socket_errors: int
    requests: int

    def p99(self) -> str:
        """The p99 for the table (wrk has latencies of completed requests only: none when nothing answered)."""
        return f"{self.p99_ms:.1f} ms" if self.requests else "no answers"

    def errors(self) -> str:
        """`` (N non-2xx, M socket errors)`` when there were any, else nothing."""
        if not self.non2xx + self.socket_errors:
            return ""
        return f" ({self.non2xx:,} non-2xx, {self.socket_errors:,} socket errors)"


def run_wrk(url: str, script: str, connections: int, seconds: float) -> WrkResult:
    argv = ["wrk", "-t2", f"-c{connections}", f"-d{seconds:g}s", "-s", str(LOAD_DIR / script), url]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=True).stdout
    p99 = re.search(r"p99=([\d.]+)ms", out)
    counts = re.search(r"non2xx=(\d+) reqs=(\d+) rps=([\d.]+)", out)
    if p99 is None or counts is None:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    socket_errors = sum(int(n) for n in errors.groups()) if errors else 0
    requests = int(counts.group(2))
    p99_ms = float(p99.group(1)) if requests else float("inf")
    return WrkResult(float(counts.group(3)), p99_ms, int(counts.group(1)), socket_errors, requests)


# -- Flux's /metrics ------------------------------------------------------------------------------------------------


SETTLE_POLL_S = 0.1  # /metrics costs the node CPU: polled every 10 ms it took ~10 % of the reducer's


class Metrics:
    """Reads ``/metrics``; ``direct`` counts events applied that were never published over HTTP."""

    def __init__(self, url: str) -> None:
        self.client = httpx.Client(base_url=url, timeout=30)
        self.direct = 0

    def text(self) -> str:
        return self.client.get("/metrics").text

    def counter(self, name: str, text: str | None = None) -> int:
        for line in (text or self.text()).splitlines():
            if line.startswith(name + " "):
                return int(float(line.split()[1]))
        return 0

    def counts(self) -> tuple[int, int]:
        text = self.text()
        return self.counter("flux_events_published_total", text), self.counter("flux_events_applied_total", text)

    def behind(self) -> int:
        published, applied = self.counts()
        return published + self.direct - applied

    def settle(self, label: str, timeout: float = SETTLE_TIMEOUT_S) -> float | None:
        """Wait until applied == published (+ records produced straight to Kafka); seconds waited, or None."""
        started = last_report = time.perf_counter()
        while (behind := self.behind()) > 0:
            now = time.perf_counter()
            if now - started > timeout:
                progress(f"{label}: still {behind:,} events behind after {timeout:.0f} s, going on")
                return None
            if now - last_report > 5:
                progress(f"{label}: {behind:,} events still to fold")
                last_report = now
            time.sleep(SETTLE_POLL_S)
        return time.perf_counter() - started


def lag_family(text: str) -> str | None:
    """The metric about applied lag or latency ``/metrics`` has, if any: a histogram first, then one in time units."""
    names: list[str] = []
    for line in text.splitlines():
        name = re.split(r"[{ ]", line, maxsplit=1)[0]
        if not line.startswith("#") and ("applied_lag" in name or "applied_latency" in name) and name not in names:
            names.append(name)
    histograms = [name.removesuffix("_bucket") for name in names if name.endswith("_bucket")]
    timed = [name for name in names if name.endswith(("_ms", "_seconds"))]
    return next(iter(histograms + timed + names), None)


def buckets(text: str, family: str) -> dict[float, float]:
    """A histogram's cumulative bucket counts by upper bound, summed over label sets."""
    found: dict[float, float] = {}
    pattern = re.compile(rf'^{re.escape(family)}_bucket\{{.*?le="([^"]+)".*?\}} ([\d.e+-]+)')
    for line in text.splitlines():
        if match := pattern.match(line):
            bound = float("inf") if match.group(1) == "+Inf" else float(match.group(1))
            found[bound] = found.get(bound, 0.0) + float(match.group(2))
    return found


def gauge(text: str, family: str) -> float | None:
    values = [float(line.split()[-1]) for line in text.splitlines() if re.match(rf"^{re.escape(family)}[{{ ]", line)]
    return max(values) if values else None


def to_ms(family: str, value: float) -> float:
    return value * 1000 if family.endswith("_seconds") else value


# -- load processes -------------------------------------------------------------------------------------------------


def flux_load(port: int, *args: str) -> list[str]:
    return [sys.executable, str(LOAD_DIR / "flux_load.py"), *args, "--port", str(port)]


@contextlib.contextmanager
def background_load(children: Children, port: int, rate_each: int, seconds: float) -> Iterator[list[dict[str, Any]]]:
    """Two ``flux_load.py load`` processes at ``rate_each`` events/s for ``seconds`` (on entities ``bg-*``, which
    the latency tool's extra subscribers watch); after the block, the list holds their JSON summaries."""
    argv = flux_load(port, "load", "--rate", str(rate_each), "--seconds", f"{seconds:g}", "--prefix", "bg")
    procs = [children.popen("load generator", argv, stdout=subprocess.PIPE) for _ in range(2)]
    summaries: list[dict[str, Any]] = []
    time.sleep(2.0)  # let them reach their rate
    try:
        yield summaries
    except BaseException:  # an error or Ctrl-C: stop them now rather than let them run out their time
        for proc in procs:
            terminate(proc)
        raise
    else:
        for proc in procs:
            try:
                out, _ = proc.communicate(timeout=seconds + 30)
                summaries.append(json.loads(out.decode().strip().splitlines()[-1]))
            except (subprocess.TimeoutExpired, ValueError, IndexError):
                terminate(proc)


def achieved(summaries: list[dict[str, Any]], asked: int) -> str:
    """``5,000 events/s`` and, when the load processes reported, the rate they reached (on 2 cores, often less)."""
    if len(summaries) < 2:
        return f"{asked:,} events/s"
    return f"{asked:,} events/s (sent {sum(s['achieved_per_s'] for s in summaries):,.0f}/s)"


def latency_run(port: int, count: int, bg_rate: int, subscribers: int) -> dict[str, Any]:
    argv = flux_load(port, "latency", "--count", str(count), "--rate", "20")
    argv += ["--bg-rate", str(bg_rate), "--subscribers", str(subscribers)]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=count / 20 + 180, check=True).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


# -- Kafka ----------------------------------------------------------------------------------------------------------


def envelope(i: int) -> dict[str, Any]:
    """One event as docs/kafka.md ("Publishing straight to Kafka") describes a record's value."""
    return {
        "stream": "sensors",
        "source": "bench-kafka",
        "timestamp": 1_763_856_000_000 + i,
        "payload": {"entity_id": f"direct-{i % ENTITIES}", "properties": {"temp": 20 + i % 100 / 10}},
    }


def producer(bootstrap: str) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5, **kafka_options()
    )


async def produce(bootstrap: str, topic: str, n: int) -> None:
    """``n`` single-event records, key = entity id; returns when the broker has acknowledged them all."""
    client = producer(bootstrap)
    await client.start()
    try:
        futures = []
        for i in range(n):
            event = envelope(i)
            futures.append(await client.send(topic, orjson.dumps(event), key=event["payload"]["entity_id"].encode()))
        await asyncio.gather(*futures)
    finally:
        await client.stop()


async def raw_kafka(bootstrap: str, n: int, partitions: int, replication: int) -> float:
    """Records/s from the first send to the last record consumed back, on a fresh topic (aiokafka alone)."""
    topic = f"benchsmall-raw-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **kafka_options())
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, replication)])
    finally:
        await admin.close()
    await asyncio.sleep(1.0)  # the new partitions' leaders (else the first fetches and sends retry, with warnings)
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None, **kafka_options()
    )
    await consumer.start()
    try:
        while not consumer.assignment():
            await asyncio.sleep(0.05)

        async def consume() -> None:
            seen = 0
            while seen < n:
                for records in (await consumer.getmany(timeout_ms=500, max_records=10_000)).values():
                    seen += len(records)

        started = time.perf_counter()
        reader = asyncio.create_task(consume())
        await produce(bootstrap, topic, n)
        await asyncio.wait_for(reader, 120)
        return n / (time.perf_counter() - started)
    finally:
        await consumer.stop()
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **kafka_options())
        await admin.start()
        with contextlib.suppress(Exception):
            await admin.delete_topics([topic])
        await admin.close()


# -- the run --------------------------------------------------------------------------------------------------------


@dataclass
class Plan:
    seconds: float
    ws_count: int
    kafka_records: int
    lag_seconds: float
    only: set[str]


def http_ceiling(plan: Plan, children: Children, work: Path) -> dict[str, str]:
    """The hello-world app under the same wrk commands as Flux (run before Flux starts: no CPU taken from it)."""
    workers = http_workers()
    progress(f"ceiling: hello-world uvicorn app, {workers} process(es), wrk POST -c64 then GET -c16")
    url = start_hello(children, workers, work / "hello.log")
    post = run_wrk(url, "post_event.lua", 64, plan.seconds)
    get = run_wrk(url, "get_entity.lua", 16, plan.seconds)
    children.close_last()
    progress(f"ceiling: POST {post.rps:,.0f} req/s p99 {post.p99()}, GET {get.rps:,.0f} req/s p99 {get.p99()}")
    return {
        "post_rps": f"{post.rps:,.0f} req/s",
        "post_p99": post.p99(),
        "get_rps": f"{get.rps:,.0f} req/s",
        "get_p99": get.p99(),
        "workers": str(workers),
    }


def kafka_ceiling(plan: Plan, bootstrap: str) -> dict[str, str]:
    """Raw aiokafka on the same broker, with Flux's partitions and replication."""
    settings = Settings()
    progress(f"ceiling: raw aiokafka, {plan.kafka_records:,} single records produced and consumed back")
    rate = asyncio.run(raw_kafka(bootstrap, plan.kafka_records, settings.partitions, settings.replication_factor))
    progress(f"ceiling: {rate:,.0f} records/s produce -> consume")
    return {"kafka": f"{rate:,.0f} records/s"}


class Bench:
    """The steps, in order; each adds rows. Ceilings land in ``ceilings`` for the Flux rows to show."""

    def __init__(self, plan: Plan, url: str, bootstrap: str, events_topic: str, children: Children) -> None:
        self.plan = plan
        self.url = url
        self.port = urlsplit(url).port or 80
        self.bootstrap = bootstrap
        self.events_topic = events_topic
        self.children = children
        self.metrics = Metrics(url)
        self.rows: list[Row] = []
        self.ceilings: dict[str, str] = {}
        self.seeded = False

    def ceiling(self, key: str) -> str:
        return self.ceilings.get(key, "—")

    def settle(self, label: str) -> None:
        progress(f"letting the fold settle ({label})")
        self.metrics.settle(label)

    def seed(self) -> None:
        """Make sure all ``sensor-*`` exist for get_entity.lua: a short POST run creates only some, a subset run
        none. Stamped older than post_event.lua's events, so that they never hide what the POST run wrote."""
        if self.seeded:
            return
        progress(f"creating the {ENTITIES:,} sensor-* entities get_entity.lua reads")
        with httpx.Client(base_url=self.url, timeout=60) as client:
            for start in range(0, ENTITIES, 1000):
                events = [
                    {
                        "stream": "sensors",
                        "source": "bench",
                        "timestamp": 1_763_855_000_000,
                        "payload": {"entity_id": f"sensor-{i}", "properties": {"temp": 20.0}},
                    }
                    for i in range(start, start + 1000)
                ]
                client.post("/api/events/batch", json={"events": events}).raise_for_status()
        self.settle("seeding")
        self.seeded = True

    def post(self) -> None:
        progress(f"Flux: single-event POST, wrk -c64 for {self.plan.seconds:g} s")
        result = run_wrk(self.url, "post_event.lua", 64, self.plan.seconds)
        ended = time.perf_counter()
        folded = self.metrics.settle("fold after the POST run")
        fold_s = None if folded is None else time.perf_counter() - ended
        self.rows += [
            Row(
                f"single-event POST, wrk -c64: req/s ({http_workers()} HTTP process(es))",
                f"{result.rps:,.0f}",
                ">= 10,000",
                self.ceiling("post_rps"),
                result.rps >= 10_000,
            ),
            Row(
                "single-event POST, wrk -c64: p99",
                result.p99(),
                "<= 30 ms",
                self.ceiling("post_p99"),
                result.p99_ms <= 30.0,
            ),
            Row(
                "single-event POST: non-2xx + socket errors",
                f"{result.non2xx:,} + {result.socket_errors:,}",
                "0",
                ok=result.non2xx + result.socket_errors == 0,
            ),
            Row(
                "after the POST run: until all accepted is folded",
                f"> {SETTLE_TIMEOUT_S:.0f} s" if fold_s is None else f"{fold_s:.2f} s",
                "<= 1 s",
                ok=fold_s is not None and fold_s <= 1.0,
            ),
        ]

    def get(self) -> None:
        self.seed()
        progress(f"Flux: GET one entity, idle, wrk -c16 for {self.plan.seconds:g} s")
        result = run_wrk(self.url, "get_entity.lua", 16, self.plan.seconds)
        self.rows += [
            Row(
                "GET one entity, idle, wrk -c16: req/s",
                f"{result.rps:,.0f}",
                ">= 15,000",
                self.ceiling("get_rps"),
                result.rps >= 15_000,
            ),
            Row(
                "GET one entity, idle: p99",
                result.p99(),
                "<= 10 ms",
                self.ceiling("get_p99"),
                result.p99_ms <= 10.0,
            ),
        ]
        self.rows[-1].flux += result.errors()

    def get_load(self) -> None:
        self.seed()
        progress(f"Flux: GET one entity, wrk -c16 for {self.plan.seconds:g} s while 2 x 2,500 events/s arrive")
        with background_load(self.children, self.port, 2500, self.plan.seconds + 4) as loads:
            result = run_wrk(self.url, "get_entity.lua", 16, self.plan.seconds)
        rate = achieved(loads, 5000)
        self.rows += [
            Row(
                f"GET one entity at {rate}: req/s",
                f"{result.rps:,.0f}",
                ">= 5,000",
                self.ceiling("get_rps"),
                result.rps >= 5_000,
            ),
            Row(
                "GET one entity under load: p99",
                result.p99(),
                "<= 25 ms",
                self.ceiling("get_p99"),
                result.p99_ms <= 25.0,
            ),
        ]
        self.rows[-1].flux += result.errors()
        self.settle("after GET under load")

    def ws(self, label: str, target_ms: float, bg_rate: int, load_each: int) -> None:
        count = self.plan.ws_count
        progress(f"Flux: publish -> WebSocket latency, {label}, {count} probes at 20/s")
        if load_each:
            with background_load(self.children, self.port, load_each, count / 20 + 12) as loads:
                result = latency_run(self.port, count, 0, 100)
            label = f"at {achieved(loads, 2 * load_each)}, 100 subscribers"
        else:
            result = latency_run(self.port, count, bg_rate, 100 if bg_rate else 1)
        lost = int(result["missing"]) + int(result["probe_errors"])
        p99 = float(result["e2e_p99_ms"]) if result["received"] else float("inf")
        figure = f"{result['e2e_p50_ms']:.1f} / {p99:.1f} ms" if result["received"] else "no update received"
        figure += f", {lost} of {result['probes']} lost"
        if result["bg_skipped"] or result["bg_errors"]:  # the latency tool's own background POSTs fell behind
            figure += f" (background: {result['bg_skipped']:,} skipped, {result['bg_errors']:,} failed)"
        self.rows.append(
            Row(
                f"publish -> WebSocket, {label}: p50 / p99, lost",
                figure,
                f"p99 <= {target_ms:g} ms, 0 lost",
                ok=p99 <= target_ms and lost == 0,
            )
        )
        self.settle(f"after WebSocket {label}")

    def kafka_fold(self) -> None:
        n = self.plan.kafka_records
        progress(f"Flux: {n:,} single-event records produced straight to {self.events_topic}, then folded")
        self.settle("before the Kafka fold")
        _, before = self.metrics.counts()
        started = time.perf_counter()
        asyncio.run(produce(self.bootstrap, self.events_topic, n))
        self.metrics.direct += n
        produced_s = time.perf_counter() - started
        progress(f"produced in {produced_s:.1f} s; waiting for the fold")
        done = self.metrics.settle("Kafka fold")
        _, after = self.metrics.counts()
        if done is None:
            figure, ok = f"{after - before:,} of {n:,} folded in {SETTLE_TIMEOUT_S:.0f} s", False
        else:
            rate = n / (time.perf_counter() - started)
            figure, ok = f"{rate:,.0f} events/s", rate >= 8_000
        self.rows.append(
            Row(
                f"{n:,} records straight to Kafka: produce -> folded",
                figure,
                ">= 8,000 events/s",
                self.ceiling("kafka"),
                ok,
            )
        )

    def lag(self) -> None:
        family = lag_family(self.metrics.text())
        if family is None:
            self.rows.append(Row("applied lag p99 at 5,000 events/s", "n/a (metric not present)"))
            return
        seconds = self.plan.lag_seconds
        progress(f"Flux: {family} while 2 x 2,500 events/s arrive for {seconds:g} s")
        before = buckets(self.metrics.text(), family)
        samples: list[float] = []
        with background_load(self.children, self.port, 2500, seconds) as loads:
            deadline = time.monotonic() + seconds - 2
            while time.monotonic() < deadline:
                if (value := gauge(self.metrics.text(), family)) is not None:
                    samples.append(value)
                time.sleep(0.5)
        after = buckets(self.metrics.text(), family)
        label = f"{family} p99 at {achieved(loads, 5000)}, {seconds:g} s"
        ok: bool | None = None
        if after:
            delta = {bound: after[bound] - before.get(bound, 0.0) for bound in sorted(after)}
            total = delta.get(float("inf"), max(delta.values()))
            bound = next((b for b, c in delta.items() if total and c >= 0.99 * total), float("inf"))
            finite = [b for b in delta if b != float("inf")]
            if not total:
                figure = "no observations"
            elif bound == float("inf"):
                figure = f"> {to_ms(family, max(finite)):g} ms" if finite else "?"
                ok = False
            else:
                figure = f"<= {to_ms(family, bound):g} ms (bucket)"
                ok = to_ms(family, bound) <= APPLIED_P99_TARGET_MS
        elif samples:
            ordered = sorted(samples)
            p99 = to_ms(family, ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))])
            figure = f"{p99:.1f} ms (sampled)"
            ok = p99 <= APPLIED_P99_TARGET_MS
        else:
            figure = "no samples"
        self.rows.append(Row(label, figure, f"<= {APPLIED_P99_TARGET_MS:g} ms", ok=ok))
        self.settle("after the lag run")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=None, help="wrk duration per run (default 20; --quick 5)")
    parser.add_argument("--quick", action="store_true", help="shorter everything, for a smoke run")
    parser.add_argument("--only", default="", help=f"comma-separated subset of: {','.join(STEPS)}")
    parser.add_argument(
        "--url",
        default=None,
        help="measure this running Flux (127.0.0.1) instead of starting one; its topics and broker are read "
        "from FLUX_EVENTS_TOPIC and KAFKA_BOOTSTRAP_SERVERS as the node reads them",
    )
    parser.add_argument("--lag-seconds", type=float, default=None, help="applied-lag window (default 60; --quick 10)")
    parser.add_argument("--kafka-records", type=int, default=None, help="records straight to Kafka (default 100,000)")
    args = parser.parse_args(argv)
    only = {name.strip() for name in args.only.split(",") if name.strip()} or set(STEPS)
    if unknown := only - set(STEPS):
        parser.error(f"unknown step(s) {', '.join(sorted(unknown))}; choose from {', '.join(STEPS)}")
    args.plan = Plan(
        seconds=args.seconds or (5.0 if args.quick else 20.0),
        ws_count=100 if args.quick else 300,
        kafka_records=args.kafka_records or (20_000 if args.quick else 100_000),
        lag_seconds=args.lag_seconds or (10.0 if args.quick else 60.0),
        only=only,
    )
    return args


def raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run_steps(args: argparse.Namespace, work: Path, children: Children, rows: list[Row]) -> int:
    """Ceilings, then Flux (started here unless ``--url``), step by step; rows are appended as they come.
    Returns 1 if a step failed to run (its row says so), else 0."""
    plan: Plan = args.plan
    ceilings: dict[str, str] = {}
    if "http-ceiling" in plan.only:
        ceilings.update(http_ceiling(plan, children, work))
    if args.url is None:
        bootstrap, broker = broker_for(work)
        if broker is not None:
            children.add("Kafka broker", broker.stop)
    else:
        bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or Settings().kafka_bootstrap_servers
    if "kafka-ceiling" in plan.only:
        ceilings.update(kafka_ceiling(plan, bootstrap))

    if args.url is None:
        app_id = f"benchsmall{uuid.uuid4().hex[:6]}"
        node = FluxProcess(bootstrap, work / "node", free_port(), app_id, Settings().partitions, {})
        progress(f"starting Flux ({app_id}) on {node.url}, log in {node.workdir / 'flux.log'}")
        children.add("Flux", node.stop)
        node.start()
        url, events_topic = node.url, node.events_topic
    else:
        url, events_topic = args.url.rstrip("/"), Settings().events_topic
        httpx.get(url + "/ready", timeout=10).raise_for_status()
    bench = Bench(plan, url, bootstrap, events_topic, children)
    bench.ceilings = ceilings
    bench.rows = rows
    published, applied = bench.metrics.counts()
    bench.metrics.direct = max(0, applied - published)  # a running node may have folded records from Kafka
    bench.settle("at start")

    steps: dict[str, Callable[[], None]] = {
        "post": bench.post,
        "get": bench.get,
        "get-load": bench.get_load,
        "ws-idle": lambda: bench.ws("idle", 10, 0, 0),
        "ws-1k": lambda: bench.ws("at 1,000 events/s, 100 subscribers", 25, 1000, 0),
        "ws-5k": lambda: bench.ws("at 5,000 events/s", 100, 0, 2500),
        "kafka-fold": bench.kafka_fold,
        "lag": bench.lag,
    }
    failed = 0
    for name, step in steps.items():
        if name not in plan.only:
            continue
        try:
            step()
        except (subprocess.SubprocessError, RuntimeError, OSError, httpx.HTTPError, ValueError, KeyError) as exc:
            detail = getattr(exc, "stderr", None) or exc
            progress(f"step {name} failed: {str(detail).strip()[-800:]}")
            rows.append(Row(f"{name}: could not run", type(exc).__name__, ok=False))
            failed = 1
    if "kafka-ceiling" in plan.only and "kafka-fold" not in plan.only:
        rows.append(Row("raw aiokafka produce -> consume (ceiling only)", "—", ceiling=bench.ceiling("kafka")))
    return failed


def main(argv: list[str]) -> int:
    """Exit status: 0 when everything was measured (a FAIL in the table is a finding, not an error), 1 when a
    step could not run, 2 when a tool is missing, 130 when interrupted."""
    args = parse_args(argv)
    plan: Plan = args.plan
    command = " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv])
    if plan.only & WRK_STEPS and shutil.which("wrk") is None:
        print("wrk is not installed; install it with: apt-get install -y wrk  (Debian/Ubuntu)", file=sys.stderr)
        return 2
    if not (LOAD_DIR / "flux_load.py").exists():
        print(f"the load tools are not in {LOAD_DIR}; set FLUX_LOAD_DIR to the shared/load folder", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, raise_interrupt)

    work = Path(tempfile.mkdtemp(prefix="flux-bench-small-"))
    progress(f"work dir {work}")
    children = Children()
    rows: list[Row] = []
    try:
        status = run_steps(args, work, children, rows)
    except KeyboardInterrupt:
        progress("interrupted; stopping what this run started")
        status = 130
    except Exception:
        progress(f"failed:\n{traceback.format_exc()}")
        status = 1
    finally:
        children.close()
    if status == 0:
        shutil.rmtree(work, ignore_errors=True)
    else:
        progress(f"logs kept in {work}")
    print()
    if rows:
        print_table(rows, command)
    else:
        print(f"nothing measured ({command})")
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
