"""The client's typed results: entities, publish and delete answers, stored events, namespaces,
replay jobs, readiness, and the change messages of a subscription.

Each is a frozen dataclass with snake_case fields, built from the API's JSON (camelCase, see
``api/models.py``) by its ``from_json``. Property values are any JSON, hence ``Any``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

FINISHED = ("done", "failed", "cancelled")  # a replay job's statuses after which nothing changes


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


@dataclass(frozen=True)
class Entity:
    """An entity's state: ``last_updated`` is the RFC 3339 UTC time of the newest event applied."""

    id: str
    properties: dict[str, Any]
    last_updated: str

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Entity:
        """From ``{"id", "properties", "lastUpdated"}``."""
        return cls(str(data["id"]), dict(data["properties"]), str(data["lastUpdated"]))


@dataclass(frozen=True)
class PublishResult:
    """A published event: the broker acknowledged it (or, with ``wait=True``, it is applied)."""

    event_id: str
    stream: str
    replayed: bool = False  # the answer to an earlier attempt with the same idempotency key

    @classmethod
    def from_json(cls, data: Mapping[str, Any], replayed: bool = False) -> PublishResult:
        """From ``{"eventId", "stream"}``."""
        return cls(str(data["eventId"]), str(data["stream"]), replayed)


@dataclass(frozen=True)
class BatchItem:
    """One input event's outcome, in input order: its eventId, or the reason it was refused."""

    event_id: str | None
    stream: str | None
    error: str | None

    @property
    def ok(self) -> bool:
        """Whether the event was published."""
        return self.error is None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> BatchItem:
        """From ``{"eventId", "stream", "error"}``."""
        return cls(_str_or_none(data.get("eventId")), _str_or_none(data.get("stream")), _str_or_none(data.get("error")))


@dataclass(frozen=True)
class BatchResult:
    """A batch's outcome over all its chunks: counts, and one :class:`BatchItem` per input event."""

    successful: int
    failed: int
    results: list[BatchItem]


@dataclass(frozen=True)
class DeleteResult:
    """A deleted entity and its tombstone's eventId (None when a retry found the entity already gone:
    an earlier attempt, whose answer was lost, deleted it)."""

    entity_id: str
    event_id: str | None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DeleteResult:
        """From ``{"entity_id", "eventId"}``."""
        return cls(str(data["entity_id"]), _str_or_none(data.get("eventId")))


@dataclass(frozen=True)
class DeleteError:
    """Why one entity of a batch deletion was not deleted."""

    entity_id: str
    error: str


@dataclass(frozen=True)
class BatchDeleteResult:
    """The answer to a batch deletion."""

    deleted: int
    failed: int
    errors: list[DeleteError]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> BatchDeleteResult:
        """From ``{"deleted", "failed", "errors": [{"entity_id", "error"}]}``."""
        errors = [DeleteError(str(e["entity_id"]), str(e["error"])) for e in data.get("errors", [])]
        return cls(int(data["deleted"]), int(data["failed"]), errors)


