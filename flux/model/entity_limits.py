"""The caps on one entity's stored state (``FLUX_MAX_ENTITY_BYTES``, ``FLUX_MAX_ENTITY_PROPERTIES``). Pure.

An entity's state goes to the table's changelog as one Kafka record, so it must stay well under
the changelog topic's ``max.message.bytes``: a record the broker refuses stops the node. The rule,
applied by every fold (the reducer agent, a replay's new generation) in the events topic's order:

- An event that sets properties is **not applied** when, applied, it would leave the entity's
  state larger than ``bytes`` (its JSON as stored, without the ``o`` stamp) or with more than
  ``properties`` properties, unless it leaves the state no larger than before on that count (an
  entity over a cap lowered since still takes updates that do not grow it). The reducer sends
  such an event to the dead-letter topic with the reason.
- A deletion is always applied: it grows a state by one version at most, and it is how an entity
  makes room.

The decision depends only on the state and the event, so the same log folds to the same state. To
keep the fold cheap, callers carry an upper bound of the state's encoded size
(:func:`apply_within`): an event whose worst-case growth keeps that bound under the cap is applied
without measuring anything; only near the cap is the state encoded to measure it exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from flux.model.events import OP_DELETE, Envelope
from flux.model.reducer import Change, State, apply_event, new_state


@dataclass(frozen=True)
class EntityLimits:
    """The caps of one entity's state: encoded bytes and properties."""

    bytes: int = 1_048_576
    properties: int = 10_000


DEFAULT_ENTITY_LIMITS = EntityLimits()


class EntityTooLarge(ValueError):
    """An event that would take its entity past a cap; the message says which and by how much."""


def state_size(state: State) -> int:
    """The exact size in bytes of ``state`` as stored, without its ``o`` stamp."""
    return len(orjson.dumps({"p": state["p"], "v": state["v"], "l": state["l"], "t": state["t"]}))


EMPTY_SIZE = state_size(new_state())


def _version_size(event: Envelope) -> int:
    """At most the length of ``[timestamp,"eventId"]``: timestamps have at most 15 digits
    (:data:`flux.model.events.MAX_TIMESTAMP_MS`); an eventId JSON escapes nothing of is its length
    plus quotes, any other at most 6 bytes a character (``\\u001f``)."""
    event_id: str = event["eventId"]
    plain = event_id.isascii() and event_id.isprintable() and '"' not in event_id and "\\" not in event_id
    return (len(event_id) if plain else 6 * len(event_id)) + 20


def growth_bound(event: Envelope) -> int:
    """At most how many bytes applying ``event`` can add to any state's encoding.

    Each property adds at most ``"name":value,`` to ``p`` and ``"name":version,`` to ``v`` (both
    bounded by the properties' own encoding), and ``l`` or ``t`` may go from ``null`` to a version.
    """
    version = _version_size(event)
    if event.get("op") == OP_DELETE:
        return version
    properties = event["payload"]["properties"]
    if not properties:
        return version
    return 2 * len(orjson.dumps(properties)) + len(properties) * (version + 2) + version


def _refusal(event: Envelope, limits: EntityLimits, size: int, count: int) -> str:
    entity_id = event["payload"]["entity_id"]
    if count > limits.properties:
        return (
            f"entity {entity_id!r} would have {count:,} properties; "
            f"the limit is {limits.properties:,} (FLUX_MAX_ENTITY_PROPERTIES)"
        )
    return f"entity {entity_id!r} would take {size:,} bytes; the limit is {limits.bytes:,} (FLUX_MAX_ENTITY_BYTES)"


def apply_within(state: State, event: Envelope, limits: EntityLimits, size: int) -> tuple[list[Change], int]:
    """Apply ``event`` to ``state`` (in place) if the caps allow it; returns its changes and the new size bound.

    ``size`` is an upper bound of ``state_size(state)`` (the length of its stored form will do);
    the returned bound holds for the state after. Raises :class:`EntityTooLarge`, with ``state``
    unchanged, when the rule of the module docstring refuses the event.
    """
    growth = growth_bound(event)
    if event.get("op") == OP_DELETE:
        return apply_event(state, event), size + growth
    added = len(event["payload"]["properties"])
    before_count = len(state["p"])
    if size + growth <= limits.bytes and before_count + added <= limits.properties:
        return apply_event(state, event), size + growth
    before = state_size(state)  # near a cap: measure
    if before + growth <= limits.bytes and before_count + added <= limits.properties:
        return apply_event(state, event), before + growth
    trial: State = {**state, "p": dict(state["p"]), "v": dict(state["v"])}
    changes = apply_event(trial, event)
    after, count = state_size(trial), len(trial["p"])
    bytes_ok = after <= limits.bytes or after <= before
    properties_ok = count <= limits.properties or count <= before_count
    if not (bytes_ok and properties_ok):
        raise EntityTooLarge(_refusal(event, limits, after if not bytes_ok else 0, count if not properties_ok else 0))
    state.update(trial)
    return changes, after


def check_alone(event: Envelope, limits: EntityLimits) -> None:
    """Raise :class:`EntityTooLarge` if ``event`` alone, on a new entity, breaks a cap.

    Such an event could only be applied to an entity holding newer values for all its properties,
    so the API refuses it at publish rather than send it to the dead-letter topic later.
    """
    if event.get("op") == OP_DELETE:
        return
    properties: dict[str, Any] = event["payload"]["properties"]
    if len(properties) > limits.properties:
        raise EntityTooLarge(_refusal(event, limits, 0, len(properties)))
    if EMPTY_SIZE + growth_bound(event) <= limits.bytes:
        return
    state = new_state()
    apply_event(state, event)
    size = state_size(state)
    if size > limits.bytes:
        raise EntityTooLarge(_refusal(event, limits, size, 0))
