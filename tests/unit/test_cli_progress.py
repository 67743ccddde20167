"""The progress of ``flux backfill`` and ``flux replay`` (api/cli/progress.py): a rich bar on a terminal,
the plain lines of before otherwise."""

from __future__ import annotations

import io

from rich.console import Console

from api.cli.backfill import Progress
from api.cli.progress import BackfillBar, ReplayBar, backfill_progress, on_terminal, replay_progress
from api.cli.replay import ProgressLines


def job(status: str, events: int, percent: float) -> dict:
    partitions = [{"partition": 0, "position": events, "end": 1000}]
    return {
        "status": status,
        "events": events,
        "percent": percent,
        "eventsPerSecond": 500,
        "etaSeconds": 2.0,
        "partitions": partitions,
        "jobId": "j1",
    }


def terminal() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=True, width=120), out


def test_off_a_terminal_the_plain_lines_are_chosen() -> None:
    assert not on_terminal(io.StringIO())
    assert isinstance(backfill_progress(100), Progress)  # pytest's stderr is not a terminal
    assert isinstance(replay_progress(), ProgressLines)


def test_the_plain_replay_lines_end_with_a_newline_once_finished() -> None:
    err = io.StringIO()
    lines = ProgressLines(err)
    lines.show(job("running", 500, 50.0))
    lines.show(job("done", 1000, 100.0))
    assert err.getvalue().count("\r") == 2 and err.getvalue().endswith("[done]  p0:1,000/1,000\n")


def test_the_bars_draw_on_a_terminal_and_finish() -> None:
    console, out = terminal()
    bar = ReplayBar(console)
    bar.show(job("running", 500, 50.0))
    bar.show(job("done", 1000, 100.0))
    bar.close()
    assert "replay" in out.getvalue() and "1000/1000" in out.getvalue() and "[done]" in out.getvalue()

    console, out = terminal()
    backfill = BackfillBar(2000, console)
    backfill.show(10, 1000)
    backfill.show(20, 2000, final=True)
    assert "backfill" in out.getvalue() and "20 events" in out.getvalue() and "100%" in out.getvalue()
