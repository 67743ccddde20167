"""``flux backfill FILE``: publish a file of historic events through the HTTP API, resumably.

The file is JSON Lines (one event per line) or one JSON array of events; ``-`` reads standard
input. Events go out in batches (``POST /api/events/batch``); an event without an ``eventId``
gets one derived from its position and content, so sending the file again never applies an
event twice (the reducer applies an eventId once). After each acknowledged batch a checkpoint
next to the file records how far the file is done, and a new run resumes there. Events the API
refuses are written, with the reason, to a rejects file. Progress (events/s, ETA) goes to stderr.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

import httpx
import orjson

RETRY_STATUSES = (429, 502, 503, 504)


@dataclass
class Item:
    """One element of the file: its position, its text, and the event or why it is not one."""

    index: int
    text: str
    event: dict[str, Any] | None
    error: str | None = None


@dataclass
class Summary:
    """What a run did."""

    accepted: int = 0
    rejected: int = 0
    skipped: int = 0
    seconds: float = 0.0
    reasons: dict[str, int] = field(default_factory=dict)


class BackfillAborted(RuntimeError):
    """The API refused the whole run (e.g. a bad token); nothing more can be sent."""


def file_event_id(index: int, text: str) -> str:
    """The eventId of a file's event that has none: the same for the same position and content,
    and in file order (ties between equal timestamps go to the greater eventId)."""
    return f"backfill-{index:012d}-{hashlib.sha256(text.encode()).hexdigest()[:32]}"


def _item(index: int, text: str, value: Any) -> Item:
    if not isinstance(value, dict):
        return Item(index, text, None, "an event must be a JSON object")
    if value.get("eventId") is None:
        value = {**value, "eventId": file_event_id(index, text)}
    return Item(index, text, value)


def read_items(stream: IO[str]) -> Iterator[Item]:
    """The file's events in order: JSON Lines (streamed) or a JSON array (read whole)."""
    first = stream.read(1)
    while first and first.isspace():
        first = stream.read(1)
    if first == "[":
        try:
            values = orjson.loads("[" + stream.read())
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"the file starts like a JSON array but is not one: {exc}") from exc
        for index, value in enumerate(values):
            yield _item(index, orjson.dumps(value).decode(), value)
        return
    index = 0
    for number, line in enumerate(itertools.chain([first + stream.readline()], stream)):
        text = line.strip()
        if not text:
            continue
        try:
            yield _item(index, text, orjson.loads(text))
        except orjson.JSONDecodeError as exc:
            yield Item(index, text, None, f"line {number + 1}: not JSON: {exc}")
        index += 1


class Checkpoint:
    """How much of a file is acknowledged: ``{"done": next item index}`` in a file next to it."""

    def __init__(self, path: Path | None) -> None:
        self.path = path

    def load(self) -> int:
        """Items already acknowledged (0 without a checkpoint)."""
        if self.path is None or not self.path.exists():
            return 0
        return int(json.loads(self.path.read_text()).get("done", 0))

    def save(self, done: int) -> None:
        """Record that the items before ``done`` are acknowledged (atomically)."""
        if self.path is None:
            return
        partial = self.path.with_suffix(".tmp")
        partial.write_text(json.dumps({"done": done}))
        partial.replace(self.path)


class ProgressShown(Protocol):
    """What a run reports to: events sent so far and the byte position in the file (a rich bar on a
    terminal, :mod:`api.cli.progress`; else :class:`Progress`)."""

    def show(self, events: int, position: int | None, final: bool = False) -> None: ...


