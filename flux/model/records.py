"""Reading records of the events topic: one envelope (JSON object) or a packed JSON array.

Records come from Flux's own API and from any Kafka producer, so nothing is trusted: a record that
is not JSON, or an element that is not a valid envelope, becomes a dead-letter entry with the
reason; an event on the wrong partition (a producer with its own partitioner) is sent on to the
partition its entity lives on. Defaults are deterministic (timestamp from the record, eventId
from the record's position), so reading the same record twice yields the same events.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from flux.model.events import DEFAULT_LIMITS, Envelope, EventLimits, InvalidEvent, validate_event
from flux.model.ids import derived_event_id
from flux.model.partitioning import partition_for


@dataclass
class Rejected:
    """An element that could not be accepted, with the reason."""

    index: int | None
    reason: str
    raw: Any


@dataclass
class DecodedRecord:
    """What one record holds: events for this partition, events for others, and rejects."""

    events: list[Envelope] = field(default_factory=list)
    misplaced: list[tuple[int, Envelope]] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)


def decode_record(
    value: bytes | None,
    *,
    topic: str,
    partition: int,
    offset: int,
    timestamp_ms: int,
    partitions: int,
    limits: EventLimits = DEFAULT_LIMITS,
) -> DecodedRecord:
    """Split one events-topic record into valid events, misplaced events and rejects."""
    out = DecodedRecord()
    if not value:
        out.rejected.append(Rejected(None, "empty record value", None))
        return out
    try:
        parsed = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        out.rejected.append(Rejected(None, f"record value is not JSON: {exc}", value[:1000].decode(errors="replace")))
        return out
    if isinstance(parsed, dict):
        items = [parsed]
    elif isinstance(parsed, list):
        items = parsed
    else:
        out.rejected.append(Rejected(None, "record value must be a JSON object or an array of objects", parsed))
        return out
    for index, item in enumerate(items):
        if isinstance(item, dict) and item.get("eventId") is None:
            ts = item.get("timestamp")
            base = ts if isinstance(ts, int) and not isinstance(ts, bool) and ts >= 0 else timestamp_ms
            item = {**item, "eventId": derived_event_id(base, topic, partition, offset, index)}
        try:
            envelope = validate_event(item, now_ms=timestamp_ms, limits=limits)
        except InvalidEvent as exc:
            out.rejected.append(Rejected(index, str(exc), item))
            continue
        home = partition_for(envelope["payload"]["entity_id"], partitions)
        if home == partition:
            out.events.append(envelope)
        else:
            out.misplaced.append((home, envelope))
    return out


def dead_letter(rejected: Rejected, *, topic: str, partition: int, offset: int) -> bytes:
    """The dead-letter record for a reject: where it came from, why, and what it was."""
    return orjson.dumps(
        {
            "reason": rejected.reason,
            "topic": topic,
            "partition": partition,
            "offset": offset,
            "index": rejected.index,
            "value": rejected.raw,
        },
        default=str,
    )
