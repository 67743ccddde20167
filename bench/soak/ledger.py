"""What the soak knows for sure: every acknowledged event, and what readers and subscribers saw.

Each writer owns a disjoint set of entities and sends one request at a time, so the events of an
entity are published one after another with growing timestamps and a growing ``seq`` property.
A request is sent again, with the same eventIds and the same ``X-Idempotency-Key``, until it is
acknowledged (``200``): every event ends up acknowledged once, and the expected state of an
entity is the fold of its acknowledged events with the pure reducer, whatever the order
(``flux/model/reducer.py``: versions are ``[timestamp, eventId]`` maxima). Acknowledged events
are appended to ``acked.ndjson`` in the run's directory, which the final check folds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from flux.model.reducer import fold, to_entity


@dataclass
class Incident:
    """Something a reader or a subscriber saw that must not happen (or, for gaps, may)."""

    at: float  # seconds since the start of the run
    kind: str
    entity_id: str
    detail: str


@dataclass
class Ledger:
    """Acknowledged events on disk, and counters and incidents in memory."""

    path: Path
    started: float = field(default_factory=time.monotonic)
    acked_events: int = 0
    acked_requests: int = 0
    single_requests: int = 0
    batch_requests: int = 0
    failed_tries: int = 0
    replayed_answers: int = 0
    unknown_events: int = 0  # never acknowledged before the writer gave up
    unknown_entities: set[str] = field(default_factory=set)
    refused_events: int = 0
    last_acked_seq: dict[str, int] = field(default_factory=dict)
    incidents: list[Incident] = field(default_factory=list)
    failures: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._out = self.path.open("ab")

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def acknowledged(self, events: list[dict[str, Any]], batch: bool) -> None:
        """``events`` were acknowledged with a 200 answer."""
        for event in events:
            self._out.write(orjson.dumps(event) + b"\n")
            entity_id = event["payload"]["entity_id"]
            seq = event["payload"]["properties"]["seq"]
            self.last_acked_seq[entity_id] = max(seq, self.last_acked_seq.get(entity_id, 0))
        self.acked_events += len(events)
        self.acked_requests += 1
        if batch:
            self.batch_requests += 1
        else:
            self.single_requests += 1

    def failed(self, reason: str) -> None:
        """One try of a request failed (it is sent again)."""
        self.failed_tries += 1
        self.failures[reason] = self.failures.get(reason, 0) + 1

    def gave_up(self, events: list[dict[str, Any]]) -> None:
        """``events`` were never acknowledged: they may or may not be applied."""
        self.unknown_events += len(events)
        self.unknown_entities.update(e["payload"]["entity_id"] for e in events)

    def note(self, kind: str, entity_id: str, detail: str) -> None:
        self.incidents.append(Incident(round(self.elapsed(), 1), kind, entity_id, detail))

    def count(self, kind: str) -> int:
        return sum(1 for incident in self.incidents if incident.kind == kind)

    def close(self) -> None:
        self._out.close()

    def expected(self) -> dict[str, dict[str, Any]]:
        """Each entity as the fold of its acknowledged events (``to_entity``'s view), from ``acked.ndjson``."""
        self._out.flush()
        by_entity: dict[str, list[Any]] = {}
        with self.path.open("rb") as lines:
            for line in lines:
                event = orjson.loads(line)
                by_entity.setdefault(event["payload"]["entity_id"], []).append(event)
        found: dict[str, dict[str, Any]] = {}
        for entity_id, events in by_entity.items():
            entity = to_entity(entity_id, fold(events))
            if entity is not None:
                found[entity_id] = entity
        return found

    def acked_event_ids(self) -> set[str]:
        """Every acknowledged eventId."""
        self._out.flush()
        with self.path.open("rb") as lines:
            return {orjson.loads(line)["eventId"] for line in lines}