@dataclass(frozen=True)
class StoredEvent:
    """An event as history keeps it: the envelope as published, eventId and timestamp (Unix ms) filled in.
    A deletion has ``op == "delete"`` and ``properties`` None; ``envelope`` is the whole JSON."""

    event_id: str
    stream: str
    source: str
    timestamp: int
    entity_id: str
    properties: dict[str, Any] | None
    op: str | None
    envelope: dict[str, Any] = field(repr=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StoredEvent:
        """From a stored envelope."""
        payload = data.get("payload") or {}
        properties = payload.get("properties")
        return cls(
            event_id=str(data["eventId"]),
            stream=str(data["stream"]),
            source=str(data["source"]),
            timestamp=int(data["timestamp"]),
            entity_id=str(payload.get("entity_id", "")),
            properties=None if properties is None else dict(properties),
            op=_str_or_none(data.get("op")),
            envelope=dict(data),
        )


@dataclass(frozen=True)
class Namespace:
    """A namespace as anybody may see it (never its token)."""

    namespace_id: str
    name: str
    created_at: str
    entity_count: int

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Namespace:
        """From ``{"namespaceId", "name", "createdAt", "entityCount"}``."""
        return cls(str(data["namespaceId"]), str(data["name"]), str(data["createdAt"]), int(data["entityCount"]))


@dataclass(frozen=True)
class NamespaceToken:
    """A registered namespace, or one whose token was rotated, with the token: shown this once only."""

    namespace_id: str
    name: str
    token: str = field(repr=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> NamespaceToken:
        """From ``{"namespaceId", "name", "token"}``."""
        return cls(str(data["namespaceId"]), str(data["name"]), str(data["token"]))


@dataclass(frozen=True)
class NamespaceDeleted:
    """A removed namespace; with ``purged``, ``entities_deleted`` tombstones were published."""

    namespace_id: str
    name: str
    purged: bool
    entities_deleted: int

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> NamespaceDeleted:
        """From ``{"namespaceId", "name", "purged", "entitiesDeleted"}``."""
        return cls(str(data["namespaceId"]), str(data["name"]), bool(data["purged"]), int(data["entitiesDeleted"]))


@dataclass(frozen=True)
class ReplayPartition:
    """One partition of a replay job: first offset folded, offset reached, offset to fold up to."""

    partition: int
    start: int
    position: int
    end: int


@dataclass(frozen=True)
class ReplayReport:
    """What a finished replay did."""

    seconds: float
    fold_seconds: float | None
    entities: int
    entities_changed: int
    entities_removed: int
    writes_paused_ms: float

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ReplayReport:
        """From the job's ``report``."""
        fold = data.get("foldSeconds")
        return cls(
            float(data["seconds"]),
            None if fold is None else float(fold),
            int(data["entities"]),
            int(data["entitiesChanged"]),
            int(data["entitiesRemoved"]),
            float(data["writesPausedMs"]),
        )


@dataclass(frozen=True)
class ReplayJob:
    """A replay job (``status``: running, catching-up, switching, done, failed or cancelled)."""

    job_id: str
    status: str
    start: str  # what it replays from: beginning, timestamp or offsets
    started_at: str
    finished_at: str | None
    partitions: list[ReplayPartition]
    events: int
    events_per_second: int
    percent: float
    eta_seconds: float | None
    error: str | None
    report: ReplayReport | None

    @property
    def finished(self) -> bool:
        """Whether the job has ended (done, failed or cancelled)."""
        return self.status in FINISHED

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ReplayJob:
        """From the API's job (``GET /api/admin/replay/{id}``)."""
        eta = data.get("etaSeconds")
        report = data.get("report")
        return cls(
            job_id=str(data["jobId"]),
            status=str(data["status"]),
            start=str(data["from"]),
            started_at=str(data["startedAt"]),
            finished_at=_str_or_none(data.get("finishedAt")),
            partitions=[
                ReplayPartition(int(p["partition"]), int(p["start"]), int(p["position"]), int(p["end"]))
                for p in data.get("partitions", [])
            ],
            events=int(data["events"]),
            events_per_second=int(data["eventsPerSecond"]),
            percent=float(data["percent"]),
            eta_seconds=None if eta is None else float(eta),
            error=_str_or_none(data.get("error")),
            report=None if report is None else ReplayReport.from_json(report),
        )


@dataclass(frozen=True)
class Readiness:
    """``/ready``: ready when the broker answers and the table's recovery is done."""

    ready: bool
    broker: bool
    recovered: bool
    partitions: list[int]
    standbys: dict[int, int]
    detail: str

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Readiness:
        """From the ``/ready`` answer (200 or 503)."""
        return cls(
            data.get("status") == "ready",
            bool(data.get("broker")),
            bool(data.get("recovered")),
            [int(p) for p in data.get("partitions", [])],
            {int(p): int(behind) for p, behind in (data.get("standbys") or {}).items()},
            str(data.get("detail", "")),
        )


# -- change messages of a subscription (docs/websocket.md) -------------------------------------


@dataclass(frozen=True)
class StateUpdate:
    """One property's new value (format ``property``); ``timestamp`` is the setting event's RFC 3339 time."""

    entity_id: str
    property: str
    value: Any
    timestamp: str


@dataclass(frozen=True)
class EntityUpdate:
    """The whole entity after a change (format ``entity``)."""

    entity: Entity


@dataclass(frozen=True)
class EntityDeleted:
    """An entity was deleted."""

    entity_id: str
    timestamp: str


@dataclass(frozen=True)
class PropertyRemoved:
    """A replay switched in a state that lacks this property (format ``property``)."""

    entity_id: str
    property: str


@dataclass(frozen=True)
class Snapshot:
    """An entity's state when the subscription (re)started; ``resync`` marks the snapshot sent after a
    reconnect, which stands for every change missed while the connection was down."""

    entity: Entity
    resync: bool


@dataclass(frozen=True)
class SnapshotComplete:
    """Every entity of ``pattern``'s snapshot has been given; an entity seen before a ``resync``
    snapshot but absent from it was deleted meanwhile."""

    pattern: str
    count: int
    resync: bool


@dataclass(frozen=True)
class Reconnected:
    """The connection dropped and is back, subscribed again: the ``resync`` snapshots follow (unless
    resync was turned off). ``reason`` says why it dropped; ``attempts`` counts the connection tries."""

    reason: str
    attempts: int


@dataclass(frozen=True)
class MetricsUpdate:
    """The node's periodic totals (only when the subscription asks for them); ``data`` is the message."""

    data: dict[str, Any]


Change = (
    StateUpdate
    | EntityUpdate
    | EntityDeleted
    | PropertyRemoved
    | Snapshot
    | SnapshotComplete
    | Reconnected
    | MetricsUpdate
)
"""Whatever a subscription yields."""
