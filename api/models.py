"""Pydantic models of the API contract: the OpenAPI document is generated from these."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel

from flux.model.envelope import EventIn  # the envelope's model lives with its rule (flux.model.events)
from flux.model.events import MAX_TIMESTAMP_MS
from flux.model.replay import OFFSETS_PATTERN, RFC3339_PATTERN


class BatchIn(BaseModel):
    """A batch: ``{"events": [...]}`` (a bare JSON array of events is accepted too)."""

    events: list[EventIn] = Field(min_length=1)


class PublishOut(BaseModel):
    """The answer to a single publish, sent after the broker acknowledged the event."""

    eventId: str
    stream: str


class BatchResult(BaseModel):
    """One input event's outcome, in input order."""

    eventId: str | None
    stream: str | None
    error: str | None


class BatchOut(BaseModel):
    """The answer to a batch publish, sent after the batch's transaction committed."""

    successful: int
    failed: int
    results: list[BatchResult]


class Entity(BaseModel):
    """The current state of an entity."""

    id: str
    properties: dict[str, Any]
    lastUpdated: str = Field(description="RFC 3339 UTC time of the newest event applied")


class StoredEvent(BaseModel):
    """An event as stored in history: the envelope as published, eventId and timestamp filled in."""

    model_config = ConfigDict(extra="allow")

    eventId: str
    stream: str
    source: str
    timestamp: int = Field(description="Unix epoch milliseconds")
    payload: dict[str, Any] = Field(description="entity_id and properties; a deletion ('op': 'delete') has none")


class DeleteOut(BaseModel):
    """The answer to a deletion: the tombstone event was acknowledged by the broker."""

    entity_id: str
    eventId: str


class BatchDeleteIn(BaseModel):
    """Exactly one filter."""

    model_config = ConfigDict(
        json_schema_extra={
            "oneOf": [
                {"required": [name], "properties": {name: {"type": kind}}}
                for name, kind in (("prefix", "string"), ("namespace", "string"), ("entity_ids", "array"))
            ]
        }
    )

    prefix: str | None = Field(default=None, min_length=1, description="Delete entities whose id starts with this")
    namespace: str | None = Field(
        default=None, min_length=1, pattern=r"^[^/]+$", description="Delete entities 'namespace/...'"
    )
    entity_ids: list[Annotated[str, Field(min_length=1)]] | None = Field(
        default=None, min_length=1, description="Delete these entities"
    )


class DeleteError(BaseModel):
    """Why one entity of a batch deletion was not deleted."""

    entity_id: str
    error: str


class BatchDeleteOut(BaseModel):
    """The answer to a batch deletion (all tombstones in one Kafka transaction)."""

    deleted: int
    failed: int
    errors: list[DeleteError]


class ErrorOut(BaseModel):
    """Every error answer."""

    error: str


class NamespaceIn(BaseModel):
    """A namespace to register."""

    name: str = Field(pattern=r"^[a-z0-9_-]{3,32}$", description="3-32 characters of a-z, 0-9, '_' and '-'")


class NamespaceCreated(BaseModel):
    """A registered namespace and its token: shown this once, stored only as a hash."""

    namespaceId: str
    name: str
    token: str


class NamespaceOut(BaseModel):
    """A namespace as anybody may see it."""

    namespaceId: str
    name: str
    createdAt: str = Field(description="RFC 3339 UTC time of registration")
    entityCount: int = Field(description="Entities whose id starts with 'name/'")


class NamespaceDeleted(BaseModel):
    """The answer to a namespace deletion."""

    namespaceId: str | None = Field(
        description="null when purge=true deleted the entities an earlier namespace of that name left behind"
    )
    name: str
    purged: bool
    entitiesDeleted: int = Field(description="Entities deleted (tombstones published) when purge=true")


class WebhookIn(BaseModel):
    """A webhook to register."""

    url: str = Field(
        min_length=1,
        max_length=2048,
        pattern=r"^[hH][tT][tT][pP][sS]?://",
        description="An http or https URL; its host must resolve to public addresses "
        "unless FLUX_WEBHOOK_ALLOW_PRIVATE=true",
    )
    entity_id: str = Field(
        min_length=1,
        max_length=1024,
        description="An entity id, a prefix pattern ending in '*' (acme/*), or '*' for every entity",
    )
    secret: str | None = Field(
        default=None, min_length=16, max_length=256, description="The signing secret; generated when absent"
    )


class HealthOut(BaseModel):
    """Liveness."""

    status: Literal["ok"]


