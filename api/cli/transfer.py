"""``flux export`` and ``flux import``: the state as NDJSON, one entity a line, and back.

Export pages through the list API (``GET /api/state/entities``, :meth:`flux.client.FluxClient.list`)
and writes each page as it comes: memory stays flat however many entities there are.

Import turns each line ``{"id", "properties", "lastUpdated"}`` into an upsert event for that entity,
timestamped at its ``lastUpdated`` (so newer state already in the target wins, property by property),
with an ``eventId`` derived from the line's content (:func:`import_event_id`): the reducer applies an
eventId once, so importing the same file again applies nothing twice. Events go out through
:meth:`~flux.client.FluxClient.publish_batch` a batch at a time, each batch under an
``X-Idempotency-Key`` derived from its body, so a repeated batch is answered from the node's
idempotency record and not even published again (within ``FLUX_IDEMPOTENCY_TTL_S``).
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import IO, TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from flux.client import Entity, FluxClient

IMPORT_STREAM = "import"
IMPORT_SOURCE = "flux-import"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MILLISECOND = timedelta(milliseconds=1)
EXPORT_PAGE = 10_000  # FLUX_LIST_MAX_LIMIT's default: the fewest requests


def entity_line(entity: Entity) -> bytes:
    """One entity as an NDJSON line, in the API's shape."""
    return orjson.dumps({"id": entity.id, "properties": entity.properties, "lastUpdated": entity.last_updated}) + b"\n"


def export(
    client: FluxClient,
    out: IO[bytes],
    *,
    prefix: str | None = None,
    namespace: str | None = None,
    page_size: int = EXPORT_PAGE,
    at: str | None = None,
    progress: Any = None,
) -> int:
    """Write every matching entity to ``out``, a page at a time; the number written. ``progress`` is
    called with the running count after each page."""
    count = 0
    pending: list[bytes] = []
    for entity in client.list(prefix, namespace=namespace, at=at, page_size=page_size):
        pending.append(entity_line(entity))
        if len(pending) == page_size:
            out.write(b"".join(pending))
            count += len(pending)
            pending.clear()
            if progress is not None:
                progress(count)
    out.write(b"".join(pending))
    count += len(pending)
    out.flush()
    if progress is not None:
        progress(count)
    return count


def epoch_ms(value: str) -> int:
    """An RFC 3339 time (``2025-02-11T16:10:00.000Z``) in Unix epoch milliseconds."""
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        raise ValueError(f"{value!r} has no time zone")
    return (moment - EPOCH) // MILLISECOND


def import_event_id(entity_id: str, properties: Any, last_updated: Any) -> str:
    """The eventId of an imported entity: the same for the same id, properties and time, whatever the
    order of the properties in the file."""
    canonical = orjson.dumps([entity_id, properties, last_updated], option=orjson.OPT_SORT_KEYS)
    return "import-" + hashlib.sha256(canonical).hexdigest()[:40]


@dataclass
class ImportSummary:
    """What an import did: events accepted (applied, or already applied before), lines refused and why."""

    accepted: int = 0
    rejected: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    def reject(self, reason: str) -> None:
        """Count a refused line."""
        self.rejected += 1
        key = reason.split(": ", 1)[-1][:80]
        self.reasons[key] = self.reasons.get(key, 0) + 1


def upsert_event(line: bytes, number: int, stream: str, source: str) -> dict[str, Any]:
    """The upsert event of one exported line; ValueError says why a line is not an entity."""
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"line {number}: not JSON: {exc}") from None
    if not isinstance(value, dict) or not isinstance(value.get("id"), str) or not value["id"]:
        raise ValueError(f'line {number}: not an entity (an object with "id" and "properties")')
    properties = value.get("properties")
    if not isinstance(properties, dict):
        raise ValueError(f'line {number}: "properties" must be an object')
    envelope: dict[str, Any] = {
        "stream": stream,
        "source": source,
        "eventId": import_event_id(value["id"], properties, value.get("lastUpdated")),
        "payload": {"entity_id": value["id"], "properties": properties},
    }
    last_updated = value.get("lastUpdated")
    if last_updated is not None:
        try:
            envelope["timestamp"] = epoch_ms(str(last_updated))
        except ValueError as exc:
            raise ValueError(f"line {number}: lastUpdated: {exc}") from None
    return envelope


def batch_key(events: Iterable[dict[str, Any]]) -> str:
    """The idempotency key of a batch: a digest of its events, so the same batch gets the same key and
    another batch never reuses one (the node refuses a key with another body)."""
    digest = hashlib.sha256()
    for envelope in events:
        digest.update(orjson.dumps(envelope, option=orjson.OPT_SORT_KEYS))
    return "import-" + digest.hexdigest()[:48]


def read_lines(stream: IO[bytes]) -> Iterator[tuple[int, bytes]]:
    """The non-blank lines of an NDJSON file, numbered from 1."""
    for number, line in enumerate(stream, start=1):
        if line.strip():
            yield number, line


def import_entities(
    client: FluxClient,
    stream: IO[bytes],
    *,
    batch_size: int,
    event_stream: str = IMPORT_STREAM,
    source: str = IMPORT_SOURCE,
    wait: bool = False,
    rejects: IO[str] | None = None,
    progress: Any = None,
) -> ImportSummary:
    """Publish every line of ``stream`` as an upsert event, ``batch_size`` lines a batch."""
    summary = ImportSummary()
    lines = read_lines(stream)
    while batch := list(itertools.islice(lines, batch_size)):
        events: list[dict[str, Any]] = []
        numbers: list[int] = []
        for number, line in batch:
            try:
                events.append(upsert_event(line, number, event_stream, source))
                numbers.append(number)
            except ValueError as exc:
                summary.reject(str(exc))
                if rejects is not None:
                    rejects.write(f"{exc}\n")
        if events:
            result = client.publish_batch(events, wait=wait, idempotency_key=batch_key(events))
            for number, item in zip(numbers, result.results, strict=True):
                if item.ok:
                    summary.accepted += 1
                else:
                    summary.reject(f"line {number}: {item.error}")
                    if rejects is not None:
                        rejects.write(f"line {number}: {item.error}\n")
        if progress is not None:
            progress(summary.accepted + summary.rejected)
    return summary
