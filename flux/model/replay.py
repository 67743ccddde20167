"""Replay jobs: which part of the events topic a replay re-derives state from, and how far it got.

Pure, no I/O. A replay folds a range of the events topic into a new generation of the entity
table (see :mod:`agents.replay.jobs`). The range starts at the beginning of every partition, at the
first record at or after a time (Kafka's record time, when Flux published the event), or at
given offsets of some partitions; it ends at the live table's position when the new generation
switches in, or at the last record before ``to`` (a rollback: later events stay in the log and in
history, but not in state).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from flux.model.events import MAX_TIMESTAMP_MS
from flux.model.reducer import rfc3339_ms

FROM_BEGINNING = "beginning"
FROM_TIMESTAMP = "timestamp"
FROM_OFFSETS = "offsets"

RUNNING = "running"
CATCHING_UP = "catching-up"
SWITCHING = "switching"
DONE = "done"
FAILED = "failed"
CANCELLED = "cancelled"
FINISHED = (DONE, FAILED, CANCELLED)

_OFFSET_ITEM = re.compile(r"\s*([0-9]+)\s*:\s*([0-9]+)\s*")
RFC3339_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})$"
OFFSETS_PATTERN = r"^\s*[0-9]+\s*:\s*[0-9]+\s*(,\s*[0-9]+\s*:\s*[0-9]+\s*)*$"
_RFC3339 = re.compile(RFC3339_PATTERN)
_PARTITION = re.compile(r"[0-9]+")


class InvalidReplay(ValueError):
    """A replay request that cannot be run; the message says why."""


def parse_time(value: Any, name: str) -> int:
    """A time as Unix epoch ms, from Unix ms (int or digits) or RFC 3339 text with a zone."""
    if isinstance(value, bool):
        raise InvalidReplay(f"{name} must be Unix epoch milliseconds or an RFC 3339 time")
    if isinstance(value, int):
        unix_ms = value
    elif isinstance(value, str):
        if _RFC3339.fullmatch(value + "Z"):
            raise InvalidReplay(f"{name} needs a time zone (e.g. a trailing Z for UTC)")
        if not _RFC3339.fullmatch(value):
            raise InvalidReplay(f"{name}: {value[:40]!r} is not an RFC 3339 time such as 2026-02-23T10:30:00Z")
        try:
            parsed = datetime.fromisoformat(value.replace("z", "Z"))
        except ValueError:
            raise InvalidReplay(f"{name}: {value!r} is not an RFC 3339 time such as 2026-02-23T10:30:00Z") from None
        unix_ms = max(0, int(parsed.timestamp() * 1000))
    else:
        raise InvalidReplay(f"{name} must be Unix epoch milliseconds or an RFC 3339 time")
    if not 0 <= unix_ms <= MAX_TIMESTAMP_MS:
        raise InvalidReplay(f"{name} must be between 0 and {MAX_TIMESTAMP_MS} (Unix epoch ms)")
    return unix_ms


def parse_offsets(value: Any) -> dict[int, int]:
    """``{"3": 1200}`` or ``"3:1200,4:0"`` as ``{partition: offset}``."""
    if isinstance(value, str):
        items = [_OFFSET_ITEM.fullmatch(part) for part in value.split(",")]
        if not all(items):
            raise InvalidReplay("fromOffsets must look like PARTITION:OFFSET[,PARTITION:OFFSET...], e.g. 0:1200,3:0")
        pairs = [(int(m.group(1)), int(m.group(2))) for m in items if m]
    elif isinstance(value, dict) and value:
        if not all(_PARTITION.fullmatch(p) for p in value):
            raise InvalidReplay("fromOffsets keys must be partition numbers")
        pairs = [(int(p), o) for p, o in value.items()]
        if not all(isinstance(o, int) and not isinstance(o, bool) and o >= 0 and p >= 0 for p, o in pairs):
            raise InvalidReplay("fromOffsets must map partition numbers to offsets >= 0")
    else:
        raise InvalidReplay('fromOffsets must be {"PARTITION": OFFSET, ...} or "PARTITION:OFFSET,..."')
    offsets = dict(pairs)
    if len(offsets) != len(pairs):
        raise InvalidReplay("fromOffsets names a partition twice")
    return offsets


@dataclass(frozen=True)
class ReplayRange:
    """Where a replay starts (one of three ways) and, optionally, the time it stops at."""

    start: str
    from_timestamp: int | None = None
    from_offsets: dict[int, int] | None = None
    to_timestamp: int | None = None

    def public(self) -> dict[str, Any]:
        """The range as the API shows it."""
        shown: dict[str, Any] = {"from": self.start}
        if self.from_timestamp is not None:
            shown["fromTimestamp"] = rfc3339_ms(self.from_timestamp)
        if self.from_offsets is not None:
            shown["fromOffsets"] = {str(p): o for p, o in sorted(self.from_offsets.items())}
        if self.to_timestamp is not None:
            shown["toTimestamp"] = rfc3339_ms(self.to_timestamp)
        return shown


def parse_replay_request(body: Any, now_ms: int | None = None) -> ReplayRange:
    """The range of a ``POST /api/admin/replay`` body; raises :class:`InvalidReplay`.

    Times after ``now_ms`` are refused: a start in the future would replay nothing (and leave
    every served entity out of the new generation), an end in the future is no end.
    """
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    if not isinstance(body, dict):
        raise InvalidReplay('body must be a JSON object such as {"fromBeginning": true}')
    unknown = set(body) - {"fromBeginning", "fromTimestamp", "fromOffsets", "toTimestamp"}
    if unknown:
        raise InvalidReplay(f"unknown field(s): {', '.join(sorted(unknown))}")
    starts = [name for name in ("fromBeginning", "fromTimestamp", "fromOffsets") if name in body]
    if len(starts) != 1:
        raise InvalidReplay("give exactly one of fromBeginning (true), fromTimestamp or fromOffsets")
    to = None if body.get("toTimestamp") is None else parse_time(body["toTimestamp"], "toTimestamp")
    if to is not None and to > now_ms:
        raise InvalidReplay("toTimestamp is in the future; leave it out to replay up to now")
    if starts == ["fromBeginning"]:
        if body["fromBeginning"] is not True:
            raise InvalidReplay("fromBeginning must be true")
        return ReplayRange(FROM_BEGINNING, to_timestamp=to)
    if starts == ["fromTimestamp"]:
        since = parse_time(body["fromTimestamp"], "fromTimestamp")
        if since > now_ms:
            raise InvalidReplay("fromTimestamp is in the future: the new generation would hold no event")
        if to is not None and to < since:
            raise InvalidReplay("toTimestamp is before fromTimestamp")
        return ReplayRange(FROM_TIMESTAMP, from_timestamp=since, to_timestamp=to)
    return ReplayRange(FROM_OFFSETS, from_offsets=parse_offsets(body["fromOffsets"]), to_timestamp=to)


@dataclass
class PartitionProgress:
    """One partition of a replay: the offsets it started at, reached, and is folding up to."""

    start: int
    position: int
    end: int


@dataclass
class SwitchReport:
    """What the switch to the new generation did."""

    entities: int = 0
    changed: int = 0
    removed: int = 0
    pause_ms: float = 0.0


@dataclass
class ReplayJob:
    """A replay job's state, as ``GET /api/admin/replay/{id}`` shows it."""

    job_id: str
    range: ReplayRange
    partitions: dict[int, PartitionProgress] = field(default_factory=dict)
    status: str = RUNNING
    events: int = 0
    started: float = field(default_factory=time.time)
    finished: float | None = None
    folded: float | None = None  # when the new generation first reached the live table's position
    error: str | None = None
    report: SwitchReport | None = None

    def offsets_done(self) -> tuple[int, int]:
        """(offsets folded, offsets to fold) over all partitions."""
        done = sum(max(0, p.position - p.start) for p in self.partitions.values())
        total = sum(max(0, p.end - p.start) for p in self.partitions.values())
        return done, total

    def public(self, now: float | None = None) -> dict[str, Any]:
        """The job as JSON: status, range, per-partition offsets, rate, ETA, and the report when done."""
        now = time.time() if now is None else now
        elapsed = max(1e-6, (self.finished or now) - self.started)
        done, total = self.offsets_done()
        rate = done / elapsed
        eta = None if self.status in FINISHED or rate <= 0 else round(max(0, total - done) / rate, 1)
        shown: dict[str, Any] = {
            "jobId": self.job_id,
            "status": self.status,
            **self.range.public(),
            "startedAt": rfc3339_ms(int(self.started * 1000)),
            "finishedAt": None if self.finished is None else rfc3339_ms(int(self.finished * 1000)),
            "partitions": [
                {"partition": n, "start": p.start, "position": p.position, "end": p.end}
                for n, p in sorted(self.partitions.items())
            ],
            "events": self.events,
            "eventsPerSecond": round(self.events / elapsed),
            "percent": 100.0 if self.status == DONE or 0 < total <= done else round(100 * done / max(1, total), 1),
            "etaSeconds": eta,
            "error": self.error,
            "report": None,
        }
        if self.report is not None:
            shown["report"] = {
                "seconds": round(elapsed, 3),
                "foldSeconds": None if self.folded is None else round(self.folded - self.started, 3),
                "entities": self.report.entities,
                "entitiesChanged": self.report.changed,
                "entitiesRemoved": self.report.removed,
                "writesPausedMs": round(self.report.pause_ms, 1),
            }
        return shown


class ReplayBusy(RuntimeError):
    """Another replay job is running on this node."""


class Replays(Protocol):
    """What the HTTP API needs of the node's replay jobs."""

    def start(self, replay_range: ReplayRange) -> ReplayJob:
        """Start a job (raises :class:`ReplayBusy`, :class:`InvalidReplay`, or PartitionUnavailable)."""
        ...

    def get(self, job_id: str) -> ReplayJob | None:
        """A job by id, running or finished, or None."""
        ...

    def all(self) -> list[ReplayJob]:
        """Every job this node ran since it started, newest first."""
        ...

    async def cancel(self, job_id: str) -> ReplayJob | None:
        """Cancel a running job (the current generation stays); None if unknown."""
        ...
