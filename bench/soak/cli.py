"""``make soak`` / ``python -m bench.soak``: the cluster under a mixed load and random ``kill -9`` for a while."""

from __future__ import annotations

import asyncio
import json
import os
import platform
import random
import secrets
import shlex
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from bench.soak.chaos import Chaos
from bench.soak.check import converge, events_in_topic
from bench.soak.cluster import SoakCluster
from bench.soak.ledger import Ledger
from bench.soak.load import Writer, clients_for
from bench.soak.report import Outcome, print_report
from bench.soak.watch import Reader, Subscriber
from flux.client import AsyncFluxClient

console = Console(highlight=False)
app = typer.Typer(add_completion=False)

PROGRESS_EVERY_S = 30.0
CONVERGE_TIMEOUT_S = 240.0


@dataclass(frozen=True)
class Plan:
    """What the run does, from the command's options."""

    minutes: float
    fault_every_min: float
    fault_every_max: float
    faults: str
    rate: float
    writers: int
    entities: int
    replay_every: float


class Clock:
    def __init__(self) -> None:
        self.started = time.monotonic()

    def say(self, line: str) -> None:
        minutes, seconds = divmod(int(time.monotonic() - self.started), 60)
        console.print(f"[dim]{minutes:02d}:{seconds:02d}[/dim] {line}")


@app.command()
def soak(
    minutes: Annotated[float, typer.Option(help="How long the load and the faults go on")] = 30.0,
    nodes: Annotated[int, typer.Option(help="Flux nodes")] = 3,
    brokers: Annotated[int, typer.Option(help="Kafka brokers (3: one may die without stopping writes)")] = 3,
    seed: Annotated[int | None, typer.Option(help="Random seed of the load and the faults (default: random)")] = None,
    fault_every_min: Annotated[float, typer.Option(help="Least minutes between two faults")] = 2.0,
    fault_every_max: Annotated[float, typer.Option(help="Most minutes between two faults")] = 5.0,
    rate: Annotated[float, typer.Option(help="Events per second, over all writers")] = 100.0,
    writers: Annotated[int, typer.Option(help="Sequential writers, each owning its entities")] = 8,
    entities: Annotated[int, typer.Option(help="Entities per writer")] = 250,
    faults: Annotated[str, typer.Option(help="What to kill: all, nodes or brokers")] = "all",
    replay_every: Annotated[float, typer.Option(help="Minutes between replays from the beginning (0: none)")] = 5.0,
    partitions: Annotated[int, typer.Option(help="FLUX_PARTITIONS of the run's topics")] = 8,
    work_dir: Annotated[Path, typer.Option(help="Where each run's brokers, nodes and logs go")] = Path(".flux/soak"),
) -> None:
    """Run a local cluster under a mixed load with a random kill -9 every few minutes; check nothing was lost."""
    if faults not in ("all", "nodes", "brokers"):
        raise typer.BadParameter("--faults is all, nodes or brokers")
    seed = seed if seed is not None else secrets.randbelow(1_000_000)
    plan = Plan(minutes, fault_every_min, fault_every_max, faults, rate, writers, entities, replay_every)
    run = f"s{seed}-{secrets.token_hex(2)}"
    work = work_dir.resolve() / f"{time.strftime('%Y%m%d-%H%M%S')}-{run}"
    work.mkdir(parents=True)
    clock = Clock()
    clock.say(f"soak {run}: {minutes:g} min, {nodes} nodes, {brokers} brokers, seed {seed}; files in {work}")
    cluster = SoakCluster(work, nodes, brokers, partitions)
    outcome = Outcome(
        command=shlex.join(["python", "-m", "bench.soak", *sys.argv[1:]]),
        run=run,
        seed=seed,
        machine=f"{platform.node()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        minutes=minutes,
    )
    try:
        with console.status("starting brokers and nodes..."):
            cluster.start()
            cluster.wait_served()
        clock.say(f"{brokers} brokers at {cluster.bootstrap}, nodes at {', '.join(n.url for n in cluster.nodes)}")
        asyncio.run(_drive(cluster, plan, random.Random(seed), run, clock, outcome))
    finally:
        with console.status("stopping nodes and brokers..."):
            cluster.stop()
    (work / "report.json").write_text(json.dumps(asdict(outcome), indent=2, default=str) + "\n")
    print_report(console, outcome)
    console.print(f"report: {work / 'report.json'}")
    raise typer.Exit(0 if outcome.passed() else 1)


