"""An in-memory Flux node for the API tier: the app of :func:`api.app.create_app` on ports that keep
everything in the process, so the HTTP and WebSocket routes can be exercised without Kafka or Faust.

A publish is acknowledged at once and folded at once, as the reducer agent would fold it
(:mod:`agents.reducer_agent`): the events of one call land as one record per partition
(:func:`flux.model.partitioning.partition_for`, offsets counted per partition), an eventId an entity
already has is applied and stored once, each event is merged with the pure reducer
(:func:`flux.model.reducer.apply_event`) and kept in a history index under its real key
(:func:`flux.model.history.history_key`); then, per partition, the applied offset advances
(:class:`api.live.applied.AppliedOffsets`, what ``?wait=true`` waits on) and the WebSocket hub gets
the :class:`flux.model.changes.ChangeRecord` the change relay would have read. The namespace registry and
the idempotency keys are Flux's own classes whose topic write is folded locally instead.

Test levers: :attr:`MemoryPublisher.failure` (the broker does not acknowledge: 503),
:meth:`MemoryPublisher.fail` (only the next few calls do, written or not),
:meth:`MemoryPublisher.hold` / :meth:`MemoryPublisher.release` (published, not yet applied: the 504
of ``?wait=true``), :attr:`MemoryTable.served`, :attr:`MemoryTable.recovering` and
:attr:`MemoryTable.broker` (partitions nobody serves, recovery, an unreachable broker: 503).

Deliberately not modelled: Kafka records (no packing, no transaction markers, no dead letters,
no misplaced events: the API validates before publishing), other nodes (this node serves every
partition unless a test takes some away, so nothing is forwarded or gathered over the network),
the history scan budget (:data:`agents.history_store.SCAN_BUDGET`), the history rebuild, the
metrics ticker (not part of the app), and replays (:class:`MemoryReplays` keeps jobs, runs none).
"""

from __future__ import annotations

import bisect
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import httpx
import orjson
from fastapi import FastAPI
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from api.app import app_node, create_app
from api.live.applied import AppliedOffsets
from api.live.hub import Hub
from flux.config import Settings
from flux.kafka.compacted_log import CompactedLog
from flux.kafka.idempotency import IdempotencyLog
from flux.kafka.namespace_log import NamespaceLog
from flux.kafka.publisher import Offsets, PublishFailed
from flux.kafka.webhook_log import WebhookLog
from flux.metrics import Metrics
from flux.model.changes import ChangeRecord, EntityChange, encode_ops
from flux.model.events import Envelope, entity_of
from flux.model.history import (
    HISTORY_PREFIX,
    AtPage,
    HistoryQuery,
    history_key,
    page_at,
    split_history_key,
    time_key,
)
from flux.model.partitioning import partition_for
from flux.model.reducer import Change, State, apply_event, exists, fold, new_state, to_entity
from flux.model.replay import CANCELLED, FINISHED, ReplayBusy, ReplayJob, ReplayRange
from flux.model.state import PartitionUnavailable, Readiness, StoredEntity

BASE_URL = "http://flux"


