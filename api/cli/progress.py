"""Progress on stderr: a rich bar on a terminal, the plain ``\\r`` lines of before otherwise (logs, pipes, CI).

:func:`backfill_progress` and :func:`replay_progress` pick one by whether stderr is a terminal; the
plain kinds live with their commands (:class:`api.cli.backfill.Progress`, :class:`api.cli.replay.ProgressLines`).
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from api.cli.backfill import Progress as BackfillLines
from api.cli.backfill import ProgressShown
from api.cli.remote import on_terminal, stderr_console
from api.cli.replay import ProgressLines, ReplayProgress
from flux.model.replay import FINISHED


class BackfillBar:
    """A rich bar over the file's bytes (or a counter for standard input), events and events/s."""

    def __init__(self, total_bytes: int | None, console: Console | None = None) -> None:
        self._started = time.monotonic()
        self._progress = Progress(
            TextColumn("[bold]backfill[/]"),
            BarColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[events]:,} events, {task.fields[rate]:,.0f} events/s"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console or stderr_console(),
            transient=False,
        )
        self._task = self._progress.add_task("backfill", total=total_bytes, events=0, rate=0.0)
        self._progress.start()

    def show(self, events: int, position: int | None, final: bool = False) -> None:
        """Move the bar; the final call completes and stops it."""
        rate = events / max(time.monotonic() - self._started, 1e-6)
        completed = position if position is not None else None
        self._progress.update(self._task, completed=completed, events=events, rate=rate)
        if final:
            task = self._progress.tasks[0]
            if task.total is not None:
                self._progress.update(self._task, completed=task.total)
            self._progress.stop()


def backfill_progress(total_bytes: int | None) -> ProgressShown:
    """A bar on a terminal, else the plain lines."""
    return BackfillBar(total_bytes) if on_terminal() else BackfillLines(total_bytes)


class ReplayBar:
    """A rich bar over the job's percent, with events, events/s, ETA and status."""

    def __init__(self, console: Console | None = None) -> None:
        self._progress = Progress(
            TextColumn("[bold]replay[/]"),
            BarColumn(),
            TaskProgressColumn(),
            MofNCompleteColumn(),
            TextColumn("events, {task.fields[rate]:,} events/s, ETA {task.fields[eta]} \\[{task.fields[status]}]"),
            console=console or stderr_console(),
        )
        self._task = self._progress.add_task("replay", total=None, rate=0, eta="-", status="starting")
        self._progress.start()

    def show(self, job: dict[str, Any]) -> None:
        """Move the bar to the job's progress."""
        percent = float(job.get("percent") or 0.0)
        events = int(job.get("events") or 0)
        total = int(events * 100 / percent) if percent > 0 else None
        if job["status"] == "done":
            total = events
        eta = job.get("etaSeconds")
        self._progress.update(
            self._task,
            completed=events,
            total=total,
            rate=job.get("eventsPerSecond") or 0,
            eta="-" if eta is None else f"{eta:,.0f} s",
            status=job["status"],
        )
        if job["status"] in FINISHED:
            self._progress.stop()

    def close(self) -> None:
        """Stop the bar."""
        self._progress.stop()


def replay_progress() -> ReplayProgress:
    """A bar on a terminal, else the plain lines."""
    return ReplayBar() if on_terminal() else ProgressLines()