class ReadyOut(BaseModel):
    """Readiness: broker reachable, table recovery done, and caught up with the log as of start."""

    status: Literal["ready", "not_ready"]
    broker: bool
    recovered: bool
    partitions: list[int]
    standbys: dict[str, int] = Field(
        description="Partitions this node keeps a standby copy of, with how many changelog records it is behind"
    )
    catching_up: dict[str, int] = Field(
        default_factory=dict,
        description="Served partitions still folding the records that were in their log when they were "
        "assigned to this node, with how many are left; the node is not ready until none is",
    )
    detail: str


Time = Annotated[
    Annotated[int, Field(ge=0, le=MAX_TIMESTAMP_MS)] | Annotated[str, Field(pattern=RFC3339_PATTERN)],
    Field(description="Unix epoch ms, or RFC 3339 with a zone (2026-02-23T10:30:00Z); not in the future"),
]
ToTime = Annotated[
    Time | None,
    Field(
        description="Stop at the last record received at or before this time: state rolls back to it "
        "(later events stay in the log and in history)"
    ),
]


class ReplayFromBeginning(BaseModel):
    """Replay every event the topic still has."""

    model_config = ConfigDict(extra="forbid")
    fromBeginning: Literal[True]
    toTimestamp: ToTime = None


class ReplayFromTimestamp(BaseModel):
    """Replay from the first record the log received at or after a time (Kafka record time)."""

    model_config = ConfigDict(extra="forbid")
    fromTimestamp: Time
    toTimestamp: ToTime = None


class ReplayFromOffsets(BaseModel):
    """Replay only some partitions (served by this node), each from an offset."""

    model_config = ConfigDict(extra="forbid")
    fromOffsets: (
        Annotated[dict[Annotated[str, Field(pattern=r"^[0-9]+$")], Annotated[int, Field(ge=0)]], Field(min_length=1)]
        | Annotated[str, Field(pattern=OFFSETS_PATTERN)]
    ) = Field(description='{"3": 1200} or "3:1200,4:0"')
    toTimestamp: ToTime = None


class ReplayIn(RootModel[ReplayFromBeginning | ReplayFromTimestamp | ReplayFromOffsets]):
    """What to replay: exactly one of the three starts, and optionally an end time (a rollback)."""


class ReplayPartition(BaseModel):
    """One partition of a replay job."""

    partition: int
    start: int = Field(description="First offset folded")
    position: int = Field(description="Offset reached")
    end: int = Field(description="Offset the job folds up to (moves with the live table until the switch)")


class ReplayReport(BaseModel):
    """What a finished replay did."""

    seconds: float
    foldSeconds: float | None = Field(description="Until the new generation first reached the live table")
    entities: int = Field(description="Entities existing after the switch")
    entitiesChanged: int = Field(description="Entities whose state the switch replaced (removed ones included)")
    entitiesRemoved: int = Field(description="Entities the new generation does not have")
    writesPausedMs: float = Field(description="How long live writes waited for the switch")


class ReplayJobOut(BaseModel):
    """A replay job."""

    jobId: str
    status: Literal["running", "catching-up", "switching", "done", "failed", "cancelled"]
    from_: Literal["beginning", "timestamp", "offsets"] = Field(alias="from")
    fromTimestamp: str | None = None
    fromOffsets: dict[str, int] | None = None
    toTimestamp: str | None = None
    startedAt: str
    finishedAt: str | None
    partitions: list[ReplayPartition]
    events: int = Field(description="Events folded into the new generation")
    eventsPerSecond: int
    percent: float
    etaSeconds: float | None
    error: str | None
    report: ReplayReport | None


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorOut, "description": "Malformed JSON or an invalid field (the message names it)"},
    413: {"model": ErrorOut, "description": "Body larger than the configured limit"},
    422: {"model": ErrorOut, "description": "Invalid query or path parameter"},
    503: {"model": ErrorOut, "description": "The broker did not acknowledge; nothing is promised"},
    504: {"model": ErrorOut, "description": "wait=true: accepted but not applied in time ('pending' lists eventIds)"},
}

AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "FLUX_AUTH_ENABLED=true: no valid bearer token"},
    403: {"model": ErrorOut, "description": "FLUX_AUTH_ENABLED=true: the token's namespace does not cover this"},
}

WRITE_ERRORS: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    **AUTH_ERRORS,
    429: {"model": ErrorOut, "description": "The namespace's events per minute are spent; see Retry-After"},
}

