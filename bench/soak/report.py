"""The soak's figures: what was done, what was injected, what was lost or rolled back; printed and saved."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.soak.chaos import Chaos
from bench.soak.check import Differences
from bench.soak.ledger import Ledger
from bench.soak.watch import Reader, Subscriber

MB = 1024 * 1024


@dataclass
class Outcome:
    command: str
    run: str
    seed: int
    machine: str
    date: str
    minutes: float
    memory_start: dict[str, int] = field(default_factory=dict)
    memory_end: dict[str, int] = field(default_factory=dict)
    memory_peak: dict[str, int] = field(default_factory=dict)
    memory_end_by_process: dict[str, dict[str, int]] = field(default_factory=dict)
    memory_samples: list[tuple[int, dict[str, int]]] = field(default_factory=list)  # every 30 s
    starts: dict[str, int] = field(default_factory=dict)
    events: int = 0
    requests: dict[str, int] = field(default_factory=dict)
    failed_tries: dict[str, int] = field(default_factory=dict)
    replayed_answers: int = 0
    unknown_events: int = 0
    refused_events: int = 0
    entities: int = 0
    converge_s: float = 0.0
    lost_events: list[str] = field(default_factory=list)  # acknowledged, not in the events topic
    wrong: dict[str, dict[str, Any]] = field(default_factory=dict)  # per node: differences from the fold
    reads: int = 0
    lists: int = 0
    reads_refused: int = 0
    rolled_back: int = 0
    disappeared: int = 0
    ws: dict[str, dict[str, int]] = field(default_factory=dict)
    faults: list[dict[str, Any]] = field(default_factory=list)
    self_exits: list[Any] = field(default_factory=list)
    replays: list[dict[str, Any]] = field(default_factory=list)
    incidents: list[dict[str, Any]] = field(default_factory=list)

    def fill(
        self,
        ledger: Ledger,
        reader: Reader,
        subscribers: list[Subscriber],
        chaos: Chaos,
        differences: dict[str, Differences],
        missing: list[str],
        entities: int,
        converge_s: float,
    ) -> None:
        self.events = ledger.acked_events
        self.requests = {"single": ledger.single_requests, "batch": ledger.batch_requests}
        self.failed_tries = dict(ledger.failures)
        self.replayed_answers = ledger.replayed_answers
        self.unknown_events = ledger.unknown_events
        self.refused_events = ledger.refused_events
        self.entities = entities
        self.converge_s = round(converge_s, 1)
        self.lost_events = missing
        self.wrong = {
            name: {
                "missing": len(found.missing),
                "stale": len(found.stale),
                "different": len(found.different),
                "extra": len(found.extra),
                "examples": found.examples,
            }
            for name, found in differences.items()
        }
        self.reads, self.lists, self.reads_refused = reader.reads, reader.lists, reader.refused
        self.rolled_back = ledger.count("rolled back")
        self.disappeared = ledger.count("disappeared")
        self.ws = {
            s.name: {
                "updates": s.updates,
                "snapshots": s.snapshots,
                "reconnects": s.reconnects,
                "gaps": s.gaps,
                "regressions": s.regressions,
            }
            for s in subscribers
        }
        self.faults = [asdict(fault) for fault in chaos.faults]
        self.self_exits = list(chaos.self_exits)
        self.replays = [asdict(replay) for replay in chaos.replays]
        self.incidents = [asdict(incident) for incident in ledger.incidents[:200]]
        self.memory_peak = dict(chaos.peak_rss)
        self.starts = {node.name: node.starts for node in chaos.cluster.nodes}

    def lost(self) -> int:
        """Acknowledged events missing from the log, plus entities served without all their acknowledged state."""
        return len(self.lost_events) + max((w["missing"] + w["stale"] for w in self.wrong.values()), default=0)

    def passed(self) -> bool:
        wrong = any(w["different"] or w["extra"] for w in self.wrong.values())
        return self.lost() == 0 and self.rolled_back == 0 and self.disappeared == 0 and not wrong


def print_report(console: Console, outcome: Outcome) -> None:
    """The figures as tables."""
    summary = Table(title=f"soak {outcome.run} ({outcome.minutes:g} min, seed {outcome.seed})", show_header=False)
    summary.add_row("events acknowledged", f"{outcome.events:,}")
    summary.add_row(
        "requests", f"{outcome.requests.get('single', 0):,} single, {outcome.requests.get('batch', 0):,} batch"
    )
    summary.add_row("failed tries (sent again)", ", ".join(f"{k}: {v}" for k, v in outcome.failed_tries.items()) or "0")
    summary.add_row("answers replayed by idempotency key", str(outcome.replayed_answers))
    summary.add_row("unknown (never acknowledged) / refused", f"{outcome.unknown_events} / {outcome.refused_events}")
    summary.add_row("entities checked", f"{outcome.entities:,} on every node (converged in {outcome.converge_s} s)")
    summary.add_row(
        "[bold]lost[/bold]", f"[bold]{outcome.lost()}[/bold] ({len(outcome.lost_events)} events not in the log)"
    )
    for name, wrong in outcome.wrong.items():
        if any(wrong[k] for k in ("missing", "stale", "different", "extra")):
            summary.add_row(f"  {name} differs", str({k: v for k, v in wrong.items() if k != "examples"}))
    summary.add_row("[bold]rolled back[/bold]", f"[bold]{outcome.rolled_back}[/bold]")
    summary.add_row("[bold]disappeared[/bold]", f"[bold]{outcome.disappeared}[/bold]")
    summary.add_row("reads", f"{outcome.reads:,} gets, {outcome.lists:,} lists, {outcome.reads_refused:,} refused")
    for name, ws in outcome.ws.items():
        summary.add_row(f"WebSocket {name}", ", ".join(f"{k} {v:,}" for k, v in ws.items()))
    summary.add_row("nodes exited by themselves", str(outcome.self_exits or "none"))
    console.print(summary)

    memory = Table(title="memory (RSS of each node's process tree)")
    for column in ("node", "start MB", "end MB", "peak MB", "starts", "end by process, MB"):
        memory.add_column(column)
    for name, start in outcome.memory_start.items():
        processes = outcome.memory_end_by_process.get(name, {})
        memory.add_row(
            name,
            f"{start / MB:.0f}",
            f"{outcome.memory_end.get(name, 0) / MB:.0f}",
            f"{outcome.memory_peak.get(name, 0) / MB:.0f}",
            str(outcome.starts.get(name, 1)),
            ", ".join(f"{label} {rss / MB:.0f}" for label, rss in sorted(processes.items())),
        )
    console.print(memory)

    faults = Table(title="faults (kill -9)")
    for column in ("at", "target", "down s", "ready s after restart", "all served s after kill", "note"):
        faults.add_column(column)
    for fault in outcome.faults:
        faults.add_row(
            _clock(fault["at"]),
            fault["target"],
            str(fault["down_s"]),
            str(fault["back_s"]),
            str(fault["served_s"]),
            fault["note"],
        )
    console.print(faults)

    replays = Table(title="replays (from the beginning)")
    for column in ("at", "node", "status", "s", "entities", "changed", "removed", "writes paused ms"):
        replays.add_column(column)
    for replay in outcome.replays:
        replays.add_row(
            _clock(replay["at"]),
            replay["node"],
            replay["status"] + (f" ({replay['error']})" if replay["error"] else ""),
            *(str(replay[k]) for k in ("seconds", "entities", "changed", "removed", "paused_ms")),
        )
    console.print(replays)
    for incident in outcome.incidents[:40]:
        console.print(f"{_clock(incident['at'])} {incident['kind']}: {incident['entity_id']} {incident['detail']}")
    console.print("[green]PASS[/green]" if outcome.passed() else "[red]FAIL[/red]")


def _clock(seconds: float) -> str:
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes:02d}:{rest:02d}"
