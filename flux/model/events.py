"""The event envelope: validation of what producers send, and its wire form on the events topic.

An envelope, as published over HTTP or straight to Kafka::

    {"stream": "sensors", "source": "agent-01", "timestamp": 1739290200000,
     "eventId": "019c...", "key": "...", "schema": {...},
     "payload": {"entity_id": "acme/sensor-01", "properties": {"temp": 22.5}}}

``stream``, ``source``, ``payload.entity_id`` and ``payload.properties`` are required;
``timestamp`` (Unix ms) defaults to now and ``eventId`` to a fresh UUIDv7. A deletion is an
envelope with ``"op": "delete"`` and no properties. Validation is hand-written rather than
pydantic so that a batch of 10,000 events validates in a few milliseconds and every error names
the field it is about.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from flux.model.ids import new_event_id

MAX_TIMESTAMP_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
MAX_EVENT_ID_LENGTH = 128
OP_DELETE = "delete"

Envelope = dict[str, Any]


@dataclass(frozen=True)
class EventLimits:
    """Size limits of one event (``FLUX_MAX_ENTITY_ID_LENGTH``, ``FLUX_MAX_PROPERTIES_PER_EVENT``,
    ``FLUX_MAX_PROPERTY_KEY_LENGTH``, ``FLUX_MAX_STREAM_SOURCE_LENGTH``)."""

    entity_id_length: int = 512
    properties: int = 1_000
    property_key_length: int = 256
    stream_source_length: int = 256


DEFAULT_LIMITS = EventLimits()


class InvalidEvent(ValueError):
    """An envelope that cannot be accepted; the message says which field and why."""


def _require_text(obj: dict[str, Any], field: str, label: str, max_length: int | None = None) -> str:
    if field not in obj or obj[field] is None:
        raise InvalidEvent(f"{label} is required")
    value = obj[field]
    if not isinstance(value, str):
        raise InvalidEvent(f"{label} must be a string, got {type_name(value)}")
    if not value:
        raise InvalidEvent(f"{label} must not be empty")
    if max_length is not None and len(value) > max_length:
        raise InvalidEvent(f"{label} must be at most {max_length} characters")
    return value


def type_name(value: Any) -> str:
    """The JSON name of a Python value's type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def parse_timestamp(value: Any, label: str = "timestamp") -> int:
    """A Unix-ms timestamp as an int; bools, fractions, strings and out-of-range values are refused.

    A number written with a zero fraction (``1739290200000.0``) is an integer in JSON's sense (and
    JSON Schema's), as some producers write them, so it is accepted.
    """
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidEvent(f"{label} must be an integer (Unix epoch milliseconds), got {type_name(value)}")
    if value < 0 or value > MAX_TIMESTAMP_MS:
        raise InvalidEvent(f"{label} must be between 0 and {MAX_TIMESTAMP_MS} (Unix epoch milliseconds)")
    return value


def validate_event(obj: Any, *, now_ms: int, limits: EventLimits = DEFAULT_LIMITS) -> Envelope:
    """Check one envelope and return its normalised form (eventId and timestamp filled in).

    Raises :class:`InvalidEvent` with a message naming the offending field.
    """
    if not isinstance(obj, dict):
        raise InvalidEvent(f"event must be a JSON object, got {type_name(obj)}")
    stream = _require_text(obj, "stream", "stream", limits.stream_source_length)
    source = _require_text(obj, "source", "source", limits.stream_source_length)
    op = obj.get("op")
    if op is not None and op != OP_DELETE:
        raise InvalidEvent(f'op must be "{OP_DELETE}" or absent')
    payload = obj.get("payload")
    if payload is None:
        raise InvalidEvent("payload is required")
    if not isinstance(payload, dict):
        raise InvalidEvent(f"payload must be an object, got {type_name(payload)}")
    entity_id = _require_text(payload, "entity_id", "payload.entity_id", limits.entity_id_length)
    if "\0" in entity_id:
        raise InvalidEvent("payload.entity_id must not contain the NUL character")
    properties = payload.get("properties")
    if op == OP_DELETE:
        if properties is not None:
            raise InvalidEvent("a delete event carries no payload.properties")
        properties = None
    elif properties is None:
        raise InvalidEvent("payload.properties is required")
    elif not isinstance(properties, dict):
        raise InvalidEvent(f"payload.properties must be an object, got {type_name(properties)}")
    elif properties:
        _check_property_limits(properties, limits)

    raw_ts = obj.get("timestamp")
    timestamp = now_ms if raw_ts is None else parse_timestamp(raw_ts)
    event_id = obj.get("eventId")
    if event_id is None:
        event_id = new_event_id(timestamp)
    elif not isinstance(event_id, str) or not event_id:
        raise InvalidEvent("eventId must be a non-empty string")
    elif len(event_id) > MAX_EVENT_ID_LENGTH:
        raise InvalidEvent(f"eventId must be at most {MAX_EVENT_ID_LENGTH} characters")

    envelope: Envelope = {
        "eventId": event_id,
        "stream": stream,
        "source": source,
        "timestamp": timestamp,
        "payload": {"entity_id": entity_id} if op == OP_DELETE else {"entity_id": entity_id, "properties": properties},
    }
    if op == OP_DELETE:
        envelope["op"] = OP_DELETE
    for optional in ("key", "schema"):
        if obj.get(optional) is not None:
            envelope[optional] = obj[optional]
    return envelope


def _check_property_limits(properties: dict[str, Any], limits: EventLimits) -> None:
    if len(properties) > limits.properties:
        raise InvalidEvent(
            f"payload.properties has {len(properties)} properties; the limit is {limits.properties} per event"
        )
    longest = max(properties, key=len)
    if len(longest) > limits.property_key_length:
        raise InvalidEvent(
            f"property name {longest[:40]!r}... is {len(longest)} characters; the limit is {limits.property_key_length}"
        )


def entity_of(envelope: Envelope) -> str:
    """The entity id a validated envelope is about."""
    entity_id: str = envelope["payload"]["entity_id"]
    return entity_id


def encode(envelope: Envelope) -> bytes:
    """The wire form of one envelope (one Kafka record value)."""
    return orjson.dumps(envelope)


def encode_many(envelopes: list[Envelope]) -> bytes:
    """The wire form of a packed record: a JSON array of envelopes of one partition."""
    return orjson.dumps(envelopes)
