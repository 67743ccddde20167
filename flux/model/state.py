"""The narrow interface through which the HTTP API reads state, whoever stores it."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from flux.model.history import AtPage, HistoryQuery


class PartitionUnavailable(RuntimeError):
    """The partition holding the answer is not served by this node right now (rebalance, recovery)."""

    def __init__(self, partition: int) -> None:
        where = "the table" if partition < 0 else f"partition {partition}"
        super().__init__(f"{where} is not being served by this node right now (recovery or rebalance)")
        self.partition = partition


class StoredEntity(NamedTuple):
    """An existing entity as stored: its API view, its newest event time, its feed offset.

    ``last_timestamp`` is the greatest event timestamp among its properties (a deletion must be
    newer to remove them all); ``applied`` is the events-topic offset of the batch that last wrote
    it (see :mod:`flux.model.changes`), -1 if unknown.
    """

    entity: dict[str, Any]
    last_timestamp: int
    applied: int


@dataclass
class Readiness:
    """Whether this node can answer reads: broker reachable, table recovery done, caught up with the log."""

    ready: bool
    broker: bool
    recovered: bool
    partitions: list[int] = field(default_factory=list)
    detail: str = ""
    standbys: dict[int, int] = field(default_factory=dict)  # partition -> changelog records behind
    catching_up: dict[int, int] = field(default_factory=dict)  # partition -> events-topic records left to fold


@dataclass
class TableStatus:
    """What a node's reducer process says of its table to its HTTP processes (see :mod:`api.workers.control`)."""

    recovered: bool = False
    active: list[int] = field(default_factory=list)
    owners: dict[str, list[int]] = field(default_factory=dict)
    paths: dict[int, str] = field(default_factory=dict)
    rebuilding: dict[int, tuple[int, int]] = field(default_factory=dict)
    readiness: Readiness = field(default_factory=lambda: Readiness(False, False, False, detail="starting"))
    entities: int = 0
    generation: int = 0  # bumped by every rebalance of the reducer: stores may have been reopened


class HistoryReader(Protocol):
    """Reads of the history index: stored events, and entities as they were at a past time."""

    def events(self, query: HistoryQuery) -> tuple[list[dict[str, Any]], bytes | None]:
        """Up to ``query.limit`` events and the cursor of the next page (None: no more)."""
        ...

    async def entity_at(self, entity_id: str, at: int) -> dict[str, Any] | None:
        """The entity as it was at ``at`` (Unix ms), or None if it did not exist then: its events up to
        ``at`` folded one by one as they are read (never all in memory), handing the event loop back
        now and then on a long history."""
        ...

    def page(
        self, query: HistoryQuery, partitions: Sequence[int] | None = None
    ) -> tuple[list[tuple[bytes, dict[str, Any]]], bytes | None]:
        """Up to ``query.limit`` (history key, event) pairs of ``partitions`` (default: every one
        served here) and the last key examined when more may follow (None: no more)."""
        ...

    async def page_at(
        self,
        prefix: str,
        at: int,
        limit: int,
        budget: int,
        partitions: Sequence[int] | None = None,
        after: str | None = None,
    ) -> AtPage:
        """Up to ``limit`` entities with ids starting with ``prefix`` (after ``after``) as they were at
        ``at``, in id order, over ``partitions`` (default: served here), folding about ``budget``
        history events at most (:func:`flux.model.history.page_at`), handing the event loop back now
        and then."""
        ...


class StateReader(Protocol):
    """Reads of the entity table, in entity-id order."""

    def owner_url(self, partition: int) -> str | None:
        """The URL of the node serving ``partition`` now, as the group assigned it (None: nobody)."""
        ...

    def owners(self) -> dict[str, list[int]]:
        """The nodes of the group's current assignment, by URL, with the partitions each serves."""
        ...

    def get(self, entity_id: str) -> dict[str, Any] | None:
        """The entity ``{id, properties, lastUpdated}``, or None when it does not exist."""
        ...

    def lookup(self, entity_id: str) -> StoredEntity | None:
        """The entity with its newest event time and feed offset, or None when it does not exist."""
        ...

    def active_partitions(self) -> list[int]:
        """The partitions this node serves now (recovering ones included)."""
        ...

    def recovered(self) -> bool:
        """Whether the served partitions are recovered and no rebalance is under way."""
        ...

    def iter_prefix(
        self, prefix: str, partitions: Sequence[int] | None = None, after: str | None = None
    ) -> Iterator[StoredEntity]:
        """Existing entities whose id starts with ``prefix`` (and sorts after ``after``), in id
        order (lazily), over ``partitions`` (default: every one served here)."""
        ...

    def applied_offset(self, partition: int) -> int:
        """The events-topic offset up to which this node wrote ``partition``'s state (-1: none yet)."""
        ...

    def shown_offset(self, partition: int) -> int:
        """The newest applied offset of ``partition`` any process of this node may have shown a
        client (a read, a ``?wait=true`` answer, a WebSocket message); -1: none. A new WebSocket
        subscription takes changes up to there as old news."""
        ...

    async def settle(self, partition: int) -> None:
        """Return once reads of ``partition`` reflect what was folded when called, or soon (a
        reader in another process than the reducer catches up; reads are correct without it,
        but may then cost a synchronous catch-up)."""
        ...

    def count_namespace(self, namespace: str, partitions: Sequence[int] | None = None) -> int:
        """How many existing entities of ``partitions`` (default: served here) have ids
        ``namespace/...`` (kept as running counts)."""
        ...

    def count(self) -> int:
        """How many entities exist (an estimate is not allowed: used for metrics and totals)."""
        ...

    async def readiness(self) -> Readiness:
        """Whether reads are served from a recovered, connected table."""
        ...
