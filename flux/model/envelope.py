"""The event envelope as a pydantic model: the published contract (OpenAPI), built from :mod:`flux.model.events`' rules.

:func:`flux.model.events.validate_event` stays the rule every event goes through (by hand, fast, one error
naming the field); :class:`EventIn` says the same in pydantic and JSON Schema, from the same limits
and constants, for the API's documentation. ``tests/unit/test_envelope_model.py`` generates
envelopes with hypothesis and checks that both accept exactly the same ones.

An envelope is an update (``payload.properties``, merged into the entity) or, with ``"op": "delete"``,
a deletion (no properties): :class:`UpsertEvent` or :class:`DeleteEvent`, told apart by ``op``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, Discriminator, Field, RootModel, Tag

from flux.model.events import DEFAULT_LIMITS, MAX_EVENT_ID_LENGTH, MAX_TIMESTAMP_MS, OP_DELETE, parse_timestamp

NO_NUL = r"^[^\x00]*$"


def _timestamp(value: object) -> int | None:
    """``validate_event``'s own reading: Unix ms as an integer (``1.0`` counts; booleans and strings do not)."""
    return None if value is None else parse_timestamp(value)


EntityId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=DEFAULT_LIMITS.entity_id_length,
        pattern=NO_NUL,
        description="Target entity; may contain '/', e.g. 'acme/sensor-01' (no NUL character)",
    ),
]
PropertyName = Annotated[str, Field(max_length=DEFAULT_LIMITS.property_key_length)]


class EventPayload(BaseModel):
    """What an event says about one entity."""

    entity_id: EntityId
    properties: dict[PropertyName, Any] = Field(
        max_length=DEFAULT_LIMITS.properties, description="Properties to merge into the entity; values are any JSON"
    )


class DeletePayload(BaseModel):
    """The entity a deletion removes."""

    entity_id: EntityId
    properties: None = Field(default=None, description="Absent (or null): a deletion carries no properties")


class EnvelopeFields(BaseModel):
    """The fields every envelope has, whatever its ``op``."""

    stream: str = Field(
        min_length=1, max_length=DEFAULT_LIMITS.stream_source_length, description="Logical stream, e.g. 'sensors'"
    )
    source: str = Field(
        min_length=1, max_length=DEFAULT_LIMITS.stream_source_length, description="Who published the event"
    )
    timestamp: Annotated[int | None, BeforeValidator(_timestamp)] = Field(
        default=None, ge=0, le=MAX_TIMESTAMP_MS, description="Unix epoch milliseconds; defaults to now"
    )
    eventId: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_EVENT_ID_LENGTH,
        description="Defaults to a fresh UUIDv7; re-sending an id is idempotent",
    )
    key: Any | None = Field(default=None, description="Optional ordering/grouping hint, kept with the event")
    schema_: Any | None = Field(default=None, alias="schema", description="Optional schema metadata, kept")


class UpsertEvent(EnvelopeFields):
    """An event that merges its properties into an entity (creating it)."""

    op: None = Field(default=None, description='Absent (or null); "delete" makes the envelope a deletion')
    payload: EventPayload


class DeleteEvent(EnvelopeFields):
    """An event that deletes an entity."""

    op: Literal["delete"] = Field(description="A deletion")
    payload: DeletePayload


def _kind(value: Any) -> str:
    """Which envelope ``value`` claims to be: ``delete`` when its ``op`` says so, else ``upsert``."""
    op = value.get("op") if isinstance(value, dict) else getattr(value, "op", None)
    return "delete" if op == OP_DELETE else "upsert"


class EventIn(
    RootModel[
        Annotated[
            Annotated[UpsertEvent, Tag("upsert")] | Annotated[DeleteEvent, Tag("delete")],
            Discriminator(_kind),
        ]
    ]
):
    """An event envelope as published: an update of an entity's properties, or with "op": "delete" a deletion."""
