"""Source topics: Kafka topics other than the events topic whose records Flux folds, and how a record
of one becomes envelopes. Pure: no I/O (the router, :mod:`flux.kafka.source_router`, does the Kafka side).

``FLUX_SOURCE_TOPICS`` lists them, comma-separated, as ``topic:format[:stream[:source]]``:

- ``flux``: a record holds an envelope or a JSON array of envelopes, as on the events topic; a
  missing ``stream`` or ``source`` is filled in as below;
- ``upsert``: key = the entity id (UTF-8), value = a JSON object of properties, merged into the
  entity; a null value (a tombstone) deletes the entity;
- ``connect-json``: what Kafka Connect's ``JsonConverter`` writes with ``schemas.enable=true``:
  the value is ``{"schema": ..., "payload": {...}}`` and the payload is the properties object; a
  null value or payload deletes the entity. The key may be such a wrapper too (its payload a
  string, an integer or a struct of one field), a JSON string, or plain text.

An event's ``stream`` and ``source`` come from the record's ``stream`` and ``source`` headers, else
from the topic's spec, else ``stream`` = the topic name and ``source`` = ``kafka:<topic>``. Its
time is the record's timestamp (``upsert``, ``connect-json``; a ``flux`` envelope may carry its
own), and its ``eventId`` is derived from the record's position
(:func:`flux.model.ids.source_event_id`), so reading a record twice yields the same events and the
reducer applies them once.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import orjson

from flux.model.events import (
    DEFAULT_LIMITS,
    OP_DELETE,
    Envelope,
    EventLimits,
    InvalidEvent,
    type_name,
    validate_event,
)
from flux.model.ids import source_event_id
from flux.model.records import Rejected

SourceFormat = Literal["flux", "upsert", "connect-json"]
FORMATS: tuple[str, ...] = get_args(SourceFormat)
TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
HEADER_STREAM = "stream"
HEADER_SOURCE = "source"
RAW_LIMIT = 1000  # characters of an undecodable value kept in its dead-letter entry

Headers = Sequence[tuple[str, bytes]]


class InvalidSourceTopics(ValueError):
    """``FLUX_SOURCE_TOPICS`` cannot be read; the message says which entry and why."""


@dataclass(frozen=True)
class SourceTopic:
    """One source topic: its name, its records' format, and the stream and source its events default to."""

    topic: str
    format: SourceFormat
    stream: str
    source: str


def parse_source_topics(spec: str) -> list[SourceTopic]:
    """The source topics of a ``FLUX_SOURCE_TOPICS`` value (see the module docstring); empty for ``""``.

    Topic names cannot hold ``:``, so the fields split on it; the source, last, may hold more
    (``sensors:upsert:telemetry:kafka:sensors`` has the source ``kafka:sensors``).
    """
    topics: list[SourceTopic] = []
    for entry in (part.strip() for part in spec.split(",")):
        if not entry:
            continue
        name, _, rest = entry.partition(":")
        fmt, _, rest = rest.partition(":")
        stream, _, source = rest.partition(":")
        if not TOPIC_NAME.match(name):
            raise InvalidSourceTopics(f"{entry!r}: {name!r} is not a Kafka topic name (letters, digits, '.', '_', '-')")
        if fmt not in FORMATS:
            raise InvalidSourceTopics(f"{entry!r}: the format must be one of {', '.join(FORMATS)}, got {fmt!r}")
        if any(topic.topic == name for topic in topics):
            raise InvalidSourceTopics(f"{entry!r}: topic {name!r} is listed twice")
        topics.append(SourceTopic(name, fmt, stream or name, source or f"kafka:{name}"))  # type: ignore[arg-type]
    return topics


@dataclass
class Converted:
    """What one source record becomes: envelopes for the events topic, and rejects for the dead letters."""

    events: list[Envelope] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)


class _Refused(ValueError):
    """A record that cannot become an event (the message is the dead-letter reason)."""


def convert_record(
    source: SourceTopic,
    *,
    key: bytes | None,
    value: bytes | None,
    headers: Headers,
    partition: int,
    offset: int,
    timestamp_ms: int,
    limits: EventLimits = DEFAULT_LIMITS,
) -> Converted:
    """The envelopes one record of ``source`` stands for (or why it stands for none)."""
    out = Converted()
    try:
        stream, origin = _stream_and_source(source, headers)
        if source.format == "flux":
            items = _flux_items(value)
        else:
            if timestamp_ms < 0:
                raise _Refused("the record has no timestamp (the event's time)")
            if source.format == "upsert":
                entity_id = _text_key(key)
                properties = None if value is None else _json_object(value, "record value")
            else:
                entity_id = _connect_key(key)
                properties = _connect_value(value)
            item: dict[str, Any] = {"stream": stream, "source": origin, "timestamp": timestamp_ms}
            if properties is None:
                item.update(op=OP_DELETE, payload={"entity_id": entity_id})
            else:
                item["payload"] = {"entity_id": entity_id, "properties": properties}
            items = [item]
    except _Refused as exc:
        out.rejected.append(Rejected(None, str(exc), _raw(key, value)))
        return out
    for index, item in enumerate(items):
        try:
            out.events.append(_envelope(item, source, stream, origin, partition, offset, index, timestamp_ms, limits))
        except InvalidEvent as exc:
            if source.format == "flux":
                out.rejected.append(Rejected(index, str(exc), item))
            else:
                out.rejected.append(Rejected(None, str(exc), _raw(key, value)))
    return out