class _Given(Settings):
    """Settings from the constructor's arguments only: the environment of the test run never counts."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


def node_settings(**overrides: Any) -> Settings:
    """Settings of a test node: 4 partitions, 64 KiB events, 50 deletions a request, no wait for
    partitions on the move (a partition nobody serves is 503 at once), then ``overrides``."""
    given: dict[str, Any] = {
        "partitions": 4,
        "advertised_url": BASE_URL,
        "rebalance_wait_s": 0.0,
        "max_event_bytes": 65_536,
        "delete_batch_limit": 50,
        **overrides,
    }
    return _Given(**given)


def _detached(value: Any) -> Any:
    """A copy of a JSON value, as a read from the store decodes one: answers never share state."""
    return orjson.loads(orjson.dumps(value))


class MemoryTable:
    """The entity table and the history index of one node, in memory; implements
    :class:`flux.model.state.StateReader` and :class:`flux.model.state.HistoryReader` as
    :mod:`agents.entity_store` and :mod:`agents.history_store` answer them."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self._partitions = settings.partitions
        self._url = settings.node_url()
        self._metrics = metrics
        self.served: set[int] = set(range(settings.partitions))  # the partitions this node serves
        self.recovering = False  # table recovery or a rebalance under way: nothing is served
        self.broker = True  # whether the broker answers (for /ready)
        self._states: dict[str, State] = {}  # every entity an event touched, existing or not
        self._seen: set[tuple[str, str]] = set()  # (entity id, eventId) applied
        self._history: dict[bytes, Envelope] = {}
        self._keys: list[bytes] = []  # the history keys, sorted
        self._applied: dict[int, int] = {}
        self._events: dict[int, int] = {}

    # -- the fold (what the reducer agent does with one record) ------------------------------
    def fold(self, partition: int, envelopes: list[Envelope], applied: int) -> ChangeRecord:
        """Apply the events of one record of ``partition`` that ends at offset ``applied``; returns
        the change-feed record the reducer would write for it."""
        touched: dict[str, list[Change]] = {}
        before: dict[str, int | None] = {}  # lastUpdated before the record, per touched entity
        sources: set[str] = set()
        folded = 0
        for envelope in envelopes:
            entity_id = entity_of(envelope)
            mark = (entity_id, envelope["eventId"])
            if mark in self._seen:
                continue  # a re-sent event: applied and stored once
            self._seen.add(mark)
            key = history_key(entity_id, envelope["timestamp"], envelope["eventId"])
            self._history[key] = _detached(envelope)
            bisect.insort(self._keys, key)
            state = self._states.setdefault(entity_id, new_state())
            if entity_id not in touched:
                before[entity_id] = state["l"][0] if exists(state) else None
            touched.setdefault(entity_id, []).extend(apply_event(state, envelope))
            sources.add(envelope["source"])
            folded += 1
        changes = []
        for entity_id, changed in touched.items():
            state = self._states[entity_id]
            state["o"] = applied  # the stamp of the batch that last wrote the entity
            if changed or (state["l"][0] if exists(state) else None) != before[entity_id]:  # as the reducer
                entity = _detached(to_entity(entity_id, state))
                changes.append(EntityChange(entity_id, applied, encode_ops(changed), entity))
        self._applied[partition] = max(applied, self._applied.get(partition, -1))
        self._events[partition] = self._events.get(partition, 0) + folded
        self._metrics.applied(folded)
        self._metrics.duplicates(len(envelopes) - folded)
        entities = sum(1 for entity_id in self._ids([partition]) if exists(self._states[entity_id]))
        return ChangeRecord(partition, applied, self._events[partition], entities, sorted(sources), changes)

    # -- serving ---------------------------------------------------------------------------
    def _serving(self, partitions: Sequence[int] | None) -> list[int]:
        """``partitions`` (default: every one served), or :class:`PartitionUnavailable`."""
        if partitions is None:
            if self.recovering:
                raise PartitionUnavailable(-1)
            return self.active_partitions()
        for partition in partitions:
            if self.recovering or partition not in self.served:
                raise PartitionUnavailable(partition)
        return list(partitions)

    def _ids(self, partitions: Sequence[int], prefix: str = "", after: str | None = None) -> list[str]:
        """Ids of the table in ``partitions`` starting with ``prefix`` (after ``after``), in id order."""
        wanted = set(partitions)
        return sorted(
            entity_id
            for entity_id in self._states
            if entity_id.startswith(prefix)
            and (after is None or entity_id > after)
            and partition_for(entity_id, self._partitions) in wanted
        )

    # -- StateReader -----------------------------------------------------------------------
    def owner_url(self, partition: int) -> str | None:
        """This node for a partition it serves, else nobody."""
        return self._url if partition in self.served else None

    def owners(self) -> dict[str, list[int]]:
        """This node with the partitions it serves."""
        return {self._url: self.active_partitions()} if self.served else {}

    def get(self, entity_id: str) -> dict[str, Any] | None:
        """The entity, or None."""
        found = self.lookup(entity_id)
        return None if found is None else found.entity

    def lookup(self, entity_id: str) -> StoredEntity | None:
        """The entity with its newest event time and feed offset, or None."""
        if "\0" in entity_id:
            return None
        self._serving([partition_for(entity_id, self._partitions)])
        state = self._states.get(entity_id)
        if state is None or not exists(state):
            return None
        return StoredEntity(_detached(to_entity(entity_id, state)), state["l"][0], state.get("o", -1))

    def active_partitions(self) -> list[int]:
        """The partitions served here."""
        return sorted(self.served)

    def recovered(self) -> bool:
        """Whether the table is recovered."""
        return not self.recovering

    def iter_prefix(
        self, prefix: str, partitions: Sequence[int] | None = None, after: str | None = None
    ) -> Iterator[StoredEntity]:
        """Existing entities starting with ``prefix`` (after ``after``), in id order."""
        for entity_id in self._ids(self._serving(partitions), prefix, after):
            found = self.lookup(entity_id)
            if found is not None:
                yield found

    def applied_offset(self, partition: int) -> int:
        """The offset ``partition`` is folded up to (-1: nothing yet)."""
        return self._applied.get(partition, -1)

    def count_namespace(self, namespace: str, partitions: Sequence[int] | None = None) -> int:
        """Existing entities ``namespace/...`` of ``partitions``."""
        ids = self._ids(self._serving(partitions), f"{namespace}/")
        return sum(1 for entity_id in ids if exists(self._states[entity_id]))

    def count(self) -> int:
        """Existing entities of the served partitions."""
        return sum(1 for entity_id in self._ids(self.active_partitions()) if exists(self._states[entity_id]))

    def shown_offset(self, partition: int) -> int:
        """Reads show everything folded: the applied offset."""
        return self.applied_offset(partition)

    async def settle(self, partition: int) -> None:
        """Nothing to wait for: writes are visible at once."""

    async def readiness(self) -> Readiness:
        """Ready when the broker answers and the table is recovered."""
        detail = "" if not self.recovering else "table recovery or rebalance in progress"
        if not self.broker:
            detail = "Kafka broker not reachable"
        partitions = [] if self.recovering else self.active_partitions()
        return Readiness(self.broker and not self.recovering, self.broker, not self.recovering, partitions, detail)

    # -- HistoryReader ---------------------------------------------------------------------
    def events(self, query: HistoryQuery) -> tuple[list[dict[str, Any]], bytes | None]:
        """Up to ``query.limit`` events and the cursor of the next page (None: no more)."""
        page, last = self.page(query)
        return [event for _, event in page], last

    def page(
        self, query: HistoryQuery, partitions: Sequence[int] | None = None
    ) -> tuple[list[tuple[bytes, dict[str, Any]]], bytes | None]:
        """Up to ``query.limit`` (history key, event) pairs and the last key when more follow."""
        if "\0" in (query.entity or "") or "\0" in (query.prefix or ""):
            return [], None
        if query.entity is not None:
            wanted = self._serving([partition_for(query.entity, self._partitions)])
            low, high = time_key(query.entity, query.since), time_key(query.entity, query.until + 1)
        else:
            wanted = self._serving(partitions)
            low = HISTORY_PREFIX + (query.prefix or "").encode()
            high = low + b"\xff"
        keys = self._keys[bisect.bisect_left(self._keys, low) : bisect.bisect_left(self._keys, high)]
        keys = [k for k in keys if partition_for(split_history_key(k)[0], self._partitions) in wanted]
        if query.descending:
            keys = [k for k in reversed(keys) if query.after is None or k < query.after]
        else:
            keys = [k for k in keys if query.after is None or k > query.after]
        page: list[tuple[bytes, dict[str, Any]]] = []
        for index, key in enumerate(keys):
            _, timestamp, _ = split_history_key(key)
            event = self._history[key]
            if not query.since <= timestamp <= query.until:
                continue
            if query.streams is not None and event.get("stream") not in query.streams:
                continue
            if query.sources is not None and event.get("source") not in query.sources:
                continue
            page.append((key, _detached(event)))
            if len(page) == query.limit:
                return page, key if index + 1 < len(keys) else None
        return page, None

    async def entity_at(self, entity_id: str, at: int) -> dict[str, Any] | None:
        """The fold of the entity's events with timestamp <= ``at``; None if it did not exist then."""
        entity, _ = self._fold_at(entity_id, at)
        return entity

    def _fold_at(self, entity_id: str, at: int) -> tuple[dict[str, Any] | None, int]:
        """(the entity as it was at ``at`` or None, events folded)."""
        if "\0" in entity_id:
            return None, 0
        self._serving([partition_for(entity_id, self._partitions)])
        low, high = time_key(entity_id, 0), time_key(entity_id, at + 1)
        keys = self._keys[bisect.bisect_left(self._keys, low) : bisect.bisect_left(self._keys, high)]
        events = [self._history[key] for key in keys]
        return _detached(to_entity(entity_id, fold(events) if events else None)), len(events)

    async def page_at(
        self,
        prefix: str,
        at: int,
        limit: int,
        budget: int,
        partitions: Sequence[int] | None = None,
        after: str | None = None,
    ) -> AtPage:
        """Up to ``limit`` entities starting with ``prefix`` as they were at ``at``, within ``budget``."""

        async def fold_at(entity_id: str) -> tuple[dict[str, Any] | None, int]:
            return self._fold_at(entity_id, at)

        return await page_at(self._ids(self._serving(partitions), prefix, after), fold_at, limit, budget)


