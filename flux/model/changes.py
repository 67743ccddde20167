"""The change feed: what the reducer applied, as records of the changes topic. Pure, no I/O.

After each batch the reducer writes one record per partition it touched (split in chunks when a
batch changed many entities) to the changes topic, on the same partition number as the events::

    {"partition": 3, "applied": 1842, "events": 90211, "entities": 512, "sources": ["agent-01"],
     "t": 1739290200040,
     "changes": [{"id": "acme/sensor-01", "o": 1842,
                  "ops": [["u", "temp", 22.5, 1739290200000], ["d", 1739290200100]],
                  "entity": {"id": ..., "properties": {...}, "lastUpdated": "..."} | null}]}

``applied`` is the events-topic offset up to which the partition's state is written (the next
offset to fold): readers use it for read-your-writes (``?wait=true``) and, with each entity's
``o`` (the ``applied`` of the batch that last wrote it, kept in its stored state), to join a
snapshot to the live stream without a gap or a duplicate. ``events`` and ``entities`` are the
partition's running totals (events folded, entities existing), ``sources`` the event sources of
the batch, ``t`` the newest Kafka record timestamp (ms) among the batch's events in the partition
(0 when unknown; for ``flux_relay_latency_ms``). ``ops`` are the visible changes in the order
they were applied: ``u`` a property took a new value, ``d`` the entity was deleted, ``x`` a
property was removed (only a replay does that); ``entity`` is the entity after the batch.
An entity whose events moved only its ``lastUpdated`` (they repeated its values) is listed with
empty ``ops``: subscribers get no message for it, but HTTP processes' read overlays
(:mod:`agents.table.replica`) must hold its new view.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from flux.model.reducer import Change, EntityDeleted, PropertyRemoved

CHUNK_ENTITIES = 1000

OP_UPDATE = "u"
OP_DELETED = "d"
OP_REMOVED = "x"


def encode_ops(changes: list[Change]) -> list[list[Any]]:
    """Reducer changes as feed ops, in order."""
    ops: list[list[Any]] = []
    for change in changes:
        if isinstance(change, EntityDeleted):
            ops.append([OP_DELETED, change.timestamp])
        elif isinstance(change, PropertyRemoved):
            ops.append([OP_REMOVED, change.property])
        else:
            ops.append([OP_UPDATE, change.property, change.value, change.timestamp])
    return ops


@dataclass
class EntityChange:
    """What one batch visibly changed in one entity."""

    id: str
    o: int
    ops: list[list[Any]]
    entity: dict[str, Any] | None


@dataclass
class ChangeRecord:
    """One record of the changes topic (see the module docstring)."""

    partition: int
    applied: int
    events: int
    entities: int
    sources: list[str] = field(default_factory=list)
    changes: list[EntityChange] = field(default_factory=list)
    source_ms: int = 0  # the newest Kafka record timestamp (ms) among the batch's events here; 0: unknown


def encode_records(record: ChangeRecord) -> list[bytes]:
    """The wire form of ``record``: one value, or several when it changed many entities."""
    head = {
        "partition": record.partition,
        "applied": record.applied,
        "events": record.events,
        "entities": record.entities,
        "sources": record.sources,
        "t": record.source_ms,
    }
    changes = [{"id": c.id, "o": c.o, "ops": c.ops, "entity": c.entity} for c in record.changes]
    chunks = [changes[i : i + CHUNK_ENTITIES] for i in range(0, len(changes), CHUNK_ENTITIES)] or [[]]
    return [orjson.dumps({**head, "changes": chunk}) for chunk in chunks]


class InvalidChangeRecord(ValueError):
    """A changes-topic record that is not in the format above."""


def decode_record(value: bytes) -> ChangeRecord:
    """A changes-topic record; raises :class:`InvalidChangeRecord` if it is not one."""
    try:
        obj = orjson.loads(value)
        return ChangeRecord(
            partition=int(obj["partition"]),
            applied=int(obj["applied"]),
            events=int(obj["events"]),
            entities=int(obj["entities"]),
            sources=[str(s) for s in obj["sources"]],
            changes=[EntityChange(c["id"], int(c["o"]), c["ops"], c["entity"]) for c in obj["changes"]],
            source_ms=int(obj.get("t") or 0),
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise InvalidChangeRecord(f"not a Flux change record: {exc!r}") from exc