async def _drive(
    cluster: SoakCluster, plan: Plan, rng: random.Random, run: str, clock: Clock, outcome: Outcome
) -> None:
    """The load, the watchers and the faults for ``plan.minutes``, then the checks; the figures go in ``outcome``."""
    token = cluster.admin_token
    urls = [node.url for node in cluster.nodes]
    ledger = Ledger(cluster.work / "acked.ndjson")
    ledger.started = clock.started
    write_clients = clients_for(urls, token)
    read_clients = clients_for(urls, token, timeout=15.0)
    admin_clients = clients_for(urls, token)
    sub_clients = [AsyncFluxClient(url, token=token) for url in urls]
    every = [*write_clients, *read_clients, *admin_clients, *sub_clients]
    stop_load, stop_watch, stop_chaos = asyncio.Event(), asyncio.Event(), asyncio.Event()
    chaos = Chaos(
        cluster,
        rng,
        clock.say,
        clock.started,
        plan.fault_every_min * 60,
        plan.fault_every_max * 60,
        plan.replay_every * 60 if plan.replay_every > 0 else float("inf"),
        admin_clients,
        targets=plan.faults,
    )
    load = [
        Writer(k, run, plan.entities, write_clients, ledger, plan.rate / plan.writers, random.Random(rng.random()))
        for k in range(plan.writers)
    ]
    reader = Reader(read_clients, ledger, [w.prefix for w in load], random.Random(rng.random()))
    subscribers = [Subscriber(client, f"ws-{i + 1}", f"{run}/*", ledger) for i, client in enumerate(sub_clients)]
    outcome.memory_start = cluster.memory()
    sub_tasks = [asyncio.create_task(s.run(stop_watch)) for s in subscribers]
    await asyncio.wait_for(asyncio.gather(*(s.subscribed.wait() for s in subscribers)), 60)
    writer_tasks = [asyncio.create_task(w.run(stop_load)) for w in load]
    reader_task = asyncio.create_task(reader.run(stop_watch))
    chaos_tasks = [
        asyncio.create_task(chaos.faults_loop(stop_load)),
        asyncio.create_task(chaos.replays_loop(stop_load)),
    ]
    supervisor = asyncio.create_task(chaos.supervise(stop_chaos))
    end = time.monotonic() + plan.minutes * 60
    last_acked, last_time = 0, time.monotonic()
    try:
        while (left := end - time.monotonic()) > 0:
            await asyncio.sleep(min(PROGRESS_EVERY_S, left))
            now = time.monotonic()
            rate_now = (ledger.acked_events - last_acked) / max(0.001, now - last_time)
            last_acked, last_time = ledger.acked_events, now
            memory = cluster.memory()
            outcome.memory_samples.append((round(now - clock.started), memory))
            clock.say(
                f"acked {ledger.acked_events:,} events ({rate_now:.0f}/s) in {ledger.acked_requests:,} requests, "
                f"{ledger.failed_tries} failed tries; reads {reader.reads:,} ({reader.refused} refused), "
                f"ws updates {sum(s.updates for s in subscribers):,}; faults {len(chaos.faults)}; "
                f"disappeared {ledger.count('disappeared')}, rolled back {ledger.count('rolled back')}; "
                f"RSS MB {'/'.join(f'{rss / 2**20:.0f}' for rss in memory.values())}"
            )
    finally:
        clock.say("load stops; finishing requests in flight, the fault and the replay in progress")
        stop_load.set()
        await asyncio.gather(*writer_tasks, *chaos_tasks)
    clock.say(f"all partitions served {await asyncio.to_thread(cluster.wait_served):.1f} s later")
    expected = ledger.expected()
    differences, took = await converge(
        dict(zip([n.name for n in cluster.nodes], read_clients, strict=True)),
        expected,
        ledger.unknown_entities,
        f"{run}/",
        CONVERGE_TIMEOUT_S,
    )
    clock.say(f"compared {len(expected):,} entities on every node ({took:.1f} s to converge)")
    await asyncio.sleep(2.0)  # the subscribers get the last updates
    stop_watch.set()
    await reader_task
    for task in sub_tasks:
        task.cancel()
    await asyncio.gather(*sub_tasks, return_exceptions=True)
    outcome.memory_end = cluster.memory()
    outcome.memory_end_by_process = {node.name: node.rss_by_process() for node in cluster.nodes}
    stop_chaos.set()
    await supervisor
    acked_ids = ledger.acked_event_ids()
    in_topic = await events_in_topic(cluster.bootstrap, cluster.partitions, f"{run}/")
    missing = sorted(acked_ids - in_topic)
    ledger.close()
    for client in every:
        await client.aclose()
    outcome.fill(ledger, reader, subscribers, chaos, differences, missing, len(expected), took)