Fold = Callable[[int, list[Envelope], int], None]  # (partition, events of one record, offset after it)


class MemoryPublisher:
    """Acknowledges at once; the events of a call land as one record per partition and are folded
    at once (or, while :meth:`hold` lasts, when :meth:`release` comes)."""

    def __init__(self, partitions: int, fold: Fold) -> None:
        self._partitions = partitions
        self._fold = fold
        self._ends: dict[int, int] = {}  # the next offset of each partition
        self._held: list[tuple[int, list[Envelope], int]] | None = None
        self.failure: PublishFailed | None = None  # raised by every call while set
        self._failures: list[bool] = []  # the next calls that fail: whether each writes its events first
        self.published: list[Envelope] = []  # every event acknowledged, in order

    async def publish(self, envelope: Envelope) -> Offsets:
        """Write one event."""
        return self._write([envelope])

    async def publish_batch(self, envelopes: list[Envelope]) -> Offsets:
        """Write a batch (nothing for an empty one)."""
        return self._write(envelopes) if envelopes else {}

    def fail(self, times: int, written: bool = False) -> None:
        """The next ``times`` calls raise :class:`PublishFailed` (503); with ``written`` each writes (and
        folds) its events first, as when the broker took them but its acknowledgement was lost."""
        self._failures = [written] * times

    def _write(self, envelopes: list[Envelope]) -> Offsets:
        if self.failure is not None:
            raise self.failure
        if self._failures:
            written = self._failures.pop(0)
            if written:
                self._failures, pending = [], self._failures  # write once, without failing again
                self._write(envelopes)
                self._failures = pending
            raise PublishFailed("the broker did not acknowledge in time (test)")
        by_partition: dict[int, list[Envelope]] = {}
        for envelope in envelopes:
            by_partition.setdefault(partition_for(entity_of(envelope), self._partitions), []).append(envelope)
        offsets: Offsets = {}
        for partition, group in by_partition.items():
            offset = self._ends.get(partition, 0)
            self._ends[partition] = offset + 1
            offsets[partition] = offset
            if self._held is None:
                self._fold(partition, group, offset + 1)
            else:
                self._held.append((partition, group, offset + 1))
        self.published.extend(envelopes)
        return offsets

    def hold(self) -> None:
        """From now on, acknowledge without folding (the reducer is behind)."""
        if self._held is None:
            self._held = []

    def release(self) -> None:
        """Fold what was held, in order, and fold at once again."""
        held, self._held = self._held or [], None
        for partition, group, applied in held:
            self._fold(partition, group, applied)


