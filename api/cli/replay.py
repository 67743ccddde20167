"""``flux replay``: start a replay job on a running node, show its progress, print its report."""

from __future__ import annotations

import sys
import time
from typing import IO, Any, Protocol

import httpx

from flux.model.replay import FINISHED

POLL_S = 0.5


class ReplayFailed(RuntimeError):
    """The node refused the job, or the job did not finish as done."""


def request_body(
    from_beginning: bool, from_timestamp: str | None, from_offsets: str | None, to_timestamp: str | None
) -> dict[str, Any]:
    """The ``POST /api/admin/replay`` body of the command's options (the node checks them)."""
    body: dict[str, Any] = {}
    if from_beginning:
        body["fromBeginning"] = True
    if from_timestamp is not None:
        body["fromTimestamp"] = from_timestamp
    if from_offsets is not None:
        body["fromOffsets"] = from_offsets
    if to_timestamp is not None:
        body["toTimestamp"] = to_timestamp
    return body


def progress_line(job: dict[str, Any]) -> str:
    """One line: share, events, rate, ETA, offsets per partition and status."""
    eta = job.get("etaSeconds")
    offsets = " ".join(f"p{p['partition']}:{p['position']:,}/{p['end']:,}" for p in job["partitions"][:8])
    more = f" (+{len(job['partitions']) - 8} partitions)" if len(job["partitions"]) > 8 else ""
    return (
        f"replay: {job['percent']:5.1f}%  {job['events']:,} events  {job['eventsPerSecond']:,} events/s"
        f"  ETA {'-' if eta is None else f'{eta:,.0f} s'}  [{job['status']}]  {offsets}{more}"
    )


def report_lines(job: dict[str, Any]) -> list[str]:
    """The final report of a finished job."""
    report = job["report"]
    return [
        f"replayed {job['events']:,} events in {report['seconds']:,.1f} s ({job['eventsPerSecond']:,} events/s)",
        f"{report['entities']:,} entities, {report['entitiesChanged']:,} entities changed"
        f" ({report['entitiesRemoved']:,} removed); live writes paused {report['writesPausedMs']:,.0f} ms",
    ]


def _job(response: httpx.Response) -> dict[str, Any]:
    """The job in a response, or :class:`ReplayFailed` with the node's reason."""
    try:
        body = response.json()
    except ValueError:
        body = {"error": response.text[:200]}
    if response.status_code >= 400 or not isinstance(body, dict) or "status" not in body:
        reason = body.get("error", body) if isinstance(body, dict) else body
        raise ReplayFailed(f"{response.status_code} from {response.request.url.path}: {reason}")
    return body


class ReplayProgress(Protocol):
    """What a job's progress is shown to (:class:`ProgressLines` here, a rich bar in :mod:`api.cli.progress`)."""

    def show(self, job: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


class ProgressLines:
    """The plain form: one ``\\r`` line rewritten at each poll, ended by a newline once the job finished."""

    def __init__(self, err: IO[str] = sys.stderr) -> None:
        self._err = err

    def show(self, job: dict[str, Any]) -> None:
        """Rewrite the line."""
        self._err.write("\r" + progress_line(job) + ("\n" if job["status"] in FINISHED else ""))
        self._err.flush()

    def close(self) -> None:
        """Nothing to release."""


def run_replay(
    client: httpx.Client,
    body: dict[str, Any],
    out: IO[str] = sys.stdout,
    err: IO[str] = sys.stderr,
    progress: ReplayProgress | None = None,
) -> int:
    """Start the job and follow it to its end; Ctrl-C cancels it. Returns the exit status."""
    shown = progress or ProgressLines(err)
    response = client.post("/api/admin/replay", json=body)
    job = _job(response)
    location = response.headers["location"]
    try:
        while job["status"] not in FINISHED:
            shown.show(job)
            time.sleep(POLL_S)
            job = _job(client.get(location))
    except KeyboardInterrupt:
        job = _job(client.delete(location))
        if job["status"] != "done":  # else it finished before the cancel arrived
            shown.close()
            err.write(f"\nreplay {job['jobId']}: {job['status']}; the current state stays\n")
            return 130
    shown.show(job)
    shown.close()
    if job["status"] != "done":
        raise ReplayFailed(f"replay {job['jobId']} {job['status']}: {job.get('error') or 'no reason given'}")
    for line in report_lines(job):
        out.write(line + "\n")
    return 0