PUBLISH_ERRORS: dict[int | str, dict[str, Any]] = {
    **WRITE_ERRORS,
    413: {
        "model": ErrorOut,
        "description": "Body larger than the configured limit, or an event that alone would take its entity past "
        "FLUX_MAX_ENTITY_BYTES or FLUX_MAX_ENTITY_PROPERTIES",
    },
}

BEARER = "bearerAuth"
"""``openapi_extra`` of an operation that needs a bearer token when FLUX_AUTH_ENABLED=true."""


SCHEMA_REF = "#/components/schemas/{model}"


UNSUPPORTED_TYPE = {
    "description": "The body is not declared JSON (Content-Type application/json or application/*+json)",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}},
}


def json_body(schema: dict[str, Any]) -> dict[str, Any]:
    """``openapi_extra`` documenting a required JSON request body (the routes parse bodies themselves,
    :func:`api.body.read_json`) and the 415 answer to a body of another type."""
    return {
        "requestBody": {"required": True, "content": {"application/json": {"schema": schema}}},
        "responses": {"415": UNSUPPORTED_TYPE},
    }


def ref(model: str) -> dict[str, str]:
    """A JSON-schema reference to one of :data:`REQUEST_MODELS` in the OpenAPI components."""
    return {"$ref": SCHEMA_REF.format(model=model)}


# Request bodies are parsed by hand (fast, with per-field errors); these models document them.
REQUEST_MODELS: list[type[BaseModel]] = [EventIn, BatchIn, BatchDeleteIn, NamespaceIn, ReplayIn, WebhookIn]


def request_schemas() -> dict[str, Any]:
    """OpenAPI component schemas of the request models (and the models they use)."""
    schemas: dict[str, Any] = {}
    for model in REQUEST_MODELS:
        schema = model.model_json_schema(by_alias=True, ref_template=SCHEMA_REF)
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    return schemas


class ClusterNodeOut(BaseModel):
    """One node of the consumer group's current assignment."""

    url: str = Field(description="The node's advertised URL (FLUX_ADVERTISED_URL)")
    partitions: list[int] = Field(description="The partitions it serves")
    self: bool = Field(description="Whether this is the node that answered")


class ClusterOut(BaseModel):
    """The group's assignment as the answering node sees it."""

    node: str = Field(description="The URL of the node that answered")
    partitions: int = Field(description="Partitions of the events topic (FLUX_PARTITIONS)")
    nodes: list[ClusterNodeOut] = Field(description="The nodes serving partitions, by URL")
    unassigned: list[int] = Field(description="Partitions nobody serves now (a rebalance under way, or no node)")


class WebhookCreated(BaseModel):
    """A registered webhook and its signing secret: shown this once."""

    id: str
    url: str
    entity_id: str
    secret: str


class WebhookPause(BaseModel):
    """Why and since when a webhook is paused."""

    at: str = Field(description="RFC 3339 UTC time it was paused")
    reason: str


class WebhookOut(BaseModel):
    """A webhook and how its deliveries go (never its secret)."""

    id: str
    url: str
    entity_id: str
    createdAt: str
    namespace: str | None = Field(description="The namespace whose token registered it; null: the admin")
    status: Literal["active", "failing", "paused"] = Field(
        description="paused: no deliveries until resumed; failing: a node's deliveries fail (retried, not for long "
        "enough to pause yet); active: otherwise"
    )
    paused: WebhookPause | None
    failingSince: str | None = Field(description="When the current run of failures began (the earliest of the nodes)")
    lastError: str | None
    lastSuccess: str | None = Field(description="When a delivery last succeeded (the latest of the nodes)")


class DeliveryAttemptOut(BaseModel):
    """One delivery attempt."""

    delivery: str = Field(description="The X-Flux-Delivery of the delivery (the same for each of its attempts)")
    time: str
    attempt: int = Field(description="1 for the first try of a delivery")
    changes: int = Field(description="Messages the delivery carries")
    status: int | None = Field(description="The receiver's HTTP status; null: no answer (refused, timed out...)")
    error: str | None = Field(description="Why the attempt failed; null: delivered")
    durationMs: float
    node: str = Field(description="The node that made the attempt (FLUX_NODE_ID:FLUX_PORT)")


class DeliveriesOut(BaseModel):
    """A webhook's recent delivery attempts, newest first."""

    id: str
    status: Literal["active", "failing", "paused"]
    deliveries: list[DeliveryAttemptOut]