MAX_RECORD_BYTES = 1_048_576  # what a broker and aiokafka's producer take in one record by default


class LocalWrites(CompactedLog):
    """A compacted log whose writes are folded at once, as if this process had read them back; a record
    larger than a broker takes by default is refused, as the broker would refuse it."""

    async def write_many(self, records: list[tuple[bytes, bytes | None]]) -> None:
        """Fold the records instead of writing them to the topic."""
        for key, value in records:
            if len(key) + len(value or b"") > MAX_RECORD_BYTES:
                raise PublishFailed(f"a record of {len(key) + len(value or b'')} bytes is too large for the broker")
        for key, value in records:
            self.apply(key, value)


class MemoryNamespaceLog(LocalWrites, NamespaceLog):
    """The namespace registry, without its topic."""


class MemoryIdempotencyLog(LocalWrites, IdempotencyLog):
    """The idempotency keys, without their topic."""


class MemoryWebhookLog(LocalWrites, WebhookLog):
    """The webhook registrations, without their topic."""


class MemoryReplays:
    """Replay jobs that are kept but never run: started, listed, shown and cancelled (implements
    :class:`flux.model.replay.Replays`); one at a time, as the real jobs."""

    def __init__(self) -> None:
        self.jobs: dict[str, ReplayJob] = {}

    def start(self, replay_range: ReplayRange) -> ReplayJob:
        """A new running job (:class:`ReplayBusy` while another runs)."""
        if any(job.status not in FINISHED for job in self.jobs.values()):
            raise ReplayBusy("a replay is already running on this node")
        job = ReplayJob(uuid.uuid4().hex[:16], replay_range)
        self.jobs[job.job_id] = job
        return job

    def get(self, job_id: str) -> ReplayJob | None:
        """A job by id."""
        return self.jobs.get(job_id)

    def all(self) -> list[ReplayJob]:
        """Every job, newest first."""
        return sorted(self.jobs.values(), key=lambda job: job.started, reverse=True)

    async def cancel(self, job_id: str) -> ReplayJob | None:
        """Cancel a running job; a finished one stays as it is."""
        job = self.jobs.get(job_id)
        if job is not None and job.status not in FINISHED:
            job.status = CANCELLED
            job.finished = time.time()
        return job


