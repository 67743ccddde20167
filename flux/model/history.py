"""The history index: where each stored event lives in a partition's store, and how pages are cut.

Every event the reducer applies is also written, as published, under a key that sorts by entity,
then timestamp, then eventId::

    HISTORY_PREFIX + entity_id + NUL + timestamp (8 bytes, big-endian) + eventId

Entity ids never contain NUL (validation refuses it), so one entity's events are one contiguous,
time-ordered key range, and a time window is a seek to its first key. A second key,
``SEEN_PREFIX + entity_id + NUL + eventId``, says the entity already has that event, so a re-sent
event is applied and stored once. This module is pure: key layout, query, cursors, and how a page
of entities as they were at a time is cut (:func:`page_at`, whoever stores the events).
"""

from __future__ import annotations

import base64
import binascii
import struct
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson

HISTORY_PREFIX = b"__flux\0h\0"
SEEN_PREFIX = b"__flux\0e\0"
_TS = struct.Struct(">Q")


class InvalidQuery(ValueError):
    """A history or time-travel parameter that cannot be used; the message says which and why."""


def entity_range(entity_id: str) -> bytes:
    """The key prefix of every history entry of ``entity_id``."""
    return HISTORY_PREFIX + entity_id.encode() + b"\0"


def history_key(entity_id: str, timestamp: int, event_id: str) -> bytes:
    """The history key of one event."""
    return entity_range(entity_id) + _TS.pack(timestamp) + event_id.encode()


def seen_key(entity_id: str, event_id: str) -> bytes:
    """The key that marks ``event_id`` as stored for ``entity_id``."""
    return SEEN_PREFIX + entity_id.encode() + b"\0" + event_id.encode()


def time_key(entity_id: str, timestamp: int) -> bytes:
    """The first history key of ``entity_id`` at or after ``timestamp``."""
    return entity_range(entity_id) + _TS.pack(timestamp)


def split_history_key(key: bytes) -> tuple[str, int, str]:
    """(entity id, timestamp, eventId) of a history key."""
    body = key[len(HISTORY_PREFIX) :]
    nul = body.index(b"\0")
    (timestamp,) = _TS.unpack_from(body, nul + 1)
    return body[:nul].decode(), timestamp, body[nul + 1 + _TS.size :].decode()


def index_entry(envelope: dict[str, Any]) -> tuple[bytes, bytes, bytes]:
    """(applied-once mark, history key, stored value) of one validated envelope."""
    entity_id = envelope["payload"]["entity_id"]
    event_id = envelope["eventId"]
    return (
        seen_key(entity_id, event_id),
        history_key(entity_id, envelope["timestamp"], event_id),
        orjson.dumps(envelope),
    )


def encode_cursor(last_key: bytes) -> str:
    """An opaque cursor that resumes just after ``last_key``."""
    return base64.urlsafe_b64encode(orjson.dumps([1, last_key.hex()])).decode().rstrip("=")


def decode_cursor(cursor: str) -> bytes:
    """The key a cursor resumes after; :class:`InvalidQuery` if it is not one of ours."""
    try:
        version, key = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if version != 1:
            raise ValueError(version)
        decoded = bytes.fromhex(key)
    except (ValueError, TypeError, binascii.Error, orjson.JSONDecodeError) as exc:
        raise InvalidQuery("cursor is not valid; use the Link header of the previous page as is") from exc
    if not decoded.startswith(HISTORY_PREFIX):
        raise InvalidQuery("cursor is not valid; use the Link header of the previous page as is")
    return decoded


@dataclass(frozen=True)
class HistoryQuery:
    """What to read: an entity (exact) or an id prefix, a time window, an order, filters, a page."""

    entity: str | None
    prefix: str | None
    since: int
    until: int
    descending: bool
    limit: int
    after: bytes | None = None  # the cursor: the last key of the previous page
    streams: frozenset[str] | None = None
    sources: frozenset[str] | None = None


@dataclass(frozen=True)
class AtPage:
    """A page of entities as they were at a time: ``(id, entity)`` pairs in id order, the last id
    examined when more ids follow (None: no more), and what the page cost (see :func:`page_at`)."""

    items: list[tuple[str, dict[str, Any]]]
    frontier: str | None
    scanned: int


FoldAt = Callable[[str], Awaitable[tuple[dict[str, Any] | None, int]]]
"""An entity id -> (the entity as it was at the page's time or None, history events folded for it)."""


async def page_at(ids: Iterable[str], fold_at: FoldAt, limit: int, budget: int) -> AtPage:
    """Fold the entities of ``ids`` (in id order) one by one until ``limit`` of them existed at the
    time, or until ``budget`` is spent: each entity examined costs the events folded for it, one at
    least (one that did not exist yet costs a seek). One entity is always examined, and an entity is
    folded whole, so the last one may overshoot the budget; the frontier is then the last id examined,
    and a page that goes on after it misses nothing."""
    items: list[tuple[str, dict[str, Any]]] = []
    scanned = 0
    last: str | None = None
    for entity_id in ids:
        if last is not None and (len(items) == limit or scanned >= budget):  # one entity at least: progress
            return AtPage(items, last, scanned)
        entity, events = await fold_at(entity_id)
        scanned += max(1, events)
        last = entity_id
        if entity is not None:
            items.append((entity_id, entity))
    return AtPage(items, None, scanned)