def _envelope(
    item: Any,
    source: SourceTopic,
    stream: str,
    origin: str,
    partition: int,
    offset: int,
    index: int,
    timestamp_ms: int,
    limits: EventLimits,
) -> Envelope:
    """One validated envelope, its stream, source, time and eventId filled in where absent."""
    if not isinstance(item, dict):
        raise InvalidEvent(f"event must be a JSON object, got {type_name(item)}")
    filled = item if source.format != "flux" else {"stream": stream, "source": origin, **item}
    ts = filled.get("timestamp")
    if ts is None and timestamp_ms < 0:
        raise InvalidEvent("timestamp is required: the record has none")
    if filled.get("eventId") is None:
        base = ts if isinstance(ts, int) and not isinstance(ts, bool) and ts >= 0 else max(timestamp_ms, 0)
        filled["eventId"] = source_event_id(base, source.topic, partition, offset, index)
    return validate_event(filled, now_ms=timestamp_ms, limits=limits)


def _stream_and_source(source: SourceTopic, headers: Headers) -> tuple[str, str]:
    """The record's ``stream`` and ``source`` headers (the last of each wins), else the topic's defaults."""
    stream, origin = source.stream, source.source
    for name, raw in headers:
        if name not in (HEADER_STREAM, HEADER_SOURCE) or raw is None:
            continue
        try:
            text = raw.decode()
        except UnicodeDecodeError:
            raise _Refused(f"header {name!r} is not UTF-8") from None
        if name == HEADER_STREAM:
            stream = text
        else:
            origin = text
    return stream, origin


def _flux_items(value: bytes | None) -> list[Any]:
    if not value:
        raise _Refused("empty record value")
    parsed = _json(value, "record value")
    if isinstance(parsed, dict):
        return [parsed]
    if isinstance(parsed, list):
        return parsed
    raise _Refused("record value must be a JSON object or an array of objects")


def _json(raw: bytes, what: str) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _Refused(f"{what} is not JSON: {exc}") from None


def _json_object(raw: bytes, what: str) -> dict[str, Any]:
    parsed = _json(raw, what)
    if not isinstance(parsed, dict):
        raise _Refused(f"{what} must be a JSON object of properties, got {type_name(parsed)}")
    return parsed


def _text_key(key: bytes | None) -> str:
    """An ``upsert`` record's key: the entity id, as UTF-8 text."""
    if not key:
        raise _Refused("the record has no key (the entity id)")
    try:
        return key.decode()
    except UnicodeDecodeError:
        raise _Refused("the record key (the entity id) is not UTF-8") from None


def _is_wrapper(parsed: Any) -> bool:
    return isinstance(parsed, dict) and set(parsed) == {"schema", "payload"}


def _connect_key(key: bytes | None) -> str:
    """A ``connect-json`` record's entity id: a wrapper's payload, a JSON string, or the key's text."""
    text = _text_key(key)
    try:
        parsed = orjson.loads(text)
    except orjson.JSONDecodeError:
        return text  # a StringConverter key
    if isinstance(parsed, str):
        return parsed
    if not _is_wrapper(parsed):
        return text
    inner = parsed["payload"]
    if isinstance(inner, dict) and len(inner) == 1:  # a struct of one field (ValueToKey without ExtractField)
        inner = next(iter(inner.values()))
    if isinstance(inner, str):
        return inner
    if isinstance(inner, int) and not isinstance(inner, bool):
        return str(inner)
    raise _Refused(
        f"the record key's payload must be a string, an integer or a struct of one field, got {type_name(inner)}"
    )


def _connect_value(value: bytes | None) -> dict[str, Any] | None:
    """A ``connect-json`` record's properties, or None for a tombstone (null value or null payload)."""
    if value is None:
        return None
    parsed = _json(value, "record value")
    if parsed is None:
        return None
    if not _is_wrapper(parsed):
        raise _Refused(
            'record value must be {"schema": ..., "payload": ...} (JsonConverter with schemas.enable=true), '
            f"got {type_name(parsed)}" + (f" with fields {sorted(parsed)[:5]}" if isinstance(parsed, dict) else "")
        )
    payload = parsed["payload"]
    if payload is None:
        return None
    if not isinstance(payload, dict):
        raise _Refused(f"the record's payload must be an object (a struct) of properties, got {type_name(payload)}")
    return payload


def _raw(key: bytes | None, value: bytes | None) -> Any:
    """What a dead-letter entry shows of an unusable record: its key and value as text (cut short)."""

    def text(raw: bytes | None) -> str | None:
        return None if raw is None else raw[:RAW_LIMIT].decode(errors="replace")

    return {"key": text(key), "value": text(value)}