class Progress:
    """A one-line progress report on stderr: events, rate, share of the file and ETA."""

    def __init__(self, total_bytes: int | None, out: IO[str] = sys.stderr) -> None:
        self._total = total_bytes
        self._out = out
        self._started = time.monotonic()
        self._last = 0.0

    def show(self, events: int, position: int | None, final: bool = False) -> None:
        """Report, at most twice a second unless ``final``."""
        now = time.monotonic()
        if not final and now - self._last < 0.5:
            return
        self._last = now
        elapsed = max(now - self._started, 1e-6)
        line = f"backfill: {events:,} events, {events / elapsed:,.0f} events/s"
        if self._total and position is not None:
            share = min(1.0, position / self._total)
            eta = elapsed * (1 - share) / share if share > 0 else 0.0
            line += f", {share:.0%} of the file, ETA {eta:,.0f} s"
        self._out.write("\r" + line + ("\n" if final else ""))
        self._out.flush()


class Backfill:
    """Sends items in batches, retrying what the API asks to retry, recording rejects."""

    def __init__(self, url: str, token: str | None, batch_size: int, rejects: IO[str]) -> None:
        headers = {"content-type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._client = httpx.Client(base_url=url, headers=headers, timeout=120)
        self._batch_size = batch_size
        self._rejects = rejects
        self.summary = Summary()

    def close(self) -> None:
        """Close the HTTP client."""
        self._client.close()

    def reject(self, item: Item, reason: str) -> None:
        """Count ``item`` as rejected and write it, with the reason, to the rejects file."""
        self.summary.rejected += 1
        key = reason.split(": ", 1)[-1][:80]
        self.summary.reasons[key] = self.summary.reasons.get(key, 0) + 1
        self._rejects.write(orjson.dumps({"index": item.index, "error": reason, "event": item.text}).decode() + "\n")

    def send(self, items: list[Item]) -> None:
        """Publish ``items`` (valid JSON objects) as one batch; retries 429/5xx, splits on 413."""
        body = orjson.dumps([item.event for item in items])
        delay = 0.5
        while True:
            try:
                response = self._client.post("/api/events/batch", content=body)
            except httpx.TransportError as exc:
                print(f"\nbackfill: {exc!r}; retrying in {delay:.0f} s", file=sys.stderr)
                time.sleep(delay)
                delay = min(delay * 2, 30)
                continue
            if response.status_code in RETRY_STATUSES:
                time.sleep(float(response.headers.get("retry-after", delay)))
                delay = min(delay * 2, 30)
                continue
            break
        if response.status_code == 413 and len(items) > 1:
            middle = len(items) // 2
            self.send(items[:middle])
            self.send(items[middle:])
            return
        answer = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
        results = answer.get("results")
        if response.status_code in (200, 400, 403) and isinstance(results, list) and len(results) == len(items):
            for item, result in zip(items, results, strict=True):
                if result.get("error"):
                    self.reject(item, result["error"])
                else:
                    self.summary.accepted += 1
            return
        message = answer.get("error", response.text[:200])
        if response.status_code in (401, 403):
            raise BackfillAborted(f"the API refused the token ({response.status_code}): {message}")
        for item in items:
            self.reject(item, f"HTTP {response.status_code}: {message}")

    def run(self, items: Iterator[Item], checkpoint: Checkpoint, progress: ProgressShown, stream: IO[str]) -> Summary:
        """Send every item past the checkpoint, saving the checkpoint after each batch."""
        started = time.monotonic()
        done = checkpoint.load()
        pending: list[Item] = []
        last_index = done - 1

        def flush() -> None:
            if pending:
                self.send(pending)
                pending.clear()
            checkpoint.save(last_index + 1)
            progress.show(self.summary.accepted + self.summary.rejected, _position(stream))

        for item in items:
            if item.index < done:
                self.summary.skipped += 1
                continue
            last_index = item.index
            if item.event is None:
                self.reject(item, item.error or "not an event")
            else:
                pending.append(item)
            if len(pending) >= self._batch_size:
                flush()
        flush()
        progress.show(self.summary.accepted + self.summary.rejected, _position(stream), final=True)
        self.summary.seconds = time.monotonic() - started
        return self.summary


def _position(stream: IO[str]) -> int | None:
    try:
        return os.lseek(stream.fileno(), 0, os.SEEK_CUR)
    except (OSError, ValueError, AttributeError):
        return None