class MemoryNode:
    """A Flux node in one process: the app on an in-memory table, publisher, registry and keys."""

    def __init__(self, settings: Settings | None = None, fast_path: bool = True) -> None:
        self.settings = settings or node_settings()
        self.metrics = Metrics()
        self.applied = AppliedOffsets()
        self.table = MemoryTable(self.settings, self.metrics)
        self.publisher = MemoryPublisher(self.settings.partitions, self._fold)
        self.namespaces = MemoryNamespaceLog(self.settings)
        self.idempotency = MemoryIdempotencyLog(self.settings)
        self.replays = MemoryReplays()
        self.app: FastAPI = create_app(
            self.settings,
            self.publisher,
            self.table,
            self.metrics,
            self.applied,
            self.namespaces,
            self.table,
            self.idempotency,
            self.replays,
            fast_path=fast_path,
        )
        self.hub: Hub = app_node(self.app).hub
        self.webhooks = MemoryWebhookLog(self.settings)
        self.app.state.webhooks = self.webhooks

    def _fold(self, partition: int, envelopes: list[Envelope], applied: int) -> None:
        """Fold one record, then deliver its change record as the relay does."""
        record = self.table.fold(partition, envelopes, applied)
        self.applied.advance(record.partition, record.applied)
        self.hub.on_record(record)

    def client(self, raise_app_exceptions: bool = True) -> httpx.AsyncClient:
        """An HTTP client of the app, in process (close it, e.g. with ``async with``)."""
        transport = httpx.ASGITransport(app=self.app, raise_app_exceptions=raise_app_exceptions)
        return httpx.AsyncClient(transport=transport, base_url=BASE_URL)
