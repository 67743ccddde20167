"""The merge rule: how events fold into an entity's state. Pure Python, no I/O.

State of one entity (stored as JSON in the table; the per-property versions never reach the API)::

    {"p": {name: value}, "v": {name: [ts, eventId]}, "l": [ts, eventId] | None, "t": [ts, eventId] | None}

A version is ``[timestamp_ms, eventId]`` and versions compare as pairs, so ties on the timestamp
are broken by the eventId. The rule, for each property: the value with the greatest version wins,
among the events newer than the latest deletion (``t``). ``l`` is the greatest version of any
non-delete event; the entity exists when ``l`` is newer than ``t``. Every field is a maximum
over the events seen, so the fold is independent of order and re-applying an event changes
nothing: replays and late (backfilled) events are safe.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, NamedTuple

from flux.model.events import OP_DELETE, Envelope

State = dict[str, Any]
Version = list[Any]  # [timestamp_ms, eventId]


class PropertyChanged(NamedTuple):
    """A property whose visible value changed."""

    property: str
    value: Any
    timestamp: int


class EntityDeleted(NamedTuple):
    """The entity stopped existing (a tombstone newer than everything it had)."""

    timestamp: int


class PropertyRemoved(NamedTuple):
    """A property the entity no longer has (only a replay that re-derives state can drop one)."""

    property: str


Change = PropertyChanged | EntityDeleted | PropertyRemoved


def new_state() -> State:
    """The state of an entity no event has touched."""
    return {"p": {}, "v": {}, "l": None, "t": None}


def exists(state: State | None) -> bool:
    """Whether the entity is visible: it has an event newer than its latest deletion."""
    if state is None or state["l"] is None:
        return False
    return state["t"] is None or state["l"] > state["t"]


def apply_event(state: State, event: Envelope) -> list[Change]:
    """Fold one validated envelope into ``state`` (in place) and return what visibly changed."""
    version = [event["timestamp"], event["eventId"]]
    tombstone = state["t"]
    if event.get("op") == OP_DELETE:
        if tombstone is not None and version <= tombstone:
            return []
        existed = exists(state)
        state["t"] = version
        versions = state["v"]
        values = state["p"]
        dropped = [n for n, v in versions.items() if v < version]
        for name in dropped:
            del versions[name]
            del values[name]
        if not existed:
            return []
        if not exists(state):
            return [EntityDeleted(event["timestamp"])]
        if not dropped:
            return []
        # A late tombstone older than the entity's newest event: it was deleted and recreated,
        # so subscribers see the deletion and then what the recreated entity holds.
        recreated: list[Change] = [EntityDeleted(event["timestamp"])]
        recreated.extend(PropertyChanged(n, values[n], versions[n][0]) for n in values)
        return recreated

    if tombstone is not None and version <= tombstone:
        return []
    existed = exists(state)
    if state["l"] is None or version > state["l"]:
        state["l"] = version
    values = state["p"]
    versions = state["v"]
    changes: list[Change] = []
    timestamp = event["timestamp"]
    for name, value in event["payload"]["properties"].items():
        current = versions.get(name)
        if current is not None and version <= current:
            continue
        versions[name] = version
        if current is None or not existed or values[name] != value or type(values[name]) is not type(value):
            changes.append(PropertyChanged(name, value, timestamp))
        values[name] = value
    return changes


def fold(events: list[Envelope], state: State | None = None) -> State:
    """The state after applying ``events`` in the given order to ``state`` (or to nothing)."""
    current = new_state() if state is None else state
    for event in events:
        apply_event(current, event)
    return current


def _same(a: Any, b: Any) -> bool:
    return bool(a == b and type(a) is type(b))


def diff_states(old: State | None, new: State | None, now_ms: int) -> list[Change]:
    """The visible changes that turn entity state ``old`` into ``new`` (when a replay replaces it).

    An entity that stops existing is deleted (at its tombstone's time, else at ``now_ms``); one
    that starts existing gets all its properties; otherwise properties that disappeared are
    removed and properties whose value differs are changed.
    """
    was, now = exists(old), exists(new)
    if not now:
        tombstone = None if new is None else new["t"]
        return [EntityDeleted(tombstone[0] if tombstone else now_ms)] if was else []
    assert new is not None
    before: dict[str, Any] = old["p"] if was and old is not None else {}
    changes: list[Change] = [PropertyRemoved(name) for name in before if name not in new["p"]]
    for name, value in new["p"].items():
        if name not in before or not _same(before[name], value):
            changes.append(PropertyChanged(name, value, new["v"][name][0]))
    return changes


def rfc3339_ms(unix_ms: int) -> str:
    """``unix_ms`` as RFC 3339 UTC with milliseconds, e.g. ``2026-02-23T10:30:45.123Z``."""
    seconds, millis = divmod(unix_ms, 1000)
    return f"{_rfc3339_seconds(seconds)}{millis:03d}Z"


@lru_cache(maxsize=4096)
def _rfc3339_seconds(unix_s: int) -> str:
    """The ``YYYY-MM-DDTHH:MM:SS.`` part; cached, since the events of a batch share few seconds."""
    return datetime.fromtimestamp(unix_s, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.")


def to_entity(entity_id: str, state: State | None) -> dict[str, Any] | None:
    """The API view ``{id, properties, lastUpdated}``, or None if the entity does not exist."""
    if state is None or not exists(state):
        return None
    return {"id": entity_id, "properties": state["p"], "lastUpdated": rfc3339_ms(state["l"][0])}
